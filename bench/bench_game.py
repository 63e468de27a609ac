"""The game's hot paths beside plain SQL doing the same reads and writes.

* combat turns: 1,000 running combats x 10 participants, one orchestrator tick
  (`process_active_combats`) in combats/s, vs the same per-combat transaction in psycopg
  (SELECT … FOR UPDATE SKIP LOCKED, read the seats, UPDATE the seats, UPDATE the combat) on the
  same number of threads. Measured with one combat per transaction and with batches of 25
  (the default), best of three interleaved rounds each.
* travel: 1,000 players starting a journey at once on threads (`start_travel`) vs the same
  transaction in plain SQL (lock timeout, zone, the player's locked state, the INSERT), best of
  three interleaved rounds.
* registration storm: 100 players on 4 processes x 8 threads (as web workers) for an event's
  three 10-seat combats (`game.registration.register`, the seat claim) vs the row-lock
  transaction registration used before, rounds interleaved in the same run, on warm
  connections: req/s and p99. (Registration over HTTP is a row of `bench_http`.)

All rows created here are deleted at the end.
"""

import gc
import json
import multiprocessing
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

from bench.common import Row, listed, median, percentile, raw_pg, vacuum

COMBATS = 1000
SEATS = 10
TRAVELLERS = 1000
THREADS = 16
HTTP_CONTENDERS = 100  # players kept for the registration storm
ROUNDS = 3  # the tick rows: interleaved rounds of ours and raw
TRAVEL_ROUNDS = 5  # a round is about a second: best of more of them steadies the row
TRAVEL_HISTORY = 5  # landed journeys per traveller before the rounds
STORM_CONTENDERS = 100
STORM_PROCESSES = 4  # as the web workers of deploy/gunicorn.conf.py
STORM_THREADS = 8  # each: 32 requests in flight at once
STORM_ROUNDS = 3


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
                    seats=SEATS,
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
                goal=0.67,
                note=f"{parallelism} threads, best of {ROUNDS}; raw = same reads/writes in "
                "psycopg (without the turn log's INSERT); goal also >= 500 combats/s; rounds: "
                f"ours {listed(ours_rates)}, raw {listed(raw_rates)} combats/s",
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
    """Travel starts against the same transaction in plain SQL, rounds interleaved.

    Both run on one pool of THREADS threads kept for every round, so each thread keeps its
    connections (Django's and the raw one) as a web worker's threads do. A first round of each,
    not counted, warms them: a new PostgreSQL backend reads its catalogs and plans each
    statement the first time.

    The journeys table is as a live game's is: each traveller has a history of landed journeys,
    its statistics are current, and the rounds' journeys are vacuumed away after each round (as
    autovacuum would; it may be off here). On an empty table just analyzed, both sides' cached
    plans scanned the whole table for a journey in flight, and every round's deleted journeys
    with it: the row measured those scans, not a start."""
    from game import travel
    from game.models import Journey

    pids = [p.pk for p in world.travellers]
    landed = timezone.now() - timedelta(days=1)
    Journey.objects.bulk_create(
        [
            Journey(
                player_id=pid,
                origin=world.home,
                destination=world.away,
                started_at=landed - timedelta(hours=k + 1),
                arrives_at=landed - timedelta(hours=k),
                arrived_at=landed - timedelta(hours=k),
            )
            for pid in pids
            for k in range(TRAVEL_HISTORY)
        ],
        batch_size=5000,
    )
    vacuum("game_journey")
    local = threading.local()
    conns = []

    def ours(pid):
        travel.start_travel(player_id=pid, zone_code=world.away.code)

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

    rates = {ours: [], raw: []}
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        try:
            for counted in [False] + [True] * TRAVEL_ROUNDS:
                for fn in (ours, raw):  # interleaved rounds, best of each: noise slows both
                    started = time.perf_counter()
                    list(pool.map(fn, pids))
                    if counted:
                        rates[fn].append(len(pids) / (time.perf_counter() - started))
                    Journey.objects.filter(player_id__in=pids, arrived_at__isnull=True).delete()
                    vacuum("game_journey")
        finally:
            # Each thread's own connections, closed in that thread.
            barrier = threading.Barrier(THREADS)

            def close(_):
                connections.close_all()
                barrier.wait(timeout=60)

            list(pool.map(close, range(THREADS)))
            for conn in conns:
                conn.close()
    return [
        Row(
            f"travel start, {TRAVELLERS} players at once",
            "req/s",
            max(rates[ours]),
            max(rates[raw]),
            goal=0.67,
            note=f"{THREADS} threads of one process, kept with their connections for every "
            f"round; best of {TRAVEL_ROUNDS} after a round of each not counted; raw = the same "
            f"transaction in plain SQL; rounds: ours {listed(rates[ours])}, "
            f"raw {listed(rates[raw])} starts/s",
        )
    ]


# --- registration storm -----------------------------------------------------------------------


def _row_lock_register(player_id, combat_id):
    """Registration as it was before the seat claim, kept here as the storm's baseline: lock
    the combat row, lock the player, count the seats, insert, bump the combat (its seats
    counter too, so the rows stay consistent). Every registration of a combat queues on its
    row for the whole transaction."""
    from django.db import transaction
    from django.db.models import Count, F, Q

    from game.errors import AlreadyRegistered, CombatFull, InOtherCombat, RegistrationClosed
    from game.models import Combat, Player, Registration
    from nightstorm.transactions import set_lock_timeout

    with transaction.atomic():
        set_lock_timeout()
        combat = Combat.objects.select_for_update().filter(pk=combat_id).first()
        if combat.status != Combat.Status.OPEN:
            raise RegistrationClosed()
        Player.objects.select_for_update().filter(pk=player_id).values("pk").first()
        here, active = Q(combat_id=combat.pk), Q(player_id=player_id, active=True)
        counts = Registration.objects.filter(here | active).aggregate(
            seats=Count("pk", filter=here),
            mine=Count("pk", filter=here & Q(player_id=player_id)),
            active=Count("pk", filter=active),
        )
        if counts["mine"]:
            raise AlreadyRegistered()
        if counts["active"]:
            raise InOtherCombat()
        if counts["seats"] >= combat.capacity:
            raise CombatFull()
        seat = Registration.objects.create(combat=combat, player_id=player_id)
        Combat.objects.filter(pk=combat.pk).update(
            seats=F("seats") + 1, version=F("version") + 1, updated_at=timezone.now()
        )
        return seat


_raw_storm = threading.local()


class _RawRefused(Exception):
    code = "refused"


def _raw_seat_claim(player_id, combat_id):
    """The seat claim's statements (`game.registration`'s own SQL) in plain psycopg on the
    thread's connection, with its round trips: the plain read; the player's lock with the
    locked read; the seat with the status and the COMMIT. The checks in between are reduced to
    the combat's (the storm's players are all free and in its zone). The storm's floor: what
    the same work costs without Django and the service around it."""
    from psycopg.pq import TransactionStatus

    from game import registration as r

    conn = getattr(_raw_storm, "conn", None)
    if conn is None:
        conn = _raw_storm.conn = raw_pg()
    now = timezone.now()
    state = [now, combat_id, combat_id, player_id]

    def refuse_unless_free(row):
        if row[6] != "open" or row[7] >= row[8]:
            raise _RawRefused()

    refuse_unless_free(conn.execute(r._STATE_SQL, state).fetchone())
    timeout = str(settings.NIGHTSTORM_LOCK_TIMEOUT_MS)
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(r._LOCK_PLAYER_SQL, [player_id, timeout])
            locked = conn.execute(r._STATE_SQL, state)
        refuse_unless_free(locked.fetchone())
        seat = [now, combat_id, player_id, True, 100, 0, now]
        with conn.pipeline():
            seated = conn.execute(r._SEAT_SQL, seat)
            conn.execute(r._STATUS_SQL, [combat_id])
            conn.execute("COMMIT")
        if not seated.fetchall():
            raise _RawRefused()
    finally:
        if conn.info.transaction_status != TransactionStatus.IDLE:  # not committed
            conn.execute("ROLLBACK")


def _storm_variants() -> dict:
    from game import registration

    return {
        "claim": registration.register,
        "row lock": _row_lock_register,
        "raw claim": _raw_seat_claim,
    }


def _storm_worker(inbox, barrier, results) -> None:
    """One storm process: its STORM_THREADS threads keep their connections from round to round
    and run the attempts each round sends; every thread's first attempt of a round waits at
    the barrier shared by all processes' threads, so they all start together. What it
    inherited is frozen out of the garbage collector's passes, as a web worker freezes what it
    loaded (`nightstorm/wsgi.py`)."""
    gc.freeze()
    variants = _storm_variants()
    with ThreadPoolExecutor(max_workers=STORM_THREADS) as pool:
        while (job := inbox.get()) is not None:
            variant, attempts = job
            register, started_in = variants[variant], set()

            def attempt(player_combat, register=register, started_in=started_in):
                # A thread held at the barrier takes no other attempt: the first STORM_THREADS
                # attempts land on different threads.
                if threading.get_ident() not in started_in:
                    started_in.add(threading.get_ident())
                    connections["default"].ensure_connection()
                    barrier.wait(timeout=60)
                started = time.perf_counter()
                try:
                    register(player_id=player_combat[0], combat_id=player_combat[1])
                    kind = "seated"
                except Exception as exc:  # refusals are part of a storm; counted by kind
                    kind = getattr(exc, "code", type(exc).__name__)
                ended = time.perf_counter()
                return (ended - started) * 1000, kind, started, ended

            results.put(list(pool.map(attempt, attempts)))
        done = threading.Barrier(STORM_THREADS)

        def close(_):  # each thread's own connections, in its thread
            connections.close_all()
            if getattr(_raw_storm, "conn", None) is not None:
                _raw_storm.conn.close()
            done.wait(timeout=60)

        list(pool.map(close, range(STORM_THREADS)))


class _StormWorkers:
    """STORM_PROCESSES forked processes of STORM_THREADS threads each, kept for every round, as
    web workers keep their threads and connections."""

    def __init__(self):
        connections.close_all()  # never share a connection with the forked children
        ctx = multiprocessing.get_context("fork")
        self.barrier = ctx.Barrier(STORM_PROCESSES * STORM_THREADS)
        self.results = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(STORM_PROCESSES)]
        self.procs = [
            ctx.Process(target=_storm_worker, args=(inbox, self.barrier, self.results))
            for inbox in self.inboxes
        ]
        for proc in self.procs:
            proc.start()

    def run(self, variant: str, attempts: list) -> list:
        """Each process takes every STORM_PROCESSES-th attempt; all of their outcomes."""
        for k, inbox in enumerate(self.inboxes):
            inbox.put((variant, attempts[k::STORM_PROCESSES]))
        return [outcome for _ in self.procs for outcome in self.results.get(timeout=120)]

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for proc in self.procs:
            proc.join(timeout=60)


def _storm_round(
    world: World, workers: _StormWorkers, variant: str, slot_days: int
) -> tuple[float, list[float], dict]:
    """STORM_CONTENDERS players at once for one event's combats: seconds, each attempt's
    latency, outcomes by kind. Frees the players afterwards."""
    from game.storms import events as nightstorms

    event = nightstorms.open_nightstorm(
        zone=world.home, slot=timezone.now() + timedelta(days=slot_days)
    )
    combat_ids = [c.pk for c in event.combats.order_by("index")]
    contenders = world.contenders[:STORM_CONTENDERS]
    attempts = [(p.pk, combat_ids[i % len(combat_ids)]) for i, p in enumerate(contenders)]
    outcomes = workers.run(variant, attempts)
    # The storm itself: from the barrier's release to the last answer (one clock for all
    # processes: perf_counter is the system's monotonic clock).
    seconds = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    kinds: dict[str, int] = {}
    for _, kind, _, _ in outcomes:
        kinds[kind] = kinds.get(kind, 0) + 1
    for combat_id in combat_ids:
        nightstorms.cancel_combat(combat_id=combat_id)
    return seconds, [o[0] for o in outcomes], kinds


def bench_registration_storm(world: World) -> list[Row]:
    """Seat claim vs the former row-lock transaction, rounds interleaved in the same run.

    The contenders' requests run as web workers run them: STORM_PROCESSES processes of
    STORM_THREADS threads, which keep their connections from round to round. A first round of
    each, not counted, warms the connections up: a new PostgreSQL backend reads its catalogs
    and plans its statements the first time, which on 32 new connections at once took the
    first 100 ms of a storm."""
    results = {name: ([], [], {}) for name in _storm_variants()}
    day = 1
    workers = _StormWorkers()
    try:
        for counted in [False] + [True] * STORM_ROUNDS:
            for name in results:
                seconds, latencies, kinds = _storm_round(world, workers, name, day)
                day += 1
                if not counted:
                    continue
                spent, lat, seen = results[name]
                spent.append(seconds)
                lat.extend(latencies)
                for kind, n in kinds.items():
                    seen[kind] = seen.get(kind, 0) + n
    finally:
        workers.close()
    rates = {
        name: STORM_CONTENDERS * STORM_ROUNDS / sum(spent)
        for name, (spent, _, _) in results.items()
    }
    p99 = {name: percentile(lat, 99) for name, (_, lat, _) in results.items()}
    p50 = {name: median(lat) for name, (_, lat, _) in results.items()}
    claim_kinds = results["claim"][2]
    seated_ok = claim_kinds.get("seated") == 30 * STORM_ROUNDS
    note = (
        f"{STORM_CONTENDERS} players on {STORM_PROCESSES} processes x {STORM_THREADS} threads "
        "for 3 x 10 seats, "
        f"{STORM_ROUNDS} rounds on warm connections (after one round of each not counted); "
        f"outcomes {json.dumps(claim_kinds)}"
        f"{'' if seated_ok else ' (WRONG seat count)'}; "
        f"row lock: {json.dumps(results['row lock'][2])}; "
        f"p50 {p50['claim']:.1f} ms vs {p50['row lock']:.1f} ms; baseline = the former "
        "row-lock transaction (lock combat, lock player, count, insert)"
    )
    floor = (
        "the seat claim's statements and round trips in plain psycopg, same processes and "
        f"threads (the floor on this machine): {rates['raw claim']:.0f} req/s, "
        f"p50 {p50['raw claim']:.1f} ms; outcomes {json.dumps(results['raw claim'][2])}"
    )
    return [
        Row(
            "registration storm (seat claim vs row lock)",
            "req/s",
            rates["claim"],
            rates["row lock"],
            goal=3.0,
            note=note,
        ),
        Row(
            "registration storm p99",
            "ms",
            p99["claim"],
            p99["row lock"],
            higher_is_better=False,
            goal=100,
            goal_is_absolute=True,
        ),
        Row(
            "registration storm p99, plain psycopg seat claim",
            "ms",
            p99["claim"],
            p99["raw claim"],
            higher_is_better=False,
            note=floor,
        ),
    ]


def run() -> list[Row]:
    if connections["default"].vendor != "postgresql":
        return []
    cleanup_bench_rows()
    print("  creating players and combats ...", file=sys.stderr, flush=True)
    world = World()
    # Vacuumed and analyzed as a live game's tables are: the topic's vacuum ran before the
    # world existed, and the tick measured on freshly bulk-inserted rows ran at a third to
    # two thirds of its rate on vacuumed ones (same plans either way).
    vacuum("game_player", "game_combat", "game_registration", "game_combatturn")
    rows = []
    try:
        rows += bench_turns(world)
        rows += bench_travel(world)
        vacuum()  # the tick and travel rows left thousands of dead row versions behind
        rows += bench_registration_storm(world)
    finally:
        try:
            world.cleanup()
        except Exception as exc:  # report the figures even if cleaning up failed
            print(f"  cleanup failed: {exc}", file=sys.stderr)
    return rows
