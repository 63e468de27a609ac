"""The connection store's tests (`tests/connections/test_store.py`) on a three-master Redis
Cluster: every script and MULTI names keys of the `{conn}` slot only."""

import time

import pytest

from connections.store import RedisConnectionStore, delete_all, keys
from tests.connections.test_store import *  # noqa: F403 (the same tests, on the cluster)

pytestmark = [pytest.mark.scaleout, pytest.mark.redis]


@pytest.fixture
def redis_client(redis_cluster):
    redis_cluster.flushdb(target_nodes="primaries")
    return redis_cluster


def test_every_store_key_is_in_one_slot(redis_cluster):
    names = [
        keys.HANDLES_KEY,
        keys.SEQ_KEY,
        keys.LAYOUT_KEY,
        keys.conn_key(7),
        keys.meta_key(7),
        keys.player_key("p"),
        keys.idem_key("t"),
        keys.absent_legacy_key(7),
    ]
    assert len({redis_cluster.keyslot(name) for name in names}) == 1


def test_the_web_tiers_calls_work_on_the_cluster(redis_client):
    store = RedisConnectionStore(redis_client)
    conn, created = store.create(
        protocol="telnet", remote_addr="10.0.0.1", now=time.time(), idempotency=("tok", "d1")
    )
    again, created_again = store.create(
        protocol="telnet", remote_addr="10.0.0.1", now=time.time(), idempotency=("tok", "d1")
    )
    assert created and not created_again and again.handle == conn.handle
    assert store.bind(conn.handle, player_id="p1", player_name="P1", state="logged_in") == 1
    assert store.bind(conn.handle, player_id="p2", player_name="P2", state="logged_in") == -1
    updated = store.update_metadata(conn.handle, {"zone": "BRI1"}, limit=4)
    assert updated.metadata == {"zone": "BRI1"} and updated.player_id == "p1"
    assert store.set_state(conn.handle, "logged_in")
    assert store.write_now(conn.handle, fields={"last_signal": "1.0"})
    assert store.handles_of("p1") == {conn.handle}
    found, strays = store.load_all()
    assert [c.handle for c in found] == [conn.handle] and strays == []
    assert store.remove_many([conn.handle]) == {conn.handle: 1}
    assert store.count() == 0
    delete_all(redis_client, [conn.handle])
