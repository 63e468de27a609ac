"""django-redis's Sentinel client, the lock backend and the connection store through a failover
of a local primary/replica watched by three Sentinels (`REDIS_URL=redis://<service>/0`,
`REDIS_SENTINELS=host:port,...`)."""

import signal
import threading
import time

import pytest
import redis
from django.db import transaction
from django_redis import get_redis_connection
from django_redis.pool import ConnectionFactory

from connections.state import StoreUnavailable
from connections.store import RedisConnectionStore, keys
from nightstorm import locks
from nightstorm.errors import LockLost, LockUnavailable, StaleFencingToken
from nightstorm.settings import redis_cache

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def on_sentinels(sentinel_set, settings, monkeypatch):
    """The platform's Redis settings pointed at the Sentinels, as the environment would."""
    monkeypatch.setattr(ConnectionFactory, "_pools", {})  # process-global, keyed by URL
    monkeypatch.setattr(locks, "_backends", {})
    settings.CACHES = {"default": redis_cache(sentinel_set.url, sentinel_set.addresses)}
    return sentinel_set


def layout_is_whole(client: redis.Redis) -> list[str]:
    """Every half-applied write the store could leave: a listed handle without its hash, a hash
    missing from the handle set, a player index that disagrees with the binding."""
    problems = []
    handles = {int(h) for h in client.smembers(keys.HANDLES_KEY)}
    for handle in handles:
        if not client.hexists(keys.conn_key(handle), "state"):
            problems.append(f"handle {handle} listed without its connection")
    for key in client.scan_iter(match=keys.conn_key("*")):
        name = key.decode()
        if name.endswith(keys.META_SUFFIX) or not name.removeprefix(keys.PREFIX).isdigit():
            continue
        handle = int(name.removeprefix(keys.PREFIX))
        if handle not in handles:
            problems.append(f"connection {handle} missing from the handle set")
        player = client.hget(name, "player")
        if player and str(handle).encode() not in client.smembers(keys.player_key(player.decode())):
            problems.append(f"connection {handle} bound but not indexed")
    return problems


def test_the_store_and_the_lock_follow_a_failover_and_no_write_lands_half(on_sentinels):
    """While the Sentinels notice the crash and promote the replica, every registration, bind
    and lock either succeeds or is refused cleanly (StoreUnavailable, LockUnavailable); then
    the same clients carry on against the new primary, whose layout has no half-made write."""
    client = get_redis_connection("default")
    assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
    store = RedisConnectionStore(client)
    outcomes, unclean, stop = [], [], threading.Event()

    def connect_and_bind():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                conn, _ = store.create(protocol="telnet", remote_addr="10.0.0.1", now=time.time())
                store.bind(conn.handle, player_id=f"p{i}", player_name=f"P{i}", state="logged_in")
                outcomes.append(("store", time.monotonic(), True))
            except StoreUnavailable:
                outcomes.append(("store", time.monotonic(), False))
            except Exception as exc:  # anything but a clean refusal fails the test
                unclean.append(exc)

    def lock_and_release():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                # A lease whose release the crash refused lives on in the replica until its
                # ttl: a short one, so none is left by the time the late writes are judged.
                with locks.distributed_lock(f"failover:{i % 5}", ttl=1, wait=0.5):
                    pass
                outcomes.append(("lock", time.monotonic(), True))
            except LockUnavailable:
                outcomes.append(("lock", time.monotonic(), False))
            except Exception as exc:
                unclean.append(exc)

    workers = [threading.Thread(target=fn) for fn in (connect_and_bind, lock_and_release)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        old = on_sentinels.master_port()
        on_sentinels.servers.signal(old, signal.SIGKILL)  # the primary crashes mid-traffic
        new = on_sentinels.wait_for_new_master(old)
        switched = time.monotonic()
        time.sleep(2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)

    assert unclean == []
    for kind in ("store", "lock"):
        late = [ok for k, at, ok in outcomes if k == kind and at > switched + 1.5]
        assert late and all(late), f"{kind} writes did not resume on the new primary"
    # The same client and store write to the new primary now.
    conn, _ = store.create(protocol="telnet", remote_addr="10.0.0.2", now=time.time())
    assert redis.Redis(port=new).hget(keys.conn_key(conn.handle), "state") is not None
    assert layout_is_whole(redis.Redis(port=new)) == []


def test_a_lock_granted_twice_across_a_failover_is_fenced(on_sentinels):
    """The grant reaches the old primary only (its replica is frozen), the primary crashes,
    the replica is promoted without it and grants the lock again: two holders. The fencing
    token of the second is higher, so the first one's late write is refused."""
    key = "payout:minor"
    primary = on_sentinels.master_port()
    (replica,) = on_sentinels.replica_ports()
    on_sentinels.servers.signal(replica, signal.SIGSTOP)
    try:
        stale = locks.acquire(key, ttl=60, wait=0)
    finally:
        on_sentinels.servers.signal(primary, signal.SIGKILL)
        on_sentinels.servers.signal(replica, signal.SIGCONT)
    assert on_sentinels.wait_for_new_master(primary) == replica

    fresh = locks.acquire(key, ttl=60, wait=20)  # granted although `stale` is inside its TTL
    assert fresh.fence > stale.fence
    with transaction.atomic():
        locks.check_fence(key, fresh.fence)
    with pytest.raises(StaleFencingToken), transaction.atomic():
        locks.check_fence(key, stale.fence)
    with pytest.raises(LockLost):
        stale.extend()  # and the stale holder learns it at its next extend
    assert fresh.release() is True
