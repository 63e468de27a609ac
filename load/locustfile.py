"""The mixed workload of `make load`, for locust (headless; `python -m load` runs it per stage).

Users, by weight:

- `Player` (most): a load player with its token. Reads itself, the zones and the pools; joins
  the open combats of its own zone (everyone goes for the same first combat with a free seat
  in the list it just read, so each Nightstorm is a registration storm: a few seats, many
  contenders, most answered 409 `combat_full`); travels to another load zone (away from the
  storms for the journey); bets with an Idempotency-Key, and deliberately replays keys: the
  same request again (must be replayed, same contribution), the same key with another body
  (must be 422 `idempotency_key_reused`), or the same new key sent twice at once (one applies,
  the other is replayed or 409 `idempotency_in_progress`; never two contributions).
- `Newcomer`: signs up (`POST /auth/register/`) and reads itself with the new token.
- `GameServer` (one): awards jackpot wins with the service token and a key, replaying some keys.
- `GatewayClient`: connection churn through the TCP gateway (the telnet-style protocol of
  `connections/gateway`): connect and read the banner, log in, `who`, `quit`, close; each step
  is reported to locust as a `TCP` request.

An answer the platform documents for the situation (a 409 of a storm, a refused travel) is a
success; anything else (a 5xx, an undocumented status, a replay that is not one, a socket
error) is a failure. Everything the runner needs beyond locust's own statistics is written to
`LOAD_SUMMARY` when locust quits: per-endpoint figures of the measured window (from the end of
spawning, `--reset-stats`), statuses and refusal codes, and the idempotency keys that were
answered 201, so the runner can check each was applied exactly once.

Reads its plan (URLs, tokens, zones) from the JSON file named by `LOAD_PLAN`. It imports
nothing of the platform: locust runs it in its own gevent process.
"""

import itertools
import json
import os
import random
import socket
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import gevent
from locust import FastHttpUser, User, between, events, task
from locust.stats import StatsEntry

PLAN = json.loads(Path(os.environ["LOAD_PLAN"]).read_text())
SUMMARY = os.environ.get("LOAD_SUMMARY")
PLAYERS = PLAN["players"]  # [token, user id, player id, username]
ZONES = PLAN["zones"]
PASSWORD = PLAN["password"]
SERVICE_AUTH = {"Authorization": f"Bearer {PLAN['service_token']}"}
GROUPS, GROUP_WEIGHTS = ("minor", "major", "mega"), (85, 14, 1)

# Refusals that are the right answer in a storm or on a journey: success, counted by code.
REGISTRATION_REFUSALS = {
    "combat_full",
    "already_registered",
    "registration_closed",
    "in_other_combat",
    "traveling",
    "not_in_combat_zone",
}
TRAVEL_REFUSALS = {"already_traveling", "already_there", "in_combat"}

_next_player = itertools.count(random.randrange(len(PLAYERS)))


def take_player() -> list:
    return PLAYERS[next(_next_player) % len(PLAYERS)]


class Tally:
    """What locust's statistics do not keep: statuses and refusal codes per endpoint, keys."""

    def __init__(self):
        # Every key answered 201 in the whole stage (spawning included): each must have been
        # applied exactly once.
        self.contribution_keys: list[tuple[int, str]] = []  # (user id, key)
        self.win_keys: list[str] = []
        self.reset()

    def reset(self):
        """Start the measured window (statuses and outcomes count from here)."""
        self.cpu_warning = False  # locust itself above 90 % of a core: the figures are its own
        self.started = time.time()
        self.stopped = None
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.outcomes: dict[str, Counter] = defaultdict(Counter)


TALLY = Tally()


@events.spawning_complete.add_listener
def _measure_from_here(user_count, **kwargs):
    TALLY.reset()  # locust resets its own statistics here too (--reset-stats)


@events.test_stop.add_listener
def _stopped(environment, **kwargs):
    TALLY.stopped = time.time()


@events.cpu_warning.add_listener
def _generator_saturated(environment, cpu_usage, **kwargs):
    TALLY.cpu_warning = True


@events.request.add_listener
def _count_status(request_type, name, response=None, exception=None, **kwargs):
    status = getattr(response, "status_code", None) if request_type != "TCP" else None
    if status is not None:
        TALLY.statuses[name][str(status)] += 1
    elif exception is not None:
        TALLY.statuses[name]["error"] += 1


def _code(response) -> str | None:
    try:
        body = response.json()
    except Exception:
        return None
    return body.get("code") if isinstance(body, dict) else None


def expect(response, name: str, statuses=(200,), refusals=frozenset()) -> bool:
    """Mark a `catch_response` response; True when it is the expected success status."""
    status = response.status_code
    if status in statuses:
        TALLY.outcomes[name][str(status)] += 1
        response.success()
        return True
    code = _code(response)
    if 400 <= status < 500 and code in refusals:
        TALLY.outcomes[name][code] += 1
        response.success()
        return False
    TALLY.outcomes[name][f"{status} {code or ''}".strip()] += 1
    response.failure(f"unexpected {status} {code or (response.text or '')[:80]}")
    return False


def _epoch(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0


# --- players over HTTP ------------------------------------------------------------------------


ME = "GET /players/me/"
ME_URL = "/api/v1/players/me/"
CONTRIBUTE = "POST /jackpots/contributions/"


class Player(FastHttpUser):
    weight = 16
    wait_time = between(0.5, 1.5)

    def on_start(self):
        token, self.user_id, self.player_id, self.username = take_player()
        self.auth = {"Authorization": f"Token {token}"}
        self.zone, self.arrives_at = None, 0.0
        self.combat, self.idle_until = None, 0.0  # the combat this user sits in; back-off
        self.refresh()

    def refresh(self):
        with self.client.get(ME_URL, headers=self.auth, name=ME, catch_response=True) as r:
            if expect(r, ME):
                data = r.json()
                self.zone = data["zone"]
                self.arrives_at = _epoch((data["travel"] or {}).get("arrives_at"))

    @task(3)
    def me(self):
        self.refresh()

    @task(1)
    def zones(self):
        name = "GET /zones/"
        with self.client.get("/api/v1/zones/", name=name, catch_response=True) as r:
            expect(r, name)

    @task(1)
    def jackpots(self):
        name = "GET /jackpots/"
        with self.client.get("/api/v1/jackpots/", name=name, catch_response=True) as r:
            expect(r, name)

    @task(6)
    def storm(self):
        """Seated: follow the combat until it ends. Otherwise read the Nightstorms, then go for
        an open combat of this zone with everyone else."""
        if self.combat is not None:
            self.follow_combat()
            return
        if self.zone is None or self.arrives_at > time.time() or self.idle_until > time.time():
            self.refresh()
            return
        name = "GET /nightstorms/"
        with self.client.get(
            "/api/v1/nightstorms/", headers=self.auth, name=name, catch_response=True
        ) as r:
            if not expect(r, name):
                return
            events_ = r.json()["results"]
        combats = [
            c
            for e in events_
            if e["zone"] == self.zone and e["state"] == "open"
            for c in e["combats"]
            if c["status"] == "open"
        ]
        if not combats:
            return
        free = [c for c in combats if c["participant_count"] < c["capacity"]]
        target = (free or combats)[0]
        name = "POST /combats/[id]/registrations/"
        with self.client.post(
            f"/api/v1/combats/{target['id']}/registrations/",
            headers=self.auth,
            name=name,
            catch_response=True,
        ) as r:
            if expect(r, name, (201,), REGISTRATION_REFUSALS):
                self.combat = target["id"]
                return
            code = _code(r)
        if code == "not_in_combat_zone":
            self.zone = None  # stale: read it again next time
        elif code in ("in_other_combat", "already_registered"):
            self.idle_until = time.time() + 10  # seated before this user started

    def follow_combat(self):
        name = "GET /combats/[id]/"
        with self.client.get(
            f"/api/v1/combats/{self.combat}/", headers=self.auth, name=name, catch_response=True
        ) as r:
            if expect(r, name) and r.json()["status"] in ("finished", "cancelled"):
                self.combat = None

    @task(1)
    def travel(self):
        if self.zone is None or self.arrives_at > time.time():
            self.refresh()
            return
        destination = random.choice([z for z in ZONES if z != self.zone])
        name = "POST /players/me/travel/"
        with self.client.post(
            "/api/v1/players/me/travel/",
            json={"zone": destination},
            headers=self.auth,
            name=name,
            catch_response=True,
        ) as r:
            if expect(r, name, (202,), TRAVEL_REFUSALS):
                self.zone, self.arrives_at = destination, _epoch(r.json()["arrives_at"])

    def _bet(self, key: str, bet: int, name: str):
        return self.client.post(
            "/api/v1/jackpots/contributions/",
            json={"bet": bet},
            headers={**self.auth, "Idempotency-Key": key},
            name=name,
            catch_response=True,
        )

    @task(5)
    def contribute(self):
        key, bet = f"load-{uuid.uuid4().hex}", random.choice((10, 50, 100, 500))
        roll = random.random()
        if roll < 0.1:
            self._concurrent_pair(key, bet)
            return
        with self._bet(key, bet, CONTRIBUTE) as r:
            if not expect(r, CONTRIBUTE, (201,)):
                return
            first = r.json()["id"]
            TALLY.contribution_keys.append((self.user_id, key))
        if roll < 0.35:
            name = f"{CONTRIBUTE} (replay)"
            with self._bet(key, bet, name) as r:
                if expect(r, name, (201,)):
                    replayed = r.headers.get("Idempotent-Replayed") == "true"
                    if not replayed or r.json()["id"] != first:
                        r.failure(f"not a replay: header {replayed}, id {r.json()['id']}/{first}")
        elif roll < 0.42:
            name = f"{CONTRIBUTE} (key reused)"
            with self._bet(key, bet + 1, name) as r:
                if r.status_code == 422 and _code(r) == "idempotency_key_reused":
                    TALLY.outcomes[name]["idempotency_key_reused"] += 1
                    r.success()
                else:
                    expect(r, name, ())

    def _concurrent_pair(self, key: str, bet: int):
        """The same new key twice at once: one applies, the other is replayed or in progress."""
        name = f"{CONTRIBUTE} (same key twice at once)"
        applied = []

        def one():
            with self._bet(key, bet, name) as r:
                if expect(r, name, (201,), {"idempotency_in_progress"}):
                    applied.append(r.headers.get("Idempotent-Replayed") != "true")

        gevent.joinall([gevent.spawn(one), gevent.spawn(one)])
        if applied:
            TALLY.contribution_keys.append((self.user_id, key))
        if applied.count(True) > 1:
            events.request.fire(
                request_type="POST",
                name=name,
                response_time=0,
                response_length=0,
                exception=AssertionError("the same key was applied twice"),
            )


class Newcomer(FastHttpUser):
    weight = 2
    wait_time = between(2.0, 6.0)

    @task
    def sign_up(self):
        name = "POST /auth/register/"
        username = f"ldnew{uuid.uuid4().hex[:12]}"
        with self.client.post(
            "/api/v1/auth/register/",
            json={"username": username, "password": "storm-newcomer-pass-4821"},
            name=name,
            catch_response=True,
        ) as r:
            if not expect(r, name, (201,)):
                return
            token = r.json()["token"]
        with self.client.get(
            ME_URL, headers={"Authorization": f"Token {token}"}, name=ME, catch_response=True
        ) as r:
            expect(r, ME)


class GameServer(FastHttpUser):
    fixed_count = 1
    wait_time = between(1.0, 2.0)

    @task
    def award(self):
        group = random.choices(GROUPS, GROUP_WEIGHTS)[0]
        player = take_player()[2]
        key = f"load-win-{uuid.uuid4().hex}"
        headers = {**SERVICE_AUTH, "Idempotency-Key": key}
        name = "POST /jackpots/[group]/wins/"
        with self.client.post(
            f"/api/v1/jackpots/{group}/wins/",
            json={"player": player},
            headers=headers,
            name=name,
            catch_response=True,
        ) as r:
            if not expect(r, name, (201,)):
                return
            amount = r.json()["amount"]
            TALLY.win_keys.append(key)
        if random.random() < 0.5:
            name = f"{name} (replay)"
            with self.client.post(
                f"/api/v1/jackpots/{group}/wins/",
                json={"player": player},
                headers=headers,
                name=name,
                catch_response=True,
            ) as r:
                if expect(r, name, (201,)):
                    replayed = r.headers.get("Idempotent-Replayed") == "true"
                    if not replayed or r.json()["amount"] != amount:
                        r.failure(f"not a replay: header {replayed}, amount {r.json()['amount']}")


# --- connection churn through the gateway -----------------------------------------------------


BANNER_END = b'"quit" to leave.\r\n'
WHO_END = b"players logged in.\r\n"


class Line:
    """A blocking socket (cooperative under locust's gevent) read up to markers."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}: {self.buffer[-200:]!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        self.sock.close()


class _StepFailed(Exception):
    pass


class GatewayClient(User):
    weight = 2
    wait_time = between(0.5, 1.5)

    def _step(self, name: str, work):
        """Run one step, timed and reported as a `TCP` request; a failed step ends the cycle."""
        started = time.perf_counter()
        try:
            result = work()
        except Exception as exc:
            self._report(name, started, 0, exc)
            raise _StepFailed() from exc
        self._report(name, started, len(result) if isinstance(result, bytes) else 0, None)
        return result

    @staticmethod
    def _report(name, started, length, exc):
        events.request.fire(
            request_type="TCP",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
        )

    @task
    def churn(self):
        host, port = PLAN["gateway"]
        username = take_player()[3]
        conn = None
        try:
            conn = self._step("gateway connect", lambda: Line(host, port))
            self._step("gateway banner", lambda: conn.until(BANNER_END))

            def login():
                conn.send(f"connect {username} {PASSWORD}")
                reply = conn.until(b"\r\n")
                if not reply.startswith(b"Connected as"):
                    raise AssertionError(f"login refused: {reply[:120]!r}")
                return reply

            self._step("gateway login", login)
            self._step("gateway who", lambda: (conn.send("who"), conn.until(WHO_END))[1])
            self._step("gateway quit", lambda: (conn.send("quit"), conn.until(b"Goodbye.\r\n"))[1])
        except _StepFailed:
            pass  # reported as that step's failure
        finally:
            if conn is not None:
                conn.close()


# --- the summary the runner reads ---------------------------------------------------------------


def _entry(e: StatsEntry, seconds: float) -> dict:
    return {
        "name": e.name,
        "method": e.method,
        "requests": e.num_requests,
        "failures": e.num_failures,
        "rps": e.num_requests / seconds if seconds > 0 else 0.0,
        "p50": e.get_response_time_percentile(0.5) if e.num_requests else 0,
        "p95": e.get_response_time_percentile(0.95) if e.num_requests else 0,
        "p99": e.get_response_time_percentile(0.99) if e.num_requests else 0,
        "max": e.max_response_time if e.num_requests else 0,
    }


@events.quitting.add_listener
def _write_summary(environment, **kwargs):
    if not SUMMARY:
        return
    stats = environment.stats
    seconds = (TALLY.stopped or time.time()) - TALLY.started
    http = StatsEntry(stats, "HTTP", "")
    for e in stats.entries.values():
        if e.method != "TCP":
            http.extend(e)
    errors = [
        {"name": err.name, "method": err.method, "error": str(err.error), "count": err.occurrences}
        for err in stats.errors.values()
    ]
    summary = {
        "seconds": seconds,
        "total": _entry(stats.total, seconds),
        "http": _entry(http, seconds),
        "endpoints": [_entry(e, seconds) for e in stats.entries.values()],
        "statuses": {k: dict(v) for k, v in TALLY.statuses.items()},
        "outcomes": {k: dict(v) for k, v in TALLY.outcomes.items()},
        "errors": errors,
        "locust_cpu_warning": TALLY.cpu_warning,
        "contribution_keys": TALLY.contribution_keys,
        "win_keys": TALLY.win_keys,
    }
    Path(SUMMARY).write_text(json.dumps(summary))
