"""Failed gateway logins are limited per remote address, across connections and gateways."""

import asyncio
import re
import subprocess
import sys

import pytest
from django.conf import settings

from connections.gateway.commands import LoginLimiter
from tests.connections.factories import PASSWORD, make_players
from tests.connections.telnet import ask, open_client, read_to_eof
from tests.connections.test_gateway import run_gateway, subprocess_env  # noqa: F401 (fixture)


async def guess(port: int, attempts: int) -> str:
    """`attempts` wrong passwords on one connection; everything it was told after them."""
    reader, writer = await open_client(port)
    replies = [await ask(reader, writer, "connect hero0 wrong", b"\r\n") for _ in range(attempts)]
    writer.close()
    return "".join(replies)


async def try_the_password(port: int) -> str:
    reader, writer = await open_client(port)
    reply = await ask(reader, writer, f"connect hero0 {PASSWORD}", b"\r\n")
    if reply.startswith("Connected"):
        writer.write(b"quit\r\n")
    return reply + await read_to_eof(reader)  # refused: the gateway says goodbye and closes


def guess_then_log_in(ports: list[int]) -> str:
    """Four connections of two wrong guesses each (under the per-connection limit of three),
    round robin over the gateways, then the right password on a fifth connection."""

    async def scenario():
        for i in range(4):
            await guess(ports[i % len(ports)], 2)
        return await try_the_password(ports[0])

    return asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_an_address_that_failed_too_often_is_refused_even_with_the_right_password(
    run_gateway,  # noqa: F811
    local_service,
):
    make_players(1)
    gateway = run_gateway(local_service)
    gateway.commands.limiter = LoginLimiter(limit=8, window=60)
    answer = guess_then_log_in([gateway.port])
    assert "Too many failed logins from your address" in answer
    assert "Connected as" not in answer


@pytest.mark.django_db(transaction=True)
def test_control_without_the_address_limit_reconnecting_keeps_guessing(
    run_gateway,  # noqa: F811
    local_service,
):
    """The per-connection limit alone: eight wrong guesses, and the login still goes through."""
    make_players(1)
    gateway = run_gateway(local_service)
    gateway.commands.limiter = LoginLimiter(limit=10_000, window=60)
    assert "Connected as Hero0" in guess_then_log_in([gateway.port])


def start_gateway(env: dict) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", "0"],
        cwd=settings.BASE_DIR,
        env=env,
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
def test_two_gateway_processes_share_the_count(redis_client):
    """Guesses spread over two gateway processes add up: the count lives in Redis."""
    make_players(1)
    env = {**subprocess_env(), "CONNECTIONS_LOGIN_FAILURES_PER_ADDRESS": "8"}
    gateways = [start_gateway(env), start_gateway(env)]
    try:
        answer = guess_then_log_in([port for _, port in gateways])
    finally:
        for proc, _ in gateways:
            proc.terminate()
            proc.wait(15)
    assert "Too many failed logins from your address" in answer
    assert "Connected as" not in answer
    assert any(k.startswith(b"ns:") and b"login-failures" in k for k in redis_client.scan_iter())


def test_the_limiter_counts_per_address_in_a_window():
    limiter = LoginLimiter(limit=2, window=60)
    assert not limiter.blocked("10.0.0.1")
    assert limiter.failed("10.0.0.1") == 1
    assert limiter.failed("10.0.0.1") == 2
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")
