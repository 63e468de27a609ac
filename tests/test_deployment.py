"""The platform as it is deployed: gunicorn with 4 workers, two orchestrators, a task cluster
and the gateway, all peers on one PostgreSQL and one Redis, driven from outside over HTTP and
TCP. What one process writes, every other reads; turns come once per tick whoever runs them;
money moves once per key. The in-process controls of each guarantee live beside the parts'
own tests (tests/connections, tests/game, tests/jackpot, tests/nightstorm)."""

import itertools
import signal
import socket
import threading
import time
from collections import defaultdict

import pytest

from game.models import Combat
from jackpot import services as jackpot
from tests.game.factories import make_running_combats
from tests.processes import Platform

TICK = 1  # seconds: short, so a few dozen ticks fit in the test

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def platform(tmp_path, redis_client):
    platform = Platform(
        tmp_path,
        NIGHTSTORM_COMBAT_TICK_SECONDS=TICK,
        NIGHTSTORM_COMBAT_MAX_TURNS=10_000,
        NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS=5,
    )
    yield platform
    codes = platform.stop()
    if "web" in codes:
        assert codes["web"] == 0, platform.log("web")[-3000:]


def _player_token(platform, name: str) -> str:
    status, body, _ = platform.request(
        "POST", "/api/v1/auth/register/", {"username": name, "password": "a-long-passw0rd!"}
    )
    assert status == 201, body
    return body["token"]


def _staff_token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    staff = get_user_model().objects.create_user("gm", password="gm-password", is_staff=True)
    return Token.objects.create(user=staff).key


def _every_worker_sees(platform, path: str, expect, *, tries: int = 24) -> None:
    """GET `path` on fresh connections (gunicorn spreads them over its workers); every answer
    must match `expect(status, body)`."""
    for _ in range(tries):
        status, body, _ = platform.request("GET", path, service=True)
        assert expect(status, body), (status, body)


class TurnWatcher:
    """Polls every running combat's turn number from outside the orchestrators, recording
    when each turn first appeared: enough to see a gap (a lost tick) or a double."""

    def __init__(self, combat_ids, interval: float = 0.1):
        self.ids = list(combat_ids)
        self.interval = interval
        self.seen: dict = defaultdict(list)  # combat id -> [(turn, first seen at)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from django.db import connections

        try:
            while not self.stop.is_set():
                now = time.monotonic()
                for pk, turn in Combat.objects.filter(pk__in=self.ids).values_list("pk", "turn"):
                    turns = self.seen[pk]
                    if not turns or turns[-1][0] != turn:
                        turns.append((turn, now))
                self.stop.wait(self.interval)
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def test_the_deployed_platform_agrees_on_one_truth(platform, tmp_path):
    pools = {p.group: p for p in jackpot.ensure_default_pools()}
    combats = make_running_combats(4, seats=3, boss_hp=10**9)
    staff = _staff_token()

    platform.web(workers=4)
    platform.manage("cluster", "qcluster")
    platform.manage("orchestrator-1", "run_orchestrator")
    platform.manage("orchestrator-2", "run_orchestrator")
    gateway_port = _free_port()
    platform.manage("gateway", "run_gateway", "--port", str(gateway_port))
    platform.wait_for_port(gateway_port, "gateway")

    with TurnWatcher([c.pk for c in combats]) as watcher:
        _connections_are_one_store_across_workers(platform, gateway_port)
        _money_moves_once_per_key_and_config_edits_survive_betting(platform, pools, staff)

        # An orchestrator killed mid-run: the other one carries on and a new one joins.
        platform.signal("orchestrator-1", signal.SIGKILL)
        platform.manage("orchestrator-3", "run_orchestrator")
        at_kill = {pk: len(turns) for pk, turns in list(watcher.seen.items())}
        _wait_until(
            lambda: all(
                len(watcher.seen[c.pk]) >= max(17, at_kill.get(c.pk, 0) + 3) for c in combats
            ),
            timeout=120,
            what="every combat's 17th turn, and 3 more after the kill",
        )
    codes = platform.stop()
    assert codes["orchestrator-2"] == 0 and codes["orchestrator-3"] == 0
    assert "run_orchestrator:" in platform.log("orchestrator-2")

    for turns in watcher.seen.values():
        numbers = [n for n, _ in turns]
        # One turn at a time: every step between two observations (0.1 s apart, a tick is
        # 1 s) is +1, so no turn was doubled and none skipped.
        assert all(b - a == 1 for a, b in itertools.pairwise(numbers)), numbers
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(turns)]
        assert len(gaps) >= 15, turns
        # Steady once-a-tick: no stretch over two ticks without a turn, orchestrator killed
        # or not (the observation adds up to one poll interval of error).
        assert max(gaps[1:]) <= 2 * TICK + watcher.interval, gaps


def _wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _connections_are_one_store_across_workers(platform, gateway_port):
    status, conn, _ = platform.request(
        "POST",
        "/api/v1/connections/",
        {"protocol": "telnet", "remote_addr": "10.0.0.7"},
        service=True,
        **{"Idempotency-Key": "register-1"},
    )
    assert status == 201, conn
    handle = conn["handle"]
    path = f"/api/v1/connections/{handle}/"
    _every_worker_sees(platform, path, lambda s, b: s == 200 and b["state"] == "connected")

    _player_token(platform, "aria")
    status, body, _ = platform.request("POST", f"{path}bind/", {"player": "aria"}, service=True)
    assert status == 200, body
    _every_worker_sees(platform, path, lambda s, b: s == 200 and b["player_name"] == "aria")

    status, body, _ = platform.request("PATCH", f"{path}metadata/", {"room": "gate"}, service=True)
    assert status == 200, body
    _every_worker_sees(platform, path, lambda s, b: s == 200 and b["metadata"] == {"room": "gate"})

    # The gateway is a peer too: a client it logs in is online for every web worker.
    _player_token(platform, "borin")
    with socket.create_connection(("127.0.0.1", gateway_port), timeout=10) as client:
        client.sendall(b"connect borin a-long-passw0rd!\n")
        deadline = time.monotonic() + 10
        names = set()
        while time.monotonic() < deadline and "borin" not in names:
            status, page, _ = platform.request("GET", "/api/v1/connections/", service=True)
            names = {c["player_name"] for c in page["results"]}
            time.sleep(0.1)
        assert "borin" in names

    status, _, _ = platform.request("DELETE", path, service=True)
    assert status == 204
    _every_worker_sees(platform, path, lambda s, b: s == 404)
    for _ in range(8):
        status, _, _ = platform.request("PATCH", f"{path}metadata/", {"a": "b"}, service=True)
        assert status == 404


def _money_moves_once_per_key_and_config_edits_survive_betting(platform, pools, staff):
    tokens = [_player_token(platform, f"bettor{n}") for n in range(8)]
    stop = threading.Event()
    placed = []

    def bet(n, token):
        i = 0
        while not stop.is_set():
            i += 1
            status, body, _ = platform.request(
                "POST",
                "/api/v1/jackpots/contributions/",
                {"bet": 100},
                token=token,
                **{"Idempotency-Key": f"bet-{n}-{i}"},
            )
            assert status == 201, body
            placed.append(body["id"])

    bettors = [threading.Thread(target=bet, args=(n, t), daemon=True) for n, t in enumerate(tokens)]
    for thread in bettors:
        thread.start()
    try:
        _wait_until(lambda: len(placed) >= 5, timeout=60, what="the first bets")
        # A game master edits the configuration with the ETag just read, five times, while
        # the bets move the balance: every edit succeeds.
        for rate in (90, 80, 70, 60, 100):
            status, _, headers = platform.request("GET", "/api/v1/jackpots/minor/")
            status, body, _ = platform.request(
                "PATCH",
                "/api/v1/jackpots/minor/",
                {"contribution_rate_bp": rate},
                token=staff,
                **{"If-Match": headers["ETag"]},
            )
            assert status == 200, body
            before = len(placed)  # the next edit comes after more bets moved the balance
            _wait_until(lambda n=before: len(placed) > n, timeout=60, what="more bets")
    finally:
        stop.set()
        for thread in bettors:
            thread.join(30)
    assert len(placed) > 20

    # A contribution retried with its key is one contribution; a win likewise pays once.
    token = tokens[0]
    first = platform.request(
        "POST",
        "/api/v1/jackpots/contributions/",
        {"bet": 500},
        token=token,
        **{"Idempotency-Key": "retried-bet"},
    )
    again = platform.request(
        "POST",
        "/api/v1/jackpots/contributions/",
        {"bet": 500},
        token=token,
        **{"Idempotency-Key": "retried-bet"},
    )
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"

    status, me, _ = platform.request("GET", "/api/v1/players/me/", token=token)
    win = {"player": me["id"]}
    paid = [
        platform.request(
            "POST", "/api/v1/jackpots/major/wins/", win, service=True, **{"Idempotency-Key": "w1"}
        )
        for _ in range(3)
    ]
    assert {p[0] for p in paid} == {201} and len({p[1]["amount"] for p in paid}) == 1
    status, body, _ = platform.request("POST", "/api/v1/jackpots/major/wins/", win, service=True)
    assert (status, body["code"]) == (400, "idempotency_key_required")

    from django.core.management import call_command

    from game.models import GoldEntry

    assert GoldEntry.objects.filter(kind="jackpot_win").count() == 1
    call_command("jackpot_audit")
    call_command("gold_audit")
