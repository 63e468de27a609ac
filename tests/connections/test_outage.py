"""Redis stops and comes back: critical writes refuse clearly, background failures are logged
and counted, and the store recovers on the same port."""

import logging
import shutil
import socket
import subprocess
import time
from unittest.mock import ANY

import pytest
import redis
from prometheus_client import REGISTRY

from connections.health import check_connections
from connections.players import authenticate_player
from connections.service import ConnectionService
from connections.state import StoreUnavailable
from connections.store import HANDLES_KEY, RedisConnectionStore, conn_key, meta_key
from connections.web import SharedConnections, reset_connections

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self):
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
    reset_connections(None)


def failures(kind):
    return (
        REGISTRY.get_sample_value(
            "nightstorm_connections_metadata_update_failures_total", {"kind": kind}
        )
        or 0
    )


def background_failures():
    return (
        REGISTRY.get_sample_value(
            "nightstorm_background_write_failures_total", {"store": "connections"}
        )
        or 0
    )


def test_redis_down_then_back(private_redis, caplog):
    client = redis.Redis(port=private_redis.port, socket_timeout=1, socket_connect_timeout=1)
    service = ConnectionService(store=RedisConnectionStore(client))
    web = SharedConnections(RedisConnectionStore(client))
    reset_connections(web)  # the health check reads the web tier's store
    conn = service.register(protocol="telnet", remote_addr="10.0.0.1")
    service.bind(conn.handle, player_id="p-1", player_name="Ann")
    assert check_connections() == (
        "ok",
        {"mode": "redis", "store_latency_ms": ANY, "connections": 1},
    )

    private_redis.stop()

    # The web tier has no copy to answer from: reads and writes refuse alike.
    for call in (
        lambda: web.lookup(conn.handle),
        lambda: web.online(),
        lambda: web.update_metadata(conn.handle, {"colour": "blue"}),
        lambda: web.register(protocol="telnet", remote_addr="10.0.0.9"),
    ):
        with pytest.raises(StoreUnavailable):
            call()

    # Critical writes refuse with the clear error, and leave the map unchanged.
    with pytest.raises(StoreUnavailable) as refused:
        service.register(protocol="telnet", remote_addr="10.0.0.2")
    assert (refused.value.code, refused.value.status) == ("store_unavailable", 503)
    assert service.handles() == {conn.handle}
    with pytest.raises(StoreUnavailable):
        service.set_state(conn.handle, "connected")
    assert service.get(conn.handle).state == "logged_in"
    state, details = check_connections()
    assert state == "down" and "error" in details

    # Non-critical writes: accepted locally, failed in the background, logged and counted.
    before_signal, before_meta, before_all = (
        failures("last_signal"),
        failures("metadata"),
        background_failures(),
    )
    with caplog.at_level(logging.WARNING, logger="connections.writer"):
        service.touch(conn.handle)
        service.update_metadata(conn.handle, {"colour": "blue"})
        assert service.flush(timeout=10)
    assert service.get(conn.handle).metadata == {"colour": "blue"}
    assert failures("last_signal") == before_signal + 1
    assert failures("metadata") == before_meta + 1
    assert background_failures() == before_all + 2
    assert f"handle={conn.handle} key=colour value='blue'" in caplog.text
    assert f"handle={conn.handle} key=last_signal" in caplog.text
    assert service.stats()["background_failures"] == 2

    # Disconnect: the socket is gone, so the local entry goes; Redis is reported unreachable.
    with pytest.raises(StoreUnavailable):
        service.disconnect(conn.handle)
    assert service.get(conn.handle) is None

    private_redis.start()  # same port, empty (no persistence)

    fresh = service.register(protocol="telnet", remote_addr="10.0.0.3")
    service.bind(fresh.handle, player_id="p-2", player_name="Bob")
    service.update_metadata(fresh.handle, {"colour": "red"})
    assert service.flush(timeout=10)
    assert client.hget(conn_key(fresh.handle), "player_name") == b"Bob"
    assert client.hgetall(meta_key(fresh.handle)) == {b"colour": b"red"}
    assert failures("metadata") == before_meta + 1  # nothing failed after the restart
    assert check_connections()[0] == "ok"
    assert web.lookup(fresh.handle).metadata == {"colour": "red"}
    service.close()


@pytest.mark.django_db(transaction=True)
def test_gateway_keeps_serving_through_an_outage(private_redis, caplog):
    import asyncio

    from connections.gateway import Gateway, GatewayThread
    from tests.connections.factories import make_players
    from tests.connections.telnet import WHO_END, ask, login, read_to_eof

    make_players(2)
    client = redis.Redis(port=private_redis.port, socket_timeout=1, socket_connect_timeout=1)
    service = ConnectionService(store=RedisConnectionStore(client))
    thread = GatewayThread(Gateway(service, port=0, authenticate=authenticate_player)).start()
    port = thread.gateway.port
    before = failures("last_signal")

    async def scenario():
        reader, writer = await login(port, "hero0")
        private_redis.stop()
        who = await ask(reader, writer, "who", WHO_END)  # the hot path needs no Redis
        newcomer, _ = await asyncio.open_connection("127.0.0.1", port)
        refused = await read_to_eof(newcomer)
        await asyncio.get_running_loop().run_in_executor(None, service.flush)
        private_redis.start()
        late_reader, late_writer = await login(port, "hero1")
        who_after = await ask(late_reader, late_writer, "who", WHO_END)
        writer.write(b"quit\r\n")
        late_writer.write(b"quit\r\n")
        await read_to_eof(reader)
        await read_to_eof(late_reader)
        return who, refused, who_after

    with caplog.at_level(logging.WARNING):
        who, refused, who_after = asyncio.run(scenario())
    thread.stop()
    assert "Hero0" in who
    assert "unavailable" in refused
    assert failures("last_signal") > before  # the `who` line's signal could not be written
    assert "Hero0" in who_after and "Hero1" in who_after
    assert client.scard(HANDLES_KEY) == 0  # both quit; the store is clean again
    service.close()
