"""The game's hot paths beside plain SQL doing the same reads and writes.

* combat turns: 1,000 running combats x 10 participants, one orchestrator tick
  (`process_active_combats`) in combats/s, vs the same per-combat transaction in psycopg
  (SELECT … FOR UPDATE SKIP LOCKED, read the seats, UPDATE the seats, UPDATE the combat) on the
  same number of threads. Measured with one combat per transaction and with batches of 25
  (the default), best of three interleaved rounds each.
* travel: 1,000 players starting a journey at once on threads (`start_travel`) vs the same
  transaction in plain SQL (lock timeout, zone, the player's locked state, the INSERT), best of
  three interleaved rounds.
* registration storm over HTTP: gunicorn on 127.0.0.1, 100 contenders for 10-seat combats,
  p50/p99 latency vs the same INSERT in SQL.

All rows created here are deleted at the end.
"""

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils import timezone

from bench.common import Row, median, percentile, raw_pg

COMBATS = 1000
SEATS = 10
TRAVELLERS = 1000
THREADS = 16
HTTP_CONTENDERS = 100
ROUNDS = 3  # the tick and travel rows: interleaved rounds of ours and raw


class World:
    """The benchmark's rows: a zone pair, players, an event with many running combats."""

    def __init__(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password

        from game.models import Combat, NightstormEvent, Player, Registration, Route, Zone

        self.tag = uuid.uuid4().hex[:6]
        self.home = Zone.objects.create(code=f"B{self.tag[:5]}", name="Bench home", region="Bench")
        self.away = Zone.objects.create(code=f"C{self.tag[:5]}", name="Bench away", region="Bench")
        Route.objects.create(origin=self.home, destination=self.away, seconds=60)
        User = get_user_model()
        n = COMBATS * SEATS + TRAVELLERS + HTTP_CONTENDERS
        hashed = make_password("bench-password")
        users = User.objects.bulk_create(
            [User(username=f"bench{self.tag}{i}", password=hashed) for i in range(n)],
            batch_size=5000,
        )
        self.user_ids = [u.pk for u in users]
        players = Player.objects.bulk_create(
            [Player(user=u, name=u.username, zone=self.home) for u in users], batch_size=5000
        )
        self.fighters = players[: COMBATS * SEATS]
        self.travellers = players[COMBATS * SEATS : COMBATS * SEATS + TRAVELLERS]
        self.contenders = players[COMBATS * SEATS + TRAVELLERS :]
        now = timezone.now()
        self.event = NightstormEvent.objects.create(
            zone=self.home, slot=now + timedelta(days=3650), state="running"
        )
        self.combats = Combat.objects.bulk_create(
            [
                Combat(
                    event=self.event,
                    zone=self.home,
                    index=i + 1,
                    status="running",
                    capacity=SEATS,
                    boss_max_hp=10**9,
                    boss_hp=10**9,
                    next_turn_at=now,
                    started_at=now,
                )
                for i in range(COMBATS)
            ],
            batch_size=2000,
        )
        Registration.objects.bulk_create(
            [
                Registration(combat=c, player=self.fighters[i * SEATS + j], hp=10**6)
                for i, c in enumerate(self.combats)
                for j in range(SEATS)
            ],
            batch_size=5000,
        )

    def make_due(self):
        from game.models import Combat

        Combat.objects.filter(event=self.event).update(
            next_turn_at=timezone.now() - timedelta(seconds=1)
        )

    def cleanup(self):
        cleanup_bench_rows()


def cleanup_bench_rows():
    """Delete every row a benchmark run made (also the leftovers of an interrupted run)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from game.models import (
        Combat,
        Journey,
        NightstormEvent,
        Player,
        Registration,
        Reward,
        Route,
        Zone,
    )
    from nightstorm.models import OutboxJob

    zones = list(Zone.objects.filter(region="Bench"))
    events = NightstormEvent.objects.filter(zone__in=zones)
    jobs = list(Reward.objects.filter(combat__event__in=events).values_list("job_id", flat=True))
    Reward.objects.filter(combat__event__in=events).delete()
    OutboxJob.objects.filter(pk__in=[j for j in jobs if j]).delete()
    Registration.objects.filter(combat__event__in=events).delete()
    Combat.all_objects.filter(event__in=events).hard_delete()
    events.delete()
    user_ids = list(
        get_user_model().objects.filter(username__startswith="bench").values_list("pk", flat=True)
    )
    players = Player.all_objects.filter(user_id__in=user_ids)
    Registration.objects.filter(player__in=players).delete()
    Journey.objects.filter(player__in=players).delete()
    players.hard_delete()
    Token.objects.filter(user_id__in=user_ids).delete()
    get_user_model().objects.filter(pk__in=user_ids).delete()
    Route.objects.filter(origin__in=zones).delete()
    Zone.objects.filter(pk__in=[z.pk for z in zones]).delete()


# --- combat turns ---------------------------------------------------------------------------


def _raw_turns(world: World, parallelism: int, batch: int) -> float:
    """The same reads and writes as a tick, in plain SQL: claim, read seats, update seats,
    update combats, per transaction of `batch` combats."""
    ids = [c.pk for c in world.combats]
    chunks = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    work = list(reversed(chunks))
    lock = threading.Lock()

    def worker():
        conn = raw_pg(autocommit=False)
        rng = random.Random()
        try:
            while True:
                with lock:
                    if not work:
                        return
                    chunk = work.pop()
                with conn.transaction():
                    now = timezone.now()
                    claimed = conn.execute(
                        "SELECT id, turn, boss_hp, version FROM game_combat WHERE id = ANY(%s) "
                        "AND status = 'running' AND next_turn_at <= %s "
                        "FOR UPDATE SKIP LOCKED",
                        [chunk, now],
                    ).fetchall()
                    got = [row[0] for row in claimed]
                    seats = conn.execute(
                        "SELECT r.id, r.hp, r.damage_dealt, p.level FROM game_registration r "
                        "JOIN game_player p ON p.id = r.player_id WHERE r.combat_id = ANY(%s)",
                        [got],
                    ).fetchall()
                    values = [
                        (sid, max(0, hp - rng.randint(0, 3)), dmg + 10 + 2 * lvl)
                        for sid, hp, dmg, lvl in seats
                    ]
                    conn.execute(
                        "UPDATE game_registration r SET hp = v.hp, damage_dealt = v.dmg "
                        "FROM unnest(%s::bigint[], %s::int[], %s::int[]) AS v(id, hp, dmg) "
                        "WHERE r.id = v.id",
                        [[v[0] for v in values], [v[1] for v in values], [v[2] for v in values]],
                    )
                    conn.execute(
                        "UPDATE game_combat c SET turn = c.turn + 1, boss_hp = c.boss_hp - 100, "
                        "next_turn_at = %s, version = c.version + 1, updated_at = %s "
                        "WHERE c.id = ANY(%s)",
                        [now + timedelta(seconds=5), now, got],
                    )
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(ids) / (time.perf_counter() - started)


def bench_turns(world: World) -> list[Row]:
    from game.storms.orchestrator import process_active_combats

    parallelism = settings.NIGHTSTORM_COMBAT_PARALLELISM
    rows = []
    for batch in (1, 25):
        ours_rates, raw_rates = [], []
        for _ in range(ROUNDS):  # interleaved rounds, best of each: noise slows both alike
            world.make_due()
            report = process_active_combats(parallelism=parallelism, batch_size=batch)
            assert report.advanced == COMBATS, report
            ours_rates.append(report.advanced / report.seconds)
            world.make_due()
            raw_rates.append(_raw_turns(world, parallelism, batch))
        ours, raw = max(ours_rates), max(raw_rates)
        rows.append(
            Row(
                f"combat tick, {COMBATS} combats x {SEATS}, batch {batch}",
                "combats/s",
                ours,
                raw,
                goal=500,
                goal_is_absolute=True,
                note=f"{parallelism} threads, best of {ROUNDS}; raw = same reads/writes in "
                "psycopg (without the turn log's INSERT)",
            )
        )
    world.make_due()
    return rows


# --- travel ---------------------------------------------------------------------------------

# The raw baseline's read of the player's state, locked: the journey in flight and whether it is
# due, an active seat, the route's time.
_RAW_TRAVEL_STATE = """
SELECT p.zone_id,
       (SELECT j.id FROM game_journey j
         WHERE j.player_id = p.id AND j.arrived_at IS NULL LIMIT 1),
       (SELECT j.arrives_at <= %s FROM game_journey j
         WHERE j.player_id = p.id AND j.arrived_at IS NULL LIMIT 1),
       EXISTS (SELECT 1 FROM game_registration r WHERE r.player_id = p.id AND r.active),
       (SELECT rt.seconds FROM game_route rt
         WHERE rt.origin_id = p.zone_id AND rt.destination_id = %s)
  FROM game_player p
 WHERE p.id = %s AND p.deleted_at IS NULL
   FOR UPDATE OF p
"""


def bench_travel(world: World) -> list[Row]:
    from game import travel
    from game.models import Journey

    def ours(pid):
        try:
            travel.start_travel(player_id=pid, zone_code=world.away.code)
        finally:
            pass

    def run_threads(fn, args):
        def wrapped(arg):
            return fn(arg)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=THREADS, initializer=None) as pool:
            list(pool.map(wrapped, args))
        elapsed = time.perf_counter() - started
        return len(args) / elapsed

    pids = [p.pk for p in world.travellers]
    local = threading.local()
    conns = []

    def raw(pid):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = raw_pg()
            conns.append(conn)
        now = timezone.now()
        # The same reads and writes as the service: the zone, the locked player state (journey
        # in flight, active seat, route), the insert, in one transaction with a lock timeout.
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = 3000")
            zone_id = conn.execute(
                "SELECT id FROM game_zone WHERE code = %s", [world.away.code]
            ).fetchone()[0]
            state = conn.execute(_RAW_TRAVEL_STATE, [now, zone_id, pid]).fetchone()
            conn.execute(
                "INSERT INTO game_journey (player_id, origin_id, destination_id, started_at, "
                "arrives_at) VALUES (%s, %s, %s, %s, %s)",
                [pid, state[0], zone_id, now, now + timedelta(seconds=state[4] or 60)],
            )

    ours_rates, raw_rates = [], []
    for _ in range(ROUNDS):  # interleaved rounds, best of each: noise slows both alike
        ours_rates.append(_with_closing(run_threads, ours, pids))
        Journey.objects.filter(player_id__in=pids).delete()
        raw_rates.append(run_threads(raw, pids))
        Journey.objects.filter(player_id__in=pids).delete()
        while conns:  # the pool's threads are gone: close their connections
            conns.pop().close()
    ours_rate, raw_rate = max(ours_rates), max(raw_rates)
    return [
        Row(
            f"travel start, {TRAVELLERS} players at once",
            "req/s",
            ours_rate,
            raw_rate,
            goal=0.67,
            note=f"{THREADS} threads; raw = the same transaction in plain SQL",
        )
    ]


def _with_closing(run_threads, fn, args):
    def closing(arg):
        return fn(arg)

    rate_ = run_threads(closing, args)
    # Pool threads are gone; their Django connections are closed by garbage collection, but
    # close what this thread holds too.
    connections.close_all()
    return rate_


# --- registration storm over HTTP -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http_registration(world: World) -> list[Row]:
    from rest_framework.authtoken.models import Token

    from game.storms import events as nightstorms

    tokens = Token.objects.bulk_create(
        [Token(user_id=p.user_id, key=Token.generate_key()) for p in world.contenders]
    )
    rounds = 3
    events = [
        nightstorms.open_nightstorm(zone=world.home, slot=timezone.now() + timedelta(days=i + 1))
        for i in range(rounds)
    ]
    port = _free_port()
    env = {
        **os.environ,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "THROTTLE_AUTH": "1000000/min",
        "THROTTLE_ANON": "1000000/min",
        "THROTTLE_USER": "1000000/min",
    }
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "nightstorm.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "4",
            "--threads",
            "8",
            "--log-level",
            "warning",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies, statuses, wall = [], {}, 0.0
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/zones/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)

        def post(combat_id, key):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/combats/{combat_id}/registrations/",
                method="POST",
                data=b"",
                headers={"Authorization": f"Token {key}"},
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            return (time.perf_counter() - started) * 1000, status

        for event in events:
            combat_ids = [c.pk for c in event.combats.order_by("index")]
            barrier = threading.Barrier(HTTP_CONTENDERS)

            def contend(i, barrier=barrier, combat_ids=combat_ids):
                barrier.wait(timeout=30)
                return post(combat_ids[i % len(combat_ids)], tokens[i].key)

            round_started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=HTTP_CONTENDERS) as pool:
                outcomes = list(pool.map(contend, range(HTTP_CONTENDERS)))
            wall += time.perf_counter() - round_started
            for ms, status in outcomes:
                latencies.append(ms)
                statuses[status] = statuses.get(status, 0) + 1
            # Free the contenders for the next round.
            for combat_id in combat_ids:
                nightstorms.cancel_combat(combat_id=combat_id)
    finally:
        server.terminate()
        server.wait(timeout=30)

    # Raw baseline: the same INSERT of a registration row, 100 contenders on threads.
    raw_latencies = []
    raw_event = nightstorms.open_nightstorm(
        zone=world.home, slot=timezone.now() + timedelta(days=rounds + 2)
    )
    combat_ids = [c.pk for c in raw_event.combats.order_by("index")]
    conns = [raw_pg() for _ in range(20)]
    pool_lock = threading.Lock()

    def raw(i):
        with pool_lock:
            conn = conns.pop()
        try:
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO game_registration (combat_id, player_id, active, hp, damage_dealt, "
                "created_at) VALUES (%s, %s, false, 0, 0, now())",
                [combat_ids[i % len(combat_ids)], world.contenders[i].pk],
            )
            return (time.perf_counter() - started) * 1000
        finally:
            with pool_lock:
                conns.append(conn)

    with ThreadPoolExecutor(max_workers=20) as pool:
        raw_latencies = list(pool.map(raw, range(HTTP_CONTENDERS)))
    for conn in conns:
        conn.close()
    Token.objects.filter(pk__in=[t.pk for t in tokens]).delete()
    served = sum(statuses.values()) / wall if wall else 0
    note = (
        f"statuses {json.dumps(statuses)}; gunicorn 4 workers x 8 threads served {served:.0f} "
        f"req/s, so {HTTP_CONTENDERS} requests arriving at once queue; raw = one INSERT"
    )
    return [
        Row(
            "registration storm over HTTP, p50",
            "ms",
            median(latencies),
            median(raw_latencies),
            higher_is_better=False,
            note=note,
        ),
        Row(
            "registration storm over HTTP, p99",
            "ms",
            percentile(latencies, 99),
            percentile(raw_latencies, 99),
            higher_is_better=False,
        ),
    ]


def run() -> list[Row]:
    if connections["default"].vendor != "postgresql":
        return []
    cleanup_bench_rows()
    print("  creating players and combats ...", file=sys.stderr, flush=True)
    world = World()
    rows = []
    try:
        rows += bench_turns(world)
        rows += bench_travel(world)
        try:
            rows += bench_http_registration(world)
        except Exception as exc:  # the HTTP part needs gunicorn and a free port
            print(f"  http registration skipped: {exc}", file=sys.stderr)
    finally:
        try:
            world.cleanup()
        except Exception as exc:  # report the figures even if cleaning up failed
            print(f"  cleanup failed: {exc}", file=sys.stderr)
    return rows
