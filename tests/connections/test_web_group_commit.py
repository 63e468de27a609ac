"""Concurrent web registrations share round trips, and each is in Redis before it returns."""

import multiprocessing
import shutil
import threading

import pytest

from connections import web as web_module
from connections.state import StoreUnavailable
from connections.store import RedisConnectionStore, conn_key
from connections.store.keys import HANDLES_KEY
from connections.web import GroupCommit, SharedConnections, create_call
from nightstorm.errors import IdempotencyKeyReused
from tests.connections.test_outage import PrivateRedis
from tests.helpers import race

pytestmark = pytest.mark.redis


@pytest.fixture
def batches(monkeypatch):
    """The size of every batch sent (a spy on the real send: Redis is not replaced)."""
    sizes = []
    real = GroupCommit._send

    def counting(self, batch):
        sizes.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(GroupCommit, "_send", counting)
    return sizes


def test_concurrent_registrations_share_round_trips_each_stored_before_it_returns(
    redis_client, batches
):
    shared = SharedConnections(RedisConnectionStore(redis_client))

    def register_many(n):
        handles = []
        for _ in range(n):
            conn = shared.register(protocol="telnet", remote_addr="10.0.0.1")
            # Written before the call returned: a plain read on another client sees it.
            assert redis_client.hget(conn_key(conn.handle), "state") == b"connected"
            assert conn.state == "connected" and conn.remote_addr == "10.0.0.1"
            handles.append(conn.handle)
        return handles

    outcomes = race(register_many, [(50,)] * 32)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    handles = [h for hs in outcomes for h in hs]
    assert len(handles) == len(set(handles)) == 1600
    assert redis_client.scard(HANDLES_KEY) == 1600
    assert sum(batches) == 1600
    assert max(batches) > 1, "concurrent calls shared a round trip"
    assert max(batches) <= web_module.MAX_BATCH


def test_idempotent_registrations_racing_in_one_batch_get_one_handle(redis_client, batches):
    shared = SharedConnections(RedisConnectionStore(redis_client))

    def register(digest):
        return shared.register(
            protocol="telnet", remote_addr="10.0.0.1", idempotency=("token-1", digest)
        )

    outcomes = race(register, [("a",)] * 12 + [("b",)] * 4)
    handles = {o.handle for o in outcomes if not isinstance(o, Exception)}
    refused = [o for o in outcomes if isinstance(o, Exception)]
    # Whichever digest came first holds the key; every other request with it is refused.
    assert len(handles) == 1
    assert all(isinstance(o, IdempotencyKeyReused) for o in refused)
    assert len(refused) in (4, 12)
    assert redis_client.scard(HANDLES_KEY) == 1


def test_redis_down_fails_every_caller_of_the_batch_and_the_next_ones(redis_client):
    import redis

    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    shared = SharedConnections(RedisConnectionStore(dead))
    outcomes = race(lambda: shared.register(protocol="telnet", remote_addr="10.0.0.1"), [()] * 8)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    with pytest.raises(StoreUnavailable):  # nothing left waiting or holding the queue
        shared.register(protocol="telnet", remote_addr="10.0.0.1")


def _register_in_child(shared, n, out):
    handles = []
    lock = threading.Lock()

    def work():
        for _ in range(n):
            handle = shared.register(protocol="telnet", remote_addr="10.0.0.9").handle
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(handles)


def test_forked_processes_each_send_their_own_batches(redis_client):
    """A web worker forks after its parent registered: the child gets a queue of its own
    (inheriting one a parent thread held would hang) and handles stay unique across them."""
    shared = SharedConnections(RedisConnectionStore(redis_client))
    first = shared.register(protocol="telnet", remote_addr="10.0.0.1").handle
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    children = [ctx.Process(target=_register_in_child, args=(shared, 25, out)) for _ in range(3)]
    for child in children:
        child.start()
    handles = [h for _ in children for h in out.get(timeout=60)]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert len(handles) == len(set(handles)) == 600
    assert first not in handles
    assert redis_client.scard(HANDLES_KEY) == 601


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_batch_after_redis_lost_its_scripts_is_sent_again_and_lands_once():
    """SCRIPT FLUSH on a private server (never on the shared one): the pipelined EVALSHAs are
    refused with NOSCRIPT, ran nothing, and are sent again after loading the script."""
    import redis

    server = PrivateRedis()
    server.start()
    try:
        client = redis.Redis(port=server.port)
        store = RedisConnectionStore(client)
        shared = SharedConnections(store)
        shared.register(protocol="telnet", remote_addr="10.0.0.1")
        client.script_flush()
        batch = [create_call("telnet", f"10.0.0.{i}", 100.0, None) for i in range(3)]
        GroupCommit(store)._send(batch)
        assert [item.error for item in batch] == [None] * 3
        assert len({item.reply[0] for item in batch}) == 3
        assert client.scard(HANDLES_KEY) == 4
        # And under load after another flush: every caller answered, each once.
        client.script_flush()
        outcomes = race(
            lambda: [
                shared.register(protocol="telnet", remote_addr="10.0.0.2").handle for _ in range(20)
            ],
            [()] * 16,
        )
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        assert len({h for hs in outcomes for h in hs}) == 320
        assert client.scard(HANDLES_KEY) == 324
    finally:
        server.stop()
