"""The gateway on real sockets: many clients, hostile clients, shutdown, restart from Redis."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection
from prometheus_client import REGISTRY

from connections.gateway import Gateway, GatewayThread
from connections.players import authenticate_player
from connections.service import ConnectionService
from connections.store import HANDLES_KEY
from tests.connections.factories import PASSWORD, make_players
from tests.connections.telnet import (
    WHO_END,
    ask,
    login,
    open_client,
    read_to_eof,
    read_until,
)


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("nightstorm_gateway_dropped_total", {"reason": reason}) or 0


@pytest.fixture
def run_gateway():
    started = []

    def start(service, **options):
        gateway = Gateway(service, port=0, authenticate=authenticate_player, **options)
        thread = GatewayThread(gateway).start()
        started.append(thread)
        return thread.gateway

    yield start
    for thread in started:
        thread.stop()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_200_clients_log_in_at_once_and_survive_a_game_server_restart(
    run_gateway, service, redis_client
):
    players = {p.name: str(p.pk) for p in make_players(200)}
    gateway = run_gateway(service)

    async def scenario():
        clients = await asyncio.gather(*(login(gateway.port, f"hero{i}") for i in range(200)))
        reader, writer = await open_client(gateway.port)
        who = await ask(reader, writer, "who", WHO_END)
        # The game server dies; a new one reconciles from Redis while the clients stay on.
        restarted = ConnectionService.from_settings()
        report = restarted.reconcile()
        bindings = {c.player_name: c.player_id for c in restarted.online() if c.player_id}
        restarted.close()
        for r, w in clients:
            w.write(b"quit\r\n")
            await read_to_eof(r)
        writer.close()
        return who, report, bindings

    who, report, bindings = asyncio.run(scenario())
    assert "200 players logged in." in who
    for name in players:
        assert re.search(rf"^{name}\s+\d+s\s+\d+s\r?$", who, re.MULTILINE), name
    assert report.loaded == 201  # 200 players and the anonymous `who` client
    assert bindings == players
    assert wait_for(lambda: redis_client.scard(HANDLES_KEY) == 0)  # quit = disconnect


def subprocess_env() -> dict:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL}


def start_gateway_process():
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", "0"],
        cwd=settings.BASE_DIR,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        found = re.search(r"gateway listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    raise AssertionError(f"gateway did not start (exit {proc.wait(5)})")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gateway_process_killed_then_sigterm(redis_client):
    """kill -9 leaves the bindings in Redis for the next game server; SIGTERM cleans up."""
    players = {p.name: str(p.pk) for p in make_players(20)}
    proc, port = start_gateway_process()
    try:

        async def log_everyone_in():
            return await asyncio.gather(*(login(port, f"hero{i}") for i in range(20)))

        asyncio.run(log_everyone_in())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    restarted = ConnectionService.from_settings()
    restarted.reconcile()
    assert {c.player_name: c.player_id for c in restarted.online()} == players
    restarted.close()

    proc, port = start_gateway_process()  # reconciles the 20 at start, serves again
    try:

        async def one_client_then_sigterm():
            reader, _writer = await login(port, "hero0")
            proc.send_signal(signal.SIGTERM)
            return await read_to_eof(reader)

        farewell = asyncio.run(one_client_then_sigterm())
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    assert "Server shutting down" in farewell
    assert "stopped" in proc.stdout.read()
    assert redis_client.scard(HANDLES_KEY) == 20  # its own client is gone, the 20 stay


def test_hostile_clients_do_not_hurt_the_others(run_gateway, local_service):
    gateway = run_gateway(local_service, max_line_bytes=64)
    before = dropped("line_too_long")

    async def scenario():
        good_reader, good_writer = await open_client(gateway.port)
        # Binary garbage with a newline is just an unknown command.
        good_writer.write(b"\xff\xfb\x01\x00\x07\x80\x81garbage\r\n")
        assert "Huh?" in await read_until(good_reader, b"\r\n")
        # A line over the limit closes that client only.
        bad_reader, bad_writer = await open_client(gateway.port)
        bad_writer.write(b"A" * 5000)
        farewell = await read_to_eof(bad_reader)
        who = await ask(good_reader, good_writer, "who", WHO_END)
        good_writer.close()
        return farewell, who

    farewell, who = asyncio.run(scenario())
    assert "Line too long" in farewell
    assert "0 players logged in." in who
    assert dropped("line_too_long") == before + 1
    assert wait_for(lambda: len(local_service.handles()) == 0)


def test_client_limit(run_gateway, local_service):
    gateway = run_gateway(local_service, max_clients=3)

    async def scenario():
        clients = [await open_client(gateway.port) for _ in range(3)]
        reader, _ = await asyncio.open_connection("127.0.0.1", gateway.port)
        refused = await read_to_eof(reader)
        await ask(*clients[0], "quit", b"Goodbye.\r\n")
        await asyncio.sleep(0)
        deadline = time.monotonic() + 30
        while gateway.client_count >= 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reader, writer = await open_client(gateway.port)  # room again
        writer.close()
        return refused

    assert "server is full" in asyncio.run(scenario())


def test_idle_client_is_closed(run_gateway, local_service):
    gateway = run_gateway(local_service, idle_timeout=0.3)

    async def scenario():
        reader, _ = await open_client(gateway.port)
        return await read_to_eof(reader, timeout=5)

    assert "idle too long" in asyncio.run(scenario())
    assert wait_for(lambda: not local_service.handles())


def test_client_that_never_reads_is_dropped_while_others_are_served(run_gateway, local_service):
    for i in range(100):  # make `who` answers big
        conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
        local_service.bind(conn.handle, player_id=f"p{i}", player_name=f"Someone{i:03d}")
    gateway = run_gateway(local_service, drain_timeout=0.3)
    before = dropped("slow_reader")

    async def scenario():
        _, flooder = await open_client(gateway.port, rcvbuf=4096)
        flooder.write(b"who\r\n" * 20000)  # ~70 MB of answers it will never read
        reader, writer = await open_client(gateway.port)
        started = time.monotonic()
        who = await ask(reader, writer, "who", WHO_END)
        answered_in = time.monotonic() - started
        deadline = time.monotonic() + 30
        while dropped("slow_reader") <= before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        writer.close()
        flooder.close()
        return who, answered_in

    who, answered_in = asyncio.run(scenario())
    assert "100 players logged in." in who
    assert answered_in < 5
    assert dropped("slow_reader") == before + 1


@pytest.mark.django_db(transaction=True)
def test_login_failures_and_shutdown(local_service):
    make_players(2)
    gateway = Gateway(local_service, port=0, authenticate=authenticate_player)
    thread = GatewayThread(gateway).start()
    port = thread.gateway.port

    async def scenario():
        reader, writer = await open_client(port)
        for _ in range(2):
            reply = await ask(reader, writer, "connect hero0 wrong", b"\r\n")
            assert "different password" in reply
        assert "Usage" in await ask(reader, writer, "connect hero0", b"\r\n")
        await ask(reader, writer, "connect hero0 wrong", b"\r\n")
        closed = await read_to_eof(reader)
        reader, writer = await login(port, "hero1")
        again = await ask(reader, writer, f"connect hero0 {PASSWORD}", b"\r\n")
        assert "already connected as Hero1" in again
        assert "Commands:" in await ask(reader, writer, "HELP", b"\r\n")
        who = await ask(reader, writer, "who", WHO_END)
        await asyncio.get_running_loop().run_in_executor(None, thread.stop)
        return closed, who, await read_to_eof(reader)

    closed, who, farewell = asyncio.run(scenario())
    assert "Too many failed logins" in closed
    assert "Hero1" in who and "1 players logged in." in who
    assert "Server shutting down" in farewell
    assert local_service.handles() == set()


def test_a_flood_of_connections_beyond_the_limit_is_refused(run_gateway, local_service):
    gateway = run_gateway(local_service, max_clients=50)
    before = dropped("full")

    async def attempt():
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        first = await read_until(reader, b"\r\n")
        return reader, writer, first

    async def scenario():
        attempts = await asyncio.gather(*(attempt() for _ in range(400)))
        admitted = [(r, w) for r, w, first in attempts if first.startswith("Welcome")]
        refused = [first for _, _, first in attempts if "full" in first]
        reader, writer = admitted[0]
        await read_until(reader, b'"quit" to leave.\r\n')
        who = await ask(reader, writer, "who", WHO_END)
        for _, w, _ in attempts:
            w.close()
        return len(admitted), len(refused), who

    admitted, refused, who = asyncio.run(scenario())
    assert (admitted, refused) == (50, 350)
    assert "0 players logged in." in who
    assert dropped("full") == before + 350
    assert wait_for(lambda: not local_service.handles())


def test_the_interpreter_uses_the_authenticator_it_is_given(local_service):
    """Authentication is injected: no game, no database, no socket needed to drive it."""
    from connections.gateway.commands import QUIT, Client, CommandInterpreter

    seen = []

    def authenticate(username, password):
        seen.append((username, password))
        return ("p-7", "Seven") if password == "right" else None

    async def run_blocking(fn, *args, **kwargs):
        return fn(*args, **kwargs)

    commands = CommandInterpreter(
        local_service, authenticate=authenticate, run_blocking=run_blocking
    )
    client = Client(handle=local_service.register(protocol="telnet", remote_addr="10.0.0.1").handle)

    async def scenario():
        replies = [await commands.execute(client, "connect seven wrong") for _ in range(2)]
        replies.append(await commands.execute(client, "connect seven right"))
        replies.append(await commands.execute(client, "who"))
        replies.append(await commands.execute(client, "QUIT"))
        return replies

    wrong, _, ok, who, bye = asyncio.run(scenario())
    assert "different password" in wrong.text and wrong.close is None
    assert ok.text == "Connected as Seven." and client.player_name == "Seven"
    assert local_service.get(client.handle).player_id == "p-7"
    assert "Seven" in who.text and "1 players logged in." in who.text
    assert bye.close == QUIT
    assert seen == [("seven", "wrong")] * 2 + [("seven", "right")]


def test_gateway_code_does_not_import_the_game():
    import ast
    from pathlib import Path

    import connections.gateway

    for path in Path(connections.gateway.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "game" or n.startswith("game.") for n in names), path
