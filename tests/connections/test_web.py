"""The web tier holds no connection state: `SharedConnections` reads and writes Redis at once.

The control shows the design it replaces: one `ConnectionService` per web worker, each with
its own map, answers from that map after another worker deleted the connection.
"""

import pytest

from connections.service import ConnectionService
from connections.state import (
    LOGGED_IN,
    AlreadyBound,
    ConnectionNotFound,
    MetadataTooLarge,
    StoreUnavailable,
)
from connections.store import HANDLES_KEY, RedisConnectionStore, conn_key, idem_key, meta_key
from connections.web import SharedConnections, get_connections
from nightstorm.errors import IdempotencyKeyReused

pytestmark = pytest.mark.redis


@pytest.fixture
def workers(redis_client):
    """Two web workers' views of one Redis, the new way."""
    return SharedConnections(RedisConnectionStore(redis_client)), SharedConnections(
        RedisConnectionStore(redis_client)
    )


def test_control_per_worker_maps_answer_a_deleted_connection(redis_client, workers):
    """CONTROL (the old design): two web workers, each with a process-wide ConnectionService."""
    first = ConnectionService(store=RedisConnectionStore(redis_client))
    second = ConnectionService(store=RedisConnectionStore(redis_client))
    mine = second.register(protocol="telnet", remote_addr="10.0.0.1")
    theirs = first.register(protocol="telnet", remote_addr="10.0.0.2")
    for worker in (first, second):
        assert {worker.lookup(h).handle for h in (mine.handle, theirs.handle)} == {
            mine.handle,
            theirs.handle,
        }

    assert first.disconnect(mine.handle) is True  # a DELETE lands on the first worker
    assert not redis_client.exists(conn_key(mine.handle))
    # ...and the second worker still answers 200 from its map: the stale read.
    assert second.lookup(mine.handle).remote_addr == "10.0.0.1"
    second.update_metadata(mine.handle, {"client": "ghost"})  # a PATCH "succeeds" too
    assert second.lookup(mine.handle).metadata == {"client": "ghost"}

    # The shared readers both answer 404, whichever worker the request reaches.
    for web in workers:
        with pytest.raises(ConnectionNotFound):
            web.lookup(mine.handle)
        with pytest.raises(ConnectionNotFound):
            web.update_metadata(mine.handle, {"client": "ghost"})
        assert web.lookup(theirs.handle).handle == theirs.handle
    for worker in (first, second):
        worker.close()
    assert not redis_client.exists(meta_key(mine.handle))  # the ghost write was dropped


def test_every_write_through_one_worker_is_read_by_the_other(workers, redis_client):
    one, other = workers
    conn = one.register(protocol="websocket", remote_addr="10.0.0.3")
    assert other.lookup(conn.handle).protocol == "websocket"
    bound = other.bind(conn.handle, player_id="p-1", player_name="Ann")
    assert (bound.player_name, bound.state) == ("Ann", LOGGED_IN)  # as stored in Redis
    assert one.lookup(conn.handle).player_name == "Ann"
    with pytest.raises(AlreadyBound):
        one.bind(conn.handle, player_id="p-2", player_name="Bob")

    patched = one.update_metadata(conn.handle, {"client": "mudlet", "width": 80})
    assert patched.metadata == {"client": "mudlet", "width": "80"}
    assert other.lookup(conn.handle).metadata == {"client": "mudlet", "width": "80"}
    # Synchronous: in Redis before the call returns, no background writer involved.
    assert redis_client.hget(meta_key(conn.handle), "width") == b"80"
    assert other.update_metadata(conn.handle, {"width": 120}).metadata["width"] == "120"
    assert [c.handle for c in other.online()] == [conn.handle]
    assert one.stats() == {"mode": "redis", "connections": 1}

    assert other.disconnect(conn.handle) is True
    assert one.disconnect(conn.handle) is False
    for web in workers:
        with pytest.raises(ConnectionNotFound):
            web.lookup(conn.handle)
        with pytest.raises(ConnectionNotFound):
            web.bind(conn.handle, player_id="p-1", player_name="Ann")
        assert web.online() == []


def test_metadata_key_limit_is_checked_in_the_same_step_as_the_write(workers, redis_client):
    one, other = workers
    handle = one.register(protocol="telnet", remote_addr="10.0.0.1").handle
    one.update_metadata(handle, {f"k{i}": i for i in range(31)})
    other.update_metadata(handle, {"k0": "changed", "k31": 31})  # one new key: 32, the limit
    with pytest.raises(MetadataTooLarge):
        one.update_metadata(handle, {"k1": "x", "one_more": 1})
    assert redis_client.hlen(meta_key(handle)) == 32
    assert redis_client.hget(meta_key(handle), "k1") == b"1"  # the refused patch wrote nothing


def test_web_handles_never_meet_gateway_blocks(workers, redis_client):
    gateway = ConnectionService(store=RedisConnectionStore(redis_client))
    handles = []
    for _ in range(3):
        handles.append(gateway.register(protocol="telnet", remote_addr="10.0.0.1").handle)
        handles.append(workers[0].register(protocol="telnet", remote_addr="10.0.0.1").handle)
        handles.append(gateway.register(protocol="telnet", remote_addr="10.0.0.1").handle)
    assert len(set(handles)) == 9
    assert redis_client.scard(HANDLES_KEY) == 9
    gateway.close()


def test_idempotent_create_lands_on_one_handle(workers, redis_client, settings):
    settings.NIGHTSTORM_IDEMPOTENCY_TTL_HOURS = 2
    store = workers[0].store
    key = ("token-1", "digest-a")
    first, created = store.create(
        protocol="telnet", remote_addr="10.0.0.1", now=100.0, idempotency=key, ttl_seconds=7200
    )
    assert created
    assert 7000 < redis_client.ttl(idem_key("token-1")) <= 7200
    workers[1].bind(first.handle, player_id="p-1", player_name="Ann")

    # A retry finds the handle and answers with the connection as it is stored now.
    again, created = store.create(
        protocol="telnet", remote_addr="10.0.0.1", now=200.0, idempotency=key, ttl_seconds=7200
    )
    assert not created and (again.handle, again.player_name) == (first.handle, "Ann")
    assert again.connected_at == 100.0

    # Gone in between (pruned, deleted): the retry registers the same handle again.
    workers[1].disconnect(first.handle)
    back = workers[1].register(protocol="telnet", remote_addr="10.0.0.1", idempotency=key)
    assert back.handle == first.handle and back.player_name is None
    assert redis_client.smembers(HANDLES_KEY) == {str(first.handle).encode()}

    # The same key on another request is refused and changes nothing.
    with pytest.raises(IdempotencyKeyReused):
        workers[0].register(
            protocol="telnet", remote_addr="10.9.9.9", idempotency=("token-1", "digest-b")
        )
    other = workers[0].register(protocol="telnet", remote_addr="10.0.0.1", idempotency=("t2", "a"))
    assert other.handle != first.handle
    assert redis_client.scard(HANDLES_KEY) == 2
    # A gateway's service takes the same path and keeps the connection in its map.
    gateway = ConnectionService(store=RedisConnectionStore(redis_client))
    held = gateway.register(protocol="telnet", remote_addr="10.0.0.1", idempotency=("t2", "a"))
    assert held.handle == other.handle and gateway.get(other.handle) is held
    gateway.close()


def test_get_connections_is_the_shared_store_with_redis_and_the_service_without(settings, service):
    assert isinstance(get_connections(), SharedConnections)
    settings.REDIS_URL = ""
    assert get_connections() is service  # embedded: the one in-process copy


def test_a_web_read_with_redis_down_refuses_instead_of_guessing(redis_client):
    import redis

    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    web = SharedConnections(RedisConnectionStore(dead))
    for call in (lambda: web.lookup(1), web.online, lambda: web.disconnect(1)):
        with pytest.raises(StoreUnavailable):
            call()
