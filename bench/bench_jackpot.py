"""Jackpot contributions per second with 32 concurrent processes, beside the raw hot-row one.

Ours: `jackpot.services.contribute` (Django) in 32 forked processes: each bet claims one free
stripe per pool (`FOR UPDATE SKIP LOCKED`) and writes the contribution, the stripes and the
ledger rows in one statement (see `jackpot.statements`). Raw: the contribution transaction of
the single-hot-row design, written by hand with psycopg in 32 forked processes, on scratch
copies of the tables (`bench_hot_*`: three pool rows with their amounts, and the contribution
and ledger tables `LIKE` the real ones, indexes, checks and foreign keys included): read
the three pools (and whether the operation was applied), insert the contribution and its
ledger rows, three conditional `UPDATE … WHERE version = %s`, commit; after a lost attempt (or
within 200 ms of one) it reads the pools FOR UPDATE first, with the same backoff. Both run in
the same invocation, alternating, best of ROUNDS runs each; every process first makes
WARM_UP_OPS uncounted bets, so all measure warm connections, as web workers have. Caps are
lifted on both sides while measuring so every bet does the same work. Everything the
benchmark writes is removed afterwards (ledger rows with the trigger's ignore flag set), the
stripes and caps are restored and the scratch tables dropped; the audit is checked before and
after the clean-up.
"""

import contextlib
import multiprocessing
import os
import random
import time
import uuid
from datetime import UTC, datetime

from bench.common import Row, percentile, setup_django

WORKERS = int(os.environ.get("BENCH_JACKPOT_WORKERS", "32"))
OPS_PER_WORKER = int(os.environ.get("BENCH_JACKPOT_OPS", "100"))
SEQUENTIAL_OPS = 300
WARM_UP_OPS = 12
ROUNDS = int(os.environ.get("BENCH_JACKPOT_ROUNDS", "2"))
BET_RANGE = (100, 500_000)


class RawConflict(Exception):
    pass


HOT_POOL, HOT_CONTRIBUTION, HOT_LEDGER = (
    "bench_hot_pool",
    "bench_hot_contribution",
    "bench_hot_ledger",
)
HOT_WINDOW_S = 0.2


class RawContributor:
    """The single-hot-row contribution transaction in plain SQL (psycopg 3)."""

    def __init__(self, dsn: str, player_id, settings):
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.player_id = player_id
        self.limit = settings.JACKPOT_MAX_RETRY_ATTEMPTS
        self.base_ms = settings.JACKPOT_RETRY_DELAY_MS
        self.lock_ms = settings.JACKPOT_LOCK_TIMEOUT_MS
        self.hot_s = HOT_WINDOW_S
        self.hot_until = 0.0

    def contribute(self, bet: int, op: str) -> int:
        """Returns the number of attempts used (or raises after the last)."""
        from psycopg import errors

        from nightstorm.transactions import backoff_delay

        start_locked = time.monotonic() < self.hot_until
        for attempt in range(1, self.limit + 1):
            try:
                with self.conn.transaction():
                    self._once(bet, op, lock=start_locked or attempt > 1)
                return attempt
            except (RawConflict, errors.LockNotAvailable, errors.DeadlockDetected):
                self.hot_until = time.monotonic() + self.hot_s
                if attempt == self.limit:
                    raise
                time.sleep(backoff_delay(attempt, self.base_ms))
        raise AssertionError("unreachable")

    def _once(self, bet: int, op: str, lock: bool) -> None:
        cur = self.conn.cursor()
        if lock:
            cur.execute(f"SET LOCAL lock_timeout = {int(self.lock_ms)}")
        cur.execute(
            'SELECT id, "group", amount, version, contribution_rate_bp, max_amount, '
            f"EXISTS (SELECT 1 FROM {HOT_CONTRIBUTION} WHERE operation_id = %s) "
            f"FROM {HOT_POOL} ORDER BY id" + (" FOR UPDATE" if lock else ""),
            [op],
        )
        rows = cur.fetchall()
        if rows[0][6]:
            return  # replay
        pools = [row[:6] for row in rows]
        parts = {g: bet * rate // 10_000 for _, g, _, _, rate, _ in pools}
        credited = {}
        for _, g, amount, _, _, cap in pools:
            credited[g] = parts[g] if cap is None else max(0, min(parts[g], cap - amount))
        overflow = sum(parts.values()) - sum(credited.values())
        cur.execute(
            f"INSERT INTO {HOT_CONTRIBUTION} (operation_id, player_id, bet, minor_amount, "
            "major_amount, mega_amount, house_amount, overflow_amount, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())",
            [
                op,
                self.player_id,
                bet,
                credited["minor"],
                credited["major"],
                credited["mega"],
                bet - sum(parts.values()) + overflow,
                overflow,
            ],
        )
        rows = [
            (
                pid,
                "contribution",
                credited[g],
                amount + credited[g],
                version + 1,
                op,
                self.player_id,
                "",
            )
            for pid, g, amount, version, _, _ in pools
            if credited[g]
        ]
        if rows:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, now(), 0)"] * len(rows))
            cur.execute(
                f"INSERT INTO {HOT_LEDGER} (pool_id, kind, amount, balance_after, pool_version, "
                f"operation_id, player_id, note, created_at, slot) VALUES {values}",
                [v for row in rows for v in row],
            )
        for pid, g, amount, version, _, _ in pools:
            cur.execute(
                f"UPDATE {HOT_POOL} SET amount = %s, last_modified_at = now(), "
                "updated_at = now(), version = version + 1 WHERE id = %s AND version = %s",
                [amount + credited[g], pid, version],
            )
            if cur.rowcount == 0:
                raise RawConflict()


class StatementContributor:
    """Our contribution's statement (`jackpot.statements.CONTRIBUTE`, its own transaction) in
    plain psycopg, prepared: the floor of our design on this machine, without Django and the
    service around it."""

    def __init__(self, dsn: str, player_id):
        import psycopg

        from jackpot.models import STRIPES_PER_POOL
        from jackpot.statements import CONTRIBUTE

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.player_id = player_id
        self.sql, self.slots = CONTRIBUTE, STRIPES_PER_POOL

    def contribute(self, bet: int, op: str) -> int:
        params = {
            "op": op,
            "player": self.player_id,
            "bet": bet,
            "slot": random.randrange(self.slots),
            "now": datetime.now(UTC),
        }
        row = self.conn.execute(self.sql, params, prepare=True).fetchone()
        if row[4] is None:  # nothing written (no free stripe): counted as given up
            raise RawConflict()
        return 1


def _dsn(db: dict) -> str:
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgresql://{db['USER'] or 'postgres'}{password}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


def _worker(kind, index, n_ops, player_ids, prefix, barrier, results):
    """One process, one player: `n_ops` contributions after the start barrier; reports
    latencies."""
    import random

    from django.conf import settings
    from django.db import connections

    from jackpot import services

    rng = random.Random(index)
    player_id = player_ids[index % len(player_ids)]
    dsn = _dsn(settings.DATABASES["default"])
    raw = (
        RawContributor(dsn, player_id, settings)
        if kind == "raw"
        else StatementContributor(dsn, player_id)
        if kind == "floor"
        else None
    )

    def contribute(bet: int, op: str) -> int:
        if raw is not None:
            return raw.contribute(bet, op)
        return services.contribute(player=player_id, bet=bet, operation_id=op).attempts

    # Warm, as a web worker is after its first requests: the connection open, the backend's
    # catalog caches loaded and the statements prepared and planned (psycopg prepares after
    # DB_PREPARE_THRESHOLD runs, PostgreSQL tries custom plans for five more). Uncounted;
    # every variant does the same.
    for i in range(WARM_UP_OPS):
        # A refused warm-up bet must not keep this process from the start.
        with contextlib.suppress(Exception):
            contribute(rng.randint(*BET_RANGE), f"{prefix}:{index}:warm{i}")
    latencies, attempts, gave_up = [], 0, 0
    barrier.wait()
    started = time.perf_counter()
    for i in range(n_ops):
        bet, op = rng.randint(*BET_RANGE), f"{prefix}:{index}:{i}"
        t0 = time.perf_counter()
        try:
            attempts += contribute(bet, op)
        except Exception:  # gave up after every retry (Busy / conflict): counted, not fatal
            gave_up += 1
        latencies.append((time.perf_counter() - t0) * 1000)
    results.put((index, started, time.perf_counter(), latencies, attempts, gave_up))
    connections.close_all()


def _concurrent(kind: str, player_ids, prefix: str) -> dict:
    from django.db import connections

    connections.close_all()  # never share a connection with the forked children
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(kind, i, OPS_PER_WORKER, player_ids, prefix, barrier, results)
        )
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    reports = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    ops = WORKERS * OPS_PER_WORKER
    wall = max(r[2] for r in reports) - min(r[1] for r in reports)
    latencies = [lat for r in reports for lat in r[3]]
    gave_up = sum(r[5] for r in reports)
    retries = sum(r[4] for r in reports) - (ops - gave_up)
    return {
        "rate": (ops - gave_up) / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "retries": retries,
        "gave_up": gave_up,
    }


def _backend_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the PostgreSQL backend `pid` has used, from /proc (the server
    runs on this machine)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sequential(kind: str, player_id, prefix: str) -> tuple[float, float]:
    """Bets per second from one process, and the CPU each bet cost (ms): this process plus
    its PostgreSQL backend; 0 where the backend's CPU cannot be read."""
    from django.conf import settings
    from django.db import connection

    from jackpot import services

    raw = RawContributor(_dsn(settings.DATABASES["default"]), player_id, settings)
    if kind == "raw":
        backend = raw.conn.info.backend_pid
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
    try:
        backend_before = _backend_cpu_seconds(backend)
    except OSError:
        backend_before = None
    started, cpu_before = time.perf_counter(), time.process_time()
    for i in range(SEQUENTIAL_OPS):
        op = f"{prefix}:{i}"
        if kind == "raw":
            raw.contribute(1000 + i, op)
        else:
            services.contribute(player=player_id, bet=1000 + i, operation_id=op)
    rate = SEQUENTIAL_OPS / (time.perf_counter() - started)
    cpu = time.process_time() - cpu_before
    cpu_ms = 0.0
    if backend_before is not None:
        cpu += _backend_cpu_seconds(backend) - backend_before
        cpu_ms = cpu / SEQUENTIAL_OPS * 1000
    raw.conn.close()
    return rate, cpu_ms


def _vacuum(scratch: bool = True) -> None:
    """Every phase starts from tidy tables.

    Each bet leaves three dead row versions behind (pool rows on the raw side, stripes on
    ours). Where autovacuum is off or lagging
    (as on a shared test server), the three-row pool table grows by megabytes per run and the
    pool read becomes a scan of dead rows, which would dominate both sides and drift from one
    phase to the next.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        tables = "jackpot_pool, jackpot_stripe, jackpot_contribution, jackpot_ledger"
        if scratch:
            tables += f", {HOT_POOL}, {HOT_CONTRIBUTION}, {HOT_LEDGER}"
        cursor.execute(f"VACUUM {tables}")


def _create_hot_tables(pools) -> None:
    """The raw side's tables: three pool rows holding the pools' amounts, and contribution
    and ledger tables shaped like ours."""
    from django.db import connection

    with connection.cursor() as cursor:
        _drop_hot_tables(cursor)
        cursor.execute(
            f"""CREATE TABLE {HOT_POOL} (
                id uuid PRIMARY KEY, "group" varchar(10) NOT NULL UNIQUE,
                amount bigint NOT NULL CHECK (amount >= 0), version integer NOT NULL,
                contribution_rate_bp integer NOT NULL, max_amount bigint,
                last_modified_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"""
        )
        for table, like in (
            (HOT_CONTRIBUTION, "jackpot_contribution"),
            (HOT_LEDGER, "jackpot_ledger"),
        ):
            cursor.execute(f"CREATE TABLE {table} (LIKE {like} INCLUDING ALL)")
        # The foreign keys of the hot-row design, deferred like Django's.
        for table, column, target in (
            (HOT_CONTRIBUTION, "player_id", "game_player (id)"),
            (HOT_LEDGER, "player_id", "game_player (id)"),
            (HOT_LEDGER, "pool_id", f"{HOT_POOL} (id)"),
        ):
            cursor.execute(
                f"ALTER TABLE {table} ADD FOREIGN KEY ({column}) REFERENCES {target} "
                "DEFERRABLE INITIALLY DEFERRED"
            )
        for pool in pools:
            cursor.execute(
                f"INSERT INTO {HOT_POOL} VALUES (%s, %s, %s, 1, %s, NULL, now(), now())",
                [pool.pk, pool.group, pool.amount, pool.contribution_rate_bp],
            )


def _drop_hot_tables(cursor) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {HOT_POOL}, {HOT_CONTRIBUTION}, {HOT_LEDGER}")


def _cleanup(prefix: str, saved_pools: list, saved_stripes: list, players, users) -> None:
    from django.db import connection, transaction

    from jackpot.models import JackpotPool, LedgerEntry, PoolStripe

    # pgtrigger.ignore() prepends a second statement to each query, which server-side binding
    # refuses; set the same transaction-local flag its trigger function reads, directly.
    pgid = LedgerEntry._meta.triggers[0].get_pgid(LedgerEntry)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('pgtrigger.ignore', %s, true)", [f"{{{pgid}}}"])
            cursor.execute("DELETE FROM jackpot_ledger WHERE operation_id LIKE %s", [f"{prefix}%"])
            cursor.execute(
                "DELETE FROM jackpot_contribution WHERE operation_id LIKE %s", [f"{prefix}%"]
            )
            _drop_hot_tables(cursor)
        for pk, amount, version, ceiling in saved_stripes:
            PoolStripe.objects.filter(pk=pk).update(amount=amount, version=version, ceiling=ceiling)
        for pk, cap in saved_pools:
            JackpotPool.all_objects.filter(pk=pk).update(max_amount=cap)
    for player in players:
        type(player).all_objects.filter(pk=player.pk).hard_delete()
    for user in users:
        user.delete()


def run() -> list[Row]:
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from game.models import Player
    from jackpot import services
    from jackpot.ledger import audit_pools
    from jackpot.models import JackpotPool, PoolStripe

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return []
    services.ensure_default_pools()
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    # One player per process, as players bet: a shared player row would be a hot row of the
    # benchmark's own making (every bet's foreign key check locks it).
    users = [get_user_model().objects.create(username=f"{prefix}-user{i}") for i in range(WORKERS)]
    players = [
        Player.objects.create(user=user, name=f"{prefix}-player{i}") for i, user in enumerate(users)
    ]
    player_ids = [p.pk for p in players]
    saved_pools = list(JackpotPool.all_objects.values_list("pk", "max_amount"))
    saved_stripes = list(PoolStripe.objects.values_list("pk", "amount", "version", "ceiling"))
    # No caps while measuring, so every contribution does the same work in both loops (a
    # stripe's ceiling is its share of the cap).
    JackpotPool.all_objects.update(max_amount=None)
    PoolStripe.objects.update(ceiling=None)
    _create_hot_tables(JackpotPool.objects.all())
    # Other work on the machine comes and goes: run each side ROUNDS times, alternating which
    # goes first, and keep each side's best run.
    runs = {"ours": [], "raw": [], "floor": []}
    seq = {"ours": [], "raw": []}
    try:
        for n in range(ROUNDS):
            for kind in ("ours", "raw", "floor") if n % 2 == 0 else ("floor", "raw", "ours"):
                if kind in seq:
                    _vacuum()
                    seq[kind].append(_sequential(kind, player_ids[0], f"{prefix}:seq:{kind}{n}"))
                _vacuum()
                runs[kind].append(_concurrent(kind, player_ids, f"{prefix}:{kind}{n}"))
        audit_ok = all(r.ok for r in audit_pools())
    finally:
        _cleanup(prefix, saved_pools, saved_stripes, players, users)
    audit_after = all(r.ok for r in audit_pools())
    _vacuum(scratch=False)  # the scratch tables are gone
    ours, raw, floor = (max(runs[k], key=lambda m: m["rate"]) for k in ("ours", "raw", "floor"))
    seq_ours, seq_raw = (max(seq[k])[0] for k in ("ours", "raw"))
    cpu_ours, cpu_raw = (min(cpu for _, cpu in seq[k]) for k in ("ours", "raw"))
    cores = os.cpu_count() or 1

    def describe(m):
        return (
            f"retries {m['retries']}, gave up {m['gave_up']}, "
            f"p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms"
        )

    def rates(kind):
        return ", ".join(f"{m['rate']:.0f}" for m in runs[kind])

    note = (
        "raw = the single-hot-row transaction (read the 3 pools, 2 inserts, 3 conditional "
        "UPDATEs, commit; lock the pools after a lost attempt); ours = a free stripe per pool "
        "(SKIP LOCKED) and one write statement; goal also >= 1,000 ops/s; "
        f"{WORKERS} processes x {OPS_PER_WORKER} bets, best of {ROUNDS} alternating runs "
        f"(all ours: {rates('ours')}; all raw: {rates('raw')} ops/s); ours: {describe(ours)}; raw: "
        f"{describe(raw)}; audit {'ok' if audit_ok else 'FAILED'} after the run, "
        f"{'ok' if audit_after else 'FAILED'} after clean-up"
    )
    return [
        Row(
            f"jackpot contribute, {WORKERS} processes",
            "ops/s",
            ours["rate"],
            raw["rate"],
            goal=1.5,
            note=note,
        ),
        Row(
            f"jackpot contribute, {WORKERS} processes: the same statement in plain psycopg",
            "ops/s",
            ours["rate"],
            floor["rate"],
            note=(
                "baseline = jackpot.statements.CONTRIBUTE prepared, in plain psycopg, in the "
                f"same processes: the floor of this design on this machine (all: "
                f"{rates('floor')} ops/s); {describe(floor)}"
            ),
        ),
        Row(
            "jackpot contribute p50 (contended)",
            "ms",
            ours["p50"],
            raw["p50"],
            higher_is_better=False,
        ),
        Row(
            "jackpot contribute p99 (contended)",
            "ms",
            ours["p99"],
            raw["p99"],
            goal=100,
            higher_is_better=False,
            goal_is_absolute=True,
        ),
        Row(
            "jackpot contribute, 1 process",
            "ops/s",
            seq_ours,
            seq_raw,
            goal=0.7,
            note=f"{SEQUENTIAL_OPS} bets, best of {ROUNDS}; raw = the single-hot-row transaction",
        ),
        Row(
            "jackpot contribute: CPU per bet (client + its PostgreSQL backend)",
            "ms",
            cpu_ours,
            cpu_raw,
            higher_is_better=False,
            note=(
                f"the sequential runs' CPU, least of {ROUNDS}; {cores} cores / this = the most "
                "bets/s this machine could serve with every core busy and nothing else "
                "running: ours "
                + (f"{cores * 1000 / cpu_ours:.0f}" if cpu_ours else "-")
                + ", raw "
                + (f"{cores * 1000 / cpu_raw:.0f}" if cpu_raw else "-")
            ),
        ),
    ]
