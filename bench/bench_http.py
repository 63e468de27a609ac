"""The API over HTTP, as players hit it: gunicorn with the production settings, driven by wrk.

gunicorn runs `nightstorm.wsgi` with the production settings plus the ceiling views
(`bench.http_settings`, `bench.http_urls`): a minimal Django view through the same middleware,
and a DRF view with DRF's token auth (the ratios' reference); the same DRF view with the
platform's token auth (its lookup compiled once) is measured beside it, for information.
wrk (Debian's `wrk`, installed here when missing and running
as root) replays a plan of requests (`bench/wrk/plan.lua`) on WRK_CONNECTIONS keep-alive
connections. Each workload runs SECONDS after a warm-up; its row is req/s beside the DRF
ceiling measured in the same run, and its p99 beside the goal (250 ms reads, 500 ms writes).

Workloads: reads (`players/me`, `zones`, `jackpots`, `nightstorms`), writes (a jackpot
contribution with an Idempotency-Key, a combat registration, a travel start) and a mix of all.
Writes use distinct players and keys, so every request does the work (twenty players try each
10-seat combat, so half of a registration storm is 409 `combat_full`, as in a real storm).
The machine's load drifts, so the DRF ceiling is measured right before each workload run and
once after the last; a run's ratio is to the mean of the two ceilings around it. Every workload
runs REPEATS times, the whole list over before any runs again, so one dip of the machine does not
land on both; its row is its best run (rate, p50/p99 and ratio of that run), the others in the
note.

The benchmark's players (`httpbench…`) and zones (`HB1`, `HB2`) stay between runs: their
contributions are in the append-only jackpot ledger, which refuses deletes; each has a landed
journey, so the journeys table is not empty. Their seats, journeys in flight and Nightstorm
events are removed, their zone reset and the tables vacuumed before each write workload
(autovacuum may be off, and dead rows would slow what runs next).

`BENCH_HTTP_PROFILE=1` also records every workload with py-spy (all gunicorn workers) and
prints where the time went (`bench/http-profile-<workload>.txt`, folded stacks).
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

from django.db import connections
from django.utils import timezone

from bench.common import Row, ensure_players, listed, median, vacuum

ROOT = Path(__file__).resolve().parent.parent
PLAN_SCRIPT = Path(__file__).resolve().parent / "wrk" / "plan.lua"

WORKERS = int(os.environ.get("BENCH_HTTP_WORKERS", "4"))
THREADS = int(os.environ.get("BENCH_HTTP_THREADS", "4"))
WRK_CONNECTIONS = int(os.environ.get("BENCH_HTTP_CONNECTIONS", "16"))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "8"))
REPEATS = int(os.environ.get("BENCH_HTTP_REPEATS", "2"))
WARMUP_SECONDS = 3.0
CEILING_SECONDS = 3.0
PROFILE = os.environ.get("BENCH_HTTP_PROFILE") == "1"

PREFIX = "httpbench"
READERS = 200
REGISTRANTS = 3000
TRAVELLERS = 4000  # more than a travel run starts: each start is a new journey
EVENTS = 50  # x 3 combats x 10 seats: 1,500 seats for 3,000 registrants
BET = 100
READS = ("players/me", "zones", "jackpots", "nightstorms")

READ_GOAL, WRITE_GOAL, MIX_GOAL = 0.6, 0.4, 0.4
READ_P99_MS, WRITE_P99_MS = 250, 500


# --- tools ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when it is missing and we are root."""
    path = shutil.which("wrk")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn on a free port with the benchmark's settings; stopped with SIGTERM."""

    def __init__(self):
        self.port = _free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.http_settings",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            # Throttling stays on (its cache round trip is part of the path measured), at rates
            # a few bench players cannot reach.
            **{
                f"THROTTLE_{scope}": "100000000/min"
                for scope in ("ANON", "AUTH", "USER", "REGISTER")
            },
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "nightstorm.wsgi:application",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(WORKERS),
                "-k",
                "gthread",
                "--threads",
                str(THREADS),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{self.url}/bench/ceiling/django/", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("gunicorn exited at start") from None
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not answer")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_wrk(wrk: str, server: Server, lines: list[str], seconds: float, name: str) -> dict:
    """Replay `lines` against the server for `seconds`; wrk's figures as a dict."""
    with tempfile.NamedTemporaryFile("w", suffix=".plan", delete=False) as plan:
        plan.write("\n".join(lines) + "\n")
    profiler = None
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if PROFILE and py_spy:
        profile_path = ROOT / "bench" / f"http-profile-{name}.txt"
        profiler = subprocess.Popen(
            [
                py_spy,
                "record",
                "-f",
                "raw",
                "-r",
                "200",
                "-d",
                str(int(seconds)),
                "-o",
                str(profile_path),
                "--pid",
                str(server.process.pid),
                "--subprocesses",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        env = {**os.environ, "WRK_PLAN": plan.name, "WRK_THREADS": "1"}
        out = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{WRK_CONNECTIONS}",
                f"-d{int(seconds)}s",
                "--timeout",
                "10s",
                "-s",
                str(PLAN_SCRIPT),
                server.url,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    finally:
        os.unlink(plan.name)
        if profiler is not None:
            profiler.wait(timeout=60)
            print(summarize_profile(profile_path, name), file=sys.stderr)
    found = [x for x in out.stdout.splitlines() if x.startswith("WRK-RESULT ")]
    if out.returncode or not found:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    line = found[0]
    result = json.loads(line.removeprefix("WRK-RESULT "))
    result["rate"] = result["requests"] / result["seconds"]
    result["p50_ms"] = result["p50_us"] / 1000
    result["p99_ms"] = result["p99_us"] / 1000
    return result


def summarize_profile(path: Path, name: str, top: int = 18) -> str:
    """Where the workers' samples went: the share of samples under each of our frames and
    under a few library layers (inclusive), from py-spy's folded stacks."""
    if not path.exists():
        return f"  profile {name}: no samples"
    inclusive, total = Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            func, _, where = frame.partition(" (")
            where = where.split(":")[0]
            key = None
            for layer in ("psycopg", "rest_framework", "django/db", "django/core/handlers"):
                if layer in where:
                    key = f"[{layer}] {func}" if layer != "psycopg" else "[psycopg] (all)"
                    break
            ours = where.rsplit("/", 2)[-2:]  # py-spy shortens paths to sys.path entries
            if key is None and ours[0] in ("game", "jackpot", "nightstorm", "storms", "api"):
                key = f"{func} ({'/'.join(ours)})"
            if key and key not in seen:
                seen.add(key)
                inclusive[key] += n
    lines = [f"  profile {name}: {total} samples; inclusive share of the top frames:"]
    for key, n in inclusive.most_common(top):
        lines.append(f"    {100 * n / max(total, 1):5.1f}%  {key}")
    return "\n".join(lines)


# --- the benchmark's players and world ------------------------------------------------------


class HttpWorld:
    """Persistent players with tokens in zone HB1 (route to HB2), the seeded world and pools."""

    def __init__(self):
        from django.contrib.auth.hashers import make_password

        from game.models import Route, Zone
        from game.world import seed_world
        from jackpot import services as jackpot

        seed_world()
        jackpot.ensure_default_pools()
        self.home, _ = Zone.objects.get_or_create(
            code="HB1", defaults={"name": "HTTP bench home", "region": "HTTP bench"}
        )
        self.away, _ = Zone.objects.get_or_create(
            code="HB2", defaults={"name": "HTTP bench away", "region": "HTTP bench"}
        )
        for a, b in ((self.home, self.away), (self.away, self.home)):
            Route.objects.get_or_create(origin=a, destination=b, defaults={"seconds": 600})
        total = READERS + REGISTRANTS + TRAVELLERS
        names = [f"{PREFIX}{i:05d}" for i in range(total)]
        seeded = ensure_players(names, make_password("http-bench-password"), lambda i: self.home)
        keys = [p.token for p in seeded]
        self.readers = keys[:READERS]
        self.registrants = keys[READERS : READERS + REGISTRANTS]
        self.travellers = keys[READERS + REGISTRANTS :]
        self.player_ids = [p.player_id for p in seeded]
        self._give_history()
        self.combat_ids: list = []
        self.run = uuid.uuid4().hex[:8]

    def _give_history(self):
        """A landed journey for every player that has none, so the journeys table and its
        statistics look like a live game's: analyzed empty, the cached plans would scan the
        whole table for a journey in flight while the travel workload fills it."""
        from game.models import Journey

        landed = timezone.now() - timedelta(days=1)
        have = set(
            Journey.objects.filter(player_id__in=self.player_ids).values_list(
                "player_id", flat=True
            )
        )
        Journey.objects.bulk_create(
            [
                Journey(
                    player_id=pid,
                    origin=self.away,
                    destination=self.home,
                    started_at=landed - timedelta(minutes=10),
                    arrives_at=landed,
                    arrived_at=landed,
                )
                for pid in self.player_ids
                if pid not in have
            ],
            batch_size=5000,
        )

    def reset(self):
        """Free every seat, journey and event of the benchmark; players back in HB1; fresh open
        events (3 combats of 10 seats each)."""
        from game.models import Combat, Journey, NightstormEvent, Player, Registration
        from game.storms import events as nightstorms

        events = NightstormEvent.objects.filter(zone__in=[self.home, self.away])
        Registration.objects.filter(combat__event__in=events).delete()
        Registration.objects.filter(player_id__in=self.player_ids).delete()
        Combat.all_objects.filter(event__in=events).hard_delete()
        events.delete()
        # Journeys in flight are removed; the landed ones stay, as a game's history does.
        Journey.objects.filter(player_id__in=self.player_ids, arrived_at__isnull=True).delete()
        Player.all_objects.filter(pk__in=self.player_ids).update(zone=self.home)
        base = timezone.now().replace(microsecond=0) + timedelta(days=3650)
        self.combat_ids = []
        for i in range(EVENTS):
            event = nightstorms.open_nightstorm(zone=self.home, slot=base + timedelta(minutes=i))
            self.combat_ids += [c.pk for c in event.combats.order_by("index")]
        vacuum()  # the rows just deleted and updated, as autovacuum would (it may be off)

    def cleanup(self):
        from game.models import Combat, Journey, NightstormEvent, Registration

        events = NightstormEvent.objects.filter(zone__in=[self.home, self.away])
        Registration.objects.filter(combat__event__in=events).delete()
        Combat.all_objects.filter(event__in=events).hard_delete()
        events.delete()
        Journey.objects.filter(player_id__in=self.player_ids, arrived_at__isnull=True).delete()


# --- plans ----------------------------------------------------------------------------------


def _line(method, path, token="-", key="-", body="-") -> str:
    return "\t".join((method, path, token or "-", key or "-", body or "-"))


def read_lines(world: HttpWorld, endpoint: str) -> list[str]:
    if endpoint == "zones":
        return [_line("GET", "/api/v1/zones/")]
    if endpoint == "jackpots":
        return [_line("GET", "/api/v1/jackpots/")]
    path = {"players/me": "/api/v1/players/me/", "nightstorms": "/api/v1/nightstorms/"}[endpoint]
    return [_line("GET", path, token) for token in world.readers]


def contribution_lines(world: HttpWorld, n: int, tag: str) -> list[str]:
    body = json.dumps({"bet": BET}, separators=(",", ":"))
    return [
        _line(
            "POST",
            "/api/v1/jackpots/contributions/",
            world.readers[i % len(world.readers)],
            f"{world.run}-{tag}-{i}",
            body,
        )
        for i in range(n)
    ]


def registration_lines(world: HttpWorld) -> list[str]:
    # Player i tries combat i // 20: twenty contenders for each combat's ten seats, arriving
    # together, so half of them are refused (409 combat_full), as in a storm.
    return [
        _line("POST", f"/api/v1/combats/{world.combat_ids[i // 20]}/registrations/", token)
        for i, token in enumerate(world.registrants)
    ]


def travel_lines(world: HttpWorld) -> list[str]:
    body = json.dumps({"zone": world.away.code}, separators=(",", ":"))
    return [_line("POST", "/api/v1/players/me/travel/", t, "-", body) for t in world.travellers]


MIX = (  # share of each kind of request in the mixed workload
    ("players/me", 30),
    ("zones", 8),
    ("jackpots", 15),
    ("nightstorms", 12),
    ("contribution", 20),
    ("registration", 8),
    ("travel", 7),
)


def mix_lines(world: HttpWorld, tag: str, n: int = 6000) -> list[str]:
    rng = random.Random(11)
    pools = {
        kind: read_lines(world, kind) for kind in ("players/me", "zones", "jackpots", "nightstorms")
    }
    pools["contribution"] = contribution_lines(world, n, tag)
    pools["registration"] = registration_lines(world)
    pools["travel"] = travel_lines(world)
    used = Counter()
    kinds, weights = zip(*MIX, strict=True)
    out = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        pool = pools[kind]
        out.append(pool[used[kind] % len(pool)])
        used[kind] += 1
    return out


# --- rows -----------------------------------------------------------------------------------


def _note(result: dict) -> str:
    errors = {k: v for k, v in result["errors"].items() if v}
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items()))
    return (
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; statuses {{{statuses}}}"
        + (f"; socket errors {errors}" if errors else "")
    )


def _mean(a: dict, b: dict) -> dict:
    return {k: (a[k] + b[k]) / 2 for k in ("rate", "p50_ms", "p99_ms")}


def run() -> list[Row]:
    if connections["default"].vendor != "postgresql":
        return []
    wrk = ensure_wrk()
    print("  preparing players and the world ...", file=sys.stderr, flush=True)
    world = HttpWorld()
    world.reset()
    connections.close_all()
    server = Server()
    django_lines = [_line("GET", "/bench/ceiling/django/")]
    drf_lines = [_line("GET", "/bench/ceiling/drf/", t) for t in world.readers]
    platform_lines = [_line("GET", "/bench/ceiling/drf-platform/", t) for t in world.readers]
    # Each plan takes the run's number: writes need fresh idempotency keys every run.
    workloads = [
        *((f"GET {e}", "read", lambda rep, e=e: read_lines(world, e)) for e in READS),
        (
            "POST contribution (with key)",
            "write",
            lambda rep: contribution_lines(world, 20000, f"w{rep}"),
        ),
        ("POST combat registration", "write", lambda rep: registration_lines(world)),
        ("POST travel", "write", lambda rep: travel_lines(world)),
        ("mix", "mix", lambda rep: mix_lines(world, f"mix{rep}")),
    ]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in workloads}
    try:
        warm = django_lines + drf_lines
        for endpoint in READS:
            warm += read_lines(world, endpoint)[:20]
        run_wrk(wrk, server, warm, WARMUP_SECONDS, "warmup")
        django_ceiling = run_wrk(wrk, server, django_lines, SECONDS, "django-ceiling")
        platform_auth = run_wrk(wrk, server, platform_lines, SECONDS, "platform-auth")
        # The machine's load drifts: the DRF ceiling is measured right before each run (and
        # once after the last), and each run is compared with the mean of the two around it.
        ceilings = [run_wrk(wrk, server, drf_lines, CEILING_SECONDS, "drf-ceiling")]
        for rep in range(REPEATS):
            if rep:  # the last pass's writes left dead rows that the reads would scan
                vacuum()
            for name, kind, lines in workloads:
                if kind != "read":
                    world.reset()
                result = run_wrk(wrk, server, lines(rep), SECONDS, name.split()[-1])
                ceilings.append(run_wrk(wrk, server, drf_lines, CEILING_SECONDS, "drf-ceiling"))
                result["drf"] = _mean(ceilings[-2], ceilings[-1])
                result["ratio"] = result["rate"] / result["drf"]["rate"]
                runs[name].append(result)
    finally:
        server.stop()
        try:
            world.cleanup()
        except Exception as exc:  # report the figures even if cleaning up failed
            print(f"  cleanup failed: {exc}", file=sys.stderr)

    drf_all = {
        "rate": sum(c["rate"] for c in ceilings) / len(ceilings),
        "p50_ms": median([c["p50_ms"] for c in ceilings]),
        "p99_ms": median([c["p99_ms"] for c in ceilings]),
    }
    setup = f"gunicorn {WORKERS} workers x {THREADS} threads, wrk {WRK_CONNECTIONS} connections"
    rows = [
        Row(
            "http ceiling: minimal Django view",
            "req/s",
            django_ceiling["rate"],
            None,
            note=f"{setup}; {_note(django_ceiling)}",
        ),
        Row(
            "http ceiling: DRF view with DRF's token auth (vs Django view)",
            "req/s",
            drf_all["rate"],
            django_ceiling["rate"],
            note=(
                f"mean of {len(ceilings)} runs of {CEILING_SECONDS:.0f} s, one around each "
                f"workload run: {listed([c['rate'] for c in ceilings])} req/s; "
                f"median p50 {drf_all['p50_ms']:.1f} ms, p99 {drf_all['p99_ms']:.1f} ms"
            ),
        ),
        Row(
            "http: the DRF view with the platform's token auth (vs DRF's)",
            "req/s",
            platform_auth["rate"],
            drf_all["rate"],
            note=f"the token lookup compiled once (nightstorm.sql.CompiledQuery); "
            f"{_note(platform_auth)}",
        ),
    ]
    for name, kind, _ in workloads:
        best = max(runs[name], key=lambda r: r["ratio"])
        goal = {"read": READ_GOAL, "write": WRITE_GOAL, "mix": MIX_GOAL}[kind]
        p99_goal = READ_P99_MS if kind == "read" else WRITE_P99_MS
        label = "http mix (reads and writes)" if kind == "mix" else f"http {name}"
        every = ", ".join(
            f"{r['rate']:.0f} req/s = {r['ratio']:.2f} (p99 {r['p99_ms']:.0f} ms)"
            for r in runs[name]
        )
        note = (
            f"best of {len(runs[name])} runs: {_note(best)}; DRF ceiling around it "
            f"{best['drf']['rate']:.0f} req/s; every run: {every}"
        )
        rows.append(Row(label, "req/s", best["rate"], best["drf"]["rate"], goal=goal, note=note))
        rows.append(
            Row(
                f"{label}, p99",
                "ms",
                best["p99_ms"],
                best["drf"]["p99_ms"],
                higher_is_better=False,
                goal=p99_goal,
                goal_is_absolute=True,
            )
        )
    return rows
