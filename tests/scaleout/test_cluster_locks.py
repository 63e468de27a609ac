"""The lock contract and the fencing tokens (`tests/nightstorm/test_locks.py`, Redis backend)
on a three-master Redis Cluster: the lock key and its fence key share a slot through the
`{key}` hash tag, and different locks spread over the masters."""

import pytest

from nightstorm import locks
from tests.nightstorm.test_locks import *  # noqa: F403 (the same tests, on the cluster)

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def redis_client(redis_cluster, monkeypatch):
    """The cluster, emptied, and the Redis lock backend on it."""
    redis_cluster.flushdb(target_nodes="primaries")
    monkeypatch.setattr(locks, "_backends", {"redis": locks.RedisBackend(redis_cluster)})
    return redis_cluster


@pytest.fixture
def backend(redis_client):
    return "redis"


def test_a_lock_and_its_fence_share_a_slot_and_locks_spread(redis_cluster):
    lock_key, fence_key = locks.redis_keys("zone:AB12")
    assert redis_cluster.keyslot(lock_key) == redis_cluster.keyslot(fence_key)
    nodes = {
        redis_cluster.get_node_from_key(locks.redis_keys(f"zone:{i}")[0]).port for i in range(30)
    }
    assert len(nodes) == 3
