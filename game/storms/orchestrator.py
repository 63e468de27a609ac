"""The combat orchestrator: every running combat advances by exactly one turn per tick.

`manage.py run_orchestrator` runs `Orchestrator.run()`: a long-running process that ticks at
every tick-period boundary (periods of NIGHTSTORM_COMBAT_TICK_SECONDS aligned to the epoch).
Each tick starts the events whose registration closed and calls `process_active_combats()`,
then writes the process's heartbeat (`Heartbeat` `orchestrator:<host>:<pid>`, read by the
`orchestrator` health check); a clean exit (SIGTERM/SIGINT: the tick in progress finishes
first) removes it. Any number of orchestrators may run at once.

`process_active_combats()` lists the running combats whose next turn is due and hands them, in
batches, to at most NIGHTSTORM_COMBAT_PARALLELISM worker threads. A batch is one transaction
that claims its combats with `SELECT … FOR UPDATE SKIP LOCKED`: a combat another orchestrator
is processing right now is skipped, not waited for.

NIGHTSTORM_COMBAT_BATCH_SIZE (default 25) is how many combats share a transaction. With 1,
every combat has its own transaction, but a commit per combat costs most of a tick's
throughput (`python -m bench game` measures both sizes beside plain SQL doing the same work).
Isolation is kept where it matters: if a batch fails, it is rolled back and replayed combat by
combat, each in its own transaction, so one broken combat never holds back the others, and a
turn is deterministic, so replaying it gives the same result.

SKIP LOCKED alone does not stop a second orchestrator that runs just *after* the first
committed. So every turn also moves the combat's `next_turn_at` to the end of the tick period
it ran in, and only combats with `next_turn_at <= now` are claimed: within one tick period a
combat advances once, however many orchestrators run. Each turn also writes its `CombatTurn`
row (turn number, when it was due, when it ran, the boss's hp after) in the same transaction,
one INSERT per batch; unique (combat, turn) makes a turn applied twice impossible to commit.
How late a turn ran (ran_at - due_at, clipped at 0) goes to `nightstorm_tick_lateness_seconds`.

On PostgreSQL a batch is two statements of plain SQL between BEGIN and COMMIT: one claims the
combats and reads everything their turns need, one writes the turn log, the seats and the
combats; the ORM's compile and model instances cost several times the database's work here.
Other databases run the same reads and writes through the ORM. The fight itself is the pure
function `game.fight.resolve_turn`.
"""

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from game import fight, metrics
from game.models import Combat, CombatTurn, Player, Registration, Zone
from game.storms.events import _end_locked, settle_events, start_due_events
from game.storms.health import HEARTBEAT_PREFIX, prune_stale_orchestrators
from nightstorm import sql
from nightstorm.models import Heartbeat

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    due: int = 0
    advanced: int = 0
    finished: int = 0
    skipped: int = 0
    failed: int = 0
    events_started: int = 0
    seconds: float = 0.0
    lateness_total: float = 0.0
    lateness_max: float = 0.0
    failures: list = field(default_factory=list)
    ended_events: set = field(default_factory=set)

    def add(self, other: "TickReport") -> None:
        self.advanced += other.advanced
        self.finished += other.finished
        self.skipped += other.skipped
        self.failed += other.failed
        self.lateness_total += other.lateness_total
        self.lateness_max = max(self.lateness_max, other.lateness_max)
        self.failures.extend(other.failures)
        self.ended_events |= other.ended_events


def tick_seconds() -> int:
    return settings.NIGHTSTORM_COMBAT_TICK_SECONDS


def period_end(now: datetime, seconds: int | None = None) -> datetime:
    """The end of the tick period containing `now` (periods aligned to the epoch)."""
    seconds = seconds or tick_seconds()
    stamp = now.timestamp()
    return datetime.fromtimestamp((stamp // seconds + 1) * seconds, tz=UTC)


@dataclass(slots=True)
class Seat:
    """A participant's fighting state, read as plain values (no model instances on the hot
    path)."""

    id: int
    hp: int
    damage_dealt: int
    level: int


@dataclass(slots=True)
class Due:
    """A claimed combat: the state its next turn needs, read as plain values."""

    id: object
    event_id: object
    turn: int
    boss_hp: int
    next_turn_at: datetime
    boss_attack: int
    seats: list = field(default_factory=list)


_COMBAT = Combat._meta.db_table
_SEAT = Registration._meta.db_table
_TURN = CombatTurn._meta.db_table
_PLAYER = Player._meta.db_table
_ZONE = Zone._meta.db_table

# The claim and every read a turn needs in one round trip (PostgreSQL), one row per combat with
# its seats as arrays (a row per seat would repeat and re-parse the combat's columns; NULL when
# it has none). The
# locking CTE is MATERIALIZED so that it runs once, on its own: the due re-check and SKIP LOCKED
# apply to the combat rows only, and the seats are read after the lock is held. Array
# parameters go in binary (%b): dumping them as text escapes every element.
_CLAIM_SQL = f"""
WITH claimed AS MATERIALIZED (
    SELECT id, event_id, zone_id, turn, boss_hp, next_turn_at
      FROM {_COMBAT}
     WHERE id = ANY(%b::uuid[]) AND status = %s AND next_turn_at <= %s AND deleted_at IS NULL
     ORDER BY id
       FOR UPDATE SKIP LOCKED
)
SELECT c.id, c.event_id, c.turn, c.boss_hp, c.next_turn_at, z.boss_attack,
       array_agg(r.id ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL),
       array_agg(r.hp ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL),
       array_agg(r.damage_dealt ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL),
       array_agg(p.level ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL)
  FROM claimed c
  JOIN {_ZONE} z ON z.id = c.zone_id
  LEFT JOIN ({_SEAT} r JOIN {_PLAYER} p ON p.id = r.player_id) ON r.combat_id = c.id
 GROUP BY c.id, c.event_id, c.turn, c.boss_hp, c.next_turn_at, z.boss_attack
 ORDER BY c.id
"""

# Every write of a batch in one statement (PostgreSQL): the turn log, the seats that changed,
# the combats. Data-modifying CTEs all run, in one snapshot; a turn already logged fails the
# whole statement on the unique (combat, turn) index, so nothing of the batch commits.
_WRITE_SQL = f"""
WITH turns AS (
    SELECT * FROM unnest(%b::uuid[], %b::integer[], %b::integer[], %b::timestamptz[])
        AS t(combat_id, turn, boss_hp, due_at)
), logged AS (
    INSERT INTO {_TURN} (combat_id, turn, due_at, ran_at, boss_hp)
    SELECT combat_id, turn, due_at, %s, boss_hp FROM turns
), seats AS (
    UPDATE {_SEAT} AS r SET hp = s.hp, damage_dealt = s.damage_dealt
      FROM unnest(%b::bigint[], %b::integer[], %b::integer[]) AS s(id, hp, damage_dealt)
     WHERE r.id = s.id
)
UPDATE {_COMBAT} AS c
   SET turn = t.turn, boss_hp = t.boss_hp, version = c.version + 1,
       next_turn_at = %s, updated_at = %s
  FROM turns t
 WHERE c.id = t.combat_id
"""


def _due(rows) -> list[Due]:
    """Rows of (combat columns…, seat ids, hps, damages, levels) -> Due values."""
    return [
        Due(cid, event_id, turn, boss_hp, next_turn_at, attack, list(map(Seat, *seat_columns)))
        if seat_columns[0]
        else Due(cid, event_id, turn, boss_hp, next_turn_at, attack)
        for cid, event_id, turn, boss_hp, next_turn_at, attack, *seat_columns in rows
    ]


def read_due(combats) -> list[Due]:
    """The state of the combats of the queryset `combats` (portable ORM reads, two queries)."""
    head = list(
        combats.order_by("pk").values_list(
            "pk", "event_id", "turn", "boss_hp", "next_turn_at", "zone__boss_attack"
        )
    )
    seats: dict = {row[0]: [] for row in head}
    for combat_id, *seat in (
        Registration.objects.filter(combat_id__in=list(seats))
        .order_by("pk")
        .values_list("combat_id", "id", "hp", "damage_dealt", "player__level")
    ):
        seats[combat_id].append(seat)
    return _due((*h, *zip(*seats[h[0]], strict=True)) if seats[h[0]] else (*h, None) for h in head)


def _claim(ids: list, now: datetime) -> list[Due]:
    """Lock those of `ids` that are still running and due at `now`, skipping any combat another
    orchestrator holds, and read their seats; the due re-check under the lock sees a turn
    another orchestrator committed since the combats were listed."""
    if connection.vendor == "postgresql":
        params = [ids, Combat.Status.RUNNING.value, now]
        return _due(sql.run(connection.alias, _CLAIM_SQL, params))
    return read_due(
        Combat.objects.filter(
            pk__in=ids, status=Combat.Status.RUNNING, next_turn_at__lte=now
        ).select_for_update(skip_locked=True, of=("self",))
    )


def _write_turns(dues: list[Due], results: list, seats: list[Seat], now, next_due) -> None:
    """Write the turn log, the changed seats and the new combat states (one statement on
    PostgreSQL; bulk ORM writes elsewhere). `results` are the turns' results, in `dues`'
    order."""
    if connection.vendor == "postgresql":
        sql.run(
            connection.alias,
            _WRITE_SQL,
            [
                [d.id for d in dues],
                [r.turn for r in results],
                [r.boss_hp for r in results],
                [d.next_turn_at for d in dues],
                now,
                [s.id for s in seats],
                [s.hp for s in seats],
                [s.damage_dealt for s in seats],
                next_due,
                now,
            ],
        )
        return
    CombatTurn.objects.bulk_create(
        CombatTurn(
            combat_id=d.id, turn=r.turn, due_at=d.next_turn_at, ran_at=now, boss_hp=r.boss_hp
        )
        for d, r in zip(dues, results, strict=True)
    )
    if seats:
        Registration.objects.bulk_update(
            [Registration(id=s.id, hp=s.hp, damage_dealt=s.damage_dealt) for s in seats],
            ["hp", "damage_dealt"],
        )
    for d, r in zip(dues, results, strict=True):
        Combat.all_objects.filter(pk=d.id).update(
            turn=r.turn,
            boss_hp=r.boss_hp,
            version=F("version") + 1,
            next_turn_at=next_due,
            updated_at=now,
        )


def _advance_batch(ids: list, clock: Callable[[], datetime]) -> TickReport:
    """Resolve one turn for each of `ids` still due, in one transaction.

    `clock()` is read once, inside the transaction: the turns run at that time, are due when
    `next_turn_at <= ran_at`, and the next ones are due at the end of ran_at's tick period.
    On PostgreSQL a batch is two statements (claim and read; write) between BEGIN and COMMIT.
    """
    report = TickReport()
    started = time.perf_counter()
    with transaction.atomic():
        ran_at = clock()
        next_due = period_end(ran_at)
        dues = _claim(ids, ran_at)
        report.skipped = len(ids) - len(dues)
        if not dues:
            return report
        results, changed = [], []
        max_turns = settings.NIGHTSTORM_COMBAT_MAX_TURNS
        for due in dues:
            result = fight.resolve_turn(
                combat_id=due.id,
                turn=due.turn + 1,
                boss_hp=due.boss_hp,
                boss_attack=due.boss_attack,
                fighters=[
                    fight.Fighter(key=s.id, hp=s.hp, level=s.level, damage_dealt=s.damage_dealt)
                    for s in due.seats
                ],
                max_turns=max_turns,
            )
            by_id = {s.id: s for s in due.seats}
            for f in result.fighters:
                seat = by_id[f.key]
                if seat.hp != f.hp or seat.damage_dealt != f.damage_dealt:
                    seat.hp, seat.damage_dealt = f.hp, f.damage_dealt
                    changed.append(seat)
            results.append(result)
        _write_turns(dues, results, changed, ran_at, next_due)
        for due, result in zip(dues, results, strict=True):
            if result.outcome:
                # The finish, the freed seats and the rewards commit with the last turn (the
                # rows are ours: the combat locked by the claim, its seats just written).
                _end_locked(
                    Combat.all_objects.get(pk=due.id),
                    Combat.Status.FINISHED,
                    ran_at,
                    outcome=result.outcome,
                )
                report.finished += 1
                report.ended_events.add(due.event_id)
        report.advanced = len(dues)
    # Committed: only turns that happened are measured.
    elapsed = time.perf_counter() - started
    lateness = [max(0.0, (ran_at - due.next_turn_at).total_seconds()) for due in dues]
    for late in lateness:
        metrics.TURN_SECONDS.observe(elapsed / report.advanced)
        metrics.TICK_LATENESS.observe(late)
    report.lateness_total = sum(lateness)
    report.lateness_max = max(lateness)
    return report


def _advance_safely(ids: list, clock: Callable[[], datetime]) -> TickReport:
    try:
        return _advance_batch(ids, clock)
    except Exception as exc:
        if len(ids) > 1:
            # Isolate the broken combat: every other one still gets its turn.
            report = TickReport()
            for one in ids:
                report.add(_advance_safely([one], clock))
            return report
        metrics.TURN_FAILURES.inc()
        log.exception("combat %s: turn failed", ids[0])
        return TickReport(failed=1, failures=[(ids[0], f"{type(exc).__name__}: {exc}")])


def process_active_combats(
    *,
    now: datetime | None = None,
    parallelism: int | None = None,
    batch_size: int | None = None,
) -> TickReport:
    """Advance every due running combat by one turn; return what happened.

    Runs batches on up to `parallelism` threads (NIGHTSTORM_COMBAT_PARALLELISM), each thread
    with its own database connection, closed when the tick ends. Called inside an open
    transaction (a test's), it works inline on the caller's connection instead. A given `now`
    is the time of every batch (tests simulate time with it); otherwise each batch reads the
    clock when it starts.
    """
    started = time.perf_counter()
    clock = timezone.now if now is None else (lambda: now)
    now = clock()
    parallelism = parallelism or settings.NIGHTSTORM_COMBAT_PARALLELISM
    batch_size = batch_size or settings.NIGHTSTORM_COMBAT_BATCH_SIZE
    due = Combat.objects.filter(status=Combat.Status.RUNNING, next_turn_at__lte=now).order_by(
        "next_turn_at", "pk"
    )
    ids = list(due.values_list("pk", flat=True))
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    report = TickReport(due=len(ids))
    if parallelism <= 1 or len(batches) <= 1 or connection.in_atomic_block:
        for batch in batches:
            report.add(_advance_safely(batch, clock))
    else:
        work: queue.SimpleQueue = queue.SimpleQueue()
        for batch in batches:
            work.put(batch)
        lock = threading.Lock()

        def worker():
            try:
                while True:
                    try:
                        batch = work.get_nowait()
                    except queue.Empty:
                        return
                    part = _advance_safely(batch, clock)
                    with lock:
                        report.add(part)
            finally:
                connections.close_all()

        threads = [
            threading.Thread(target=worker, name=f"combat-turns-{n}", daemon=True)
            for n in range(min(parallelism, len(batches)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if report.ended_events:
        # After the batches committed, outside any combat lock (see game.storms.events).
        settle_events(report.ended_events)
    report.seconds = time.perf_counter() - started
    metrics.COMBATS_PER_TICK.observe(report.advanced)
    metrics.TICK_SECONDS.observe(report.seconds)
    return report


@dataclass
class RunSummary:
    """What an orchestrator did over its run (the command's exit line)."""

    ticks: int = 0
    errors: int = 0  # ticks that raised (the database away, say) and were skipped
    advanced: int = 0
    finished: int = 0
    failed: int = 0
    events_started: int = 0
    lateness_total: float = 0.0
    lateness_max: float = 0.0

    def add(self, report: TickReport) -> None:
        self.ticks += 1
        self.advanced += report.advanced
        self.finished += report.finished
        self.failed += report.failed
        self.events_started += report.events_started
        self.lateness_total += report.lateness_total
        self.lateness_max = max(self.lateness_max, report.lateness_max)

    def line(self) -> str:
        mean = self.lateness_total / self.advanced if self.advanced else 0.0
        return (
            f"{self.ticks} tick(s), {self.advanced} turn(s) advanced, "
            f"{self.finished} combat(s) finished, {self.failed} failed, "
            f"{self.events_started} event(s) started, {self.errors} tick error(s); "
            f"lateness mean {mean:.3f} s, max {self.lateness_max:.3f} s"
        )


def default_name() -> str:
    return f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}"[:100]


class Orchestrator:
    """The game loop: a tick at every tick-period boundary until `stop` is set.

    A tick starts the due events, advances every due combat once, then beats. A tick that
    raises (the database away) is logged and counted, and the loop goes on at the next
    boundary; a tick that overran the boundary is followed by the next one at once.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        batch_size: int | None = None,
        stop: threading.Event | None = None,
    ):
        self.name = name or default_name()
        self.parallelism = parallelism
        self.batch_size = batch_size
        self.stop = stop or threading.Event()

    def beat(self) -> None:
        Heartbeat.objects.update_or_create(name=self.name, defaults={"beat_at": timezone.now()})

    def retire(self) -> None:
        Heartbeat.objects.filter(name=self.name).delete()

    def tick(self) -> TickReport:
        self._refresh_connections()
        events_started = start_due_events()
        report = process_active_combats(parallelism=self.parallelism, batch_size=self.batch_size)
        report.events_started = events_started
        return report

    def run(
        self,
        *,
        ticks: int | None = None,
        on_tick: Callable[[TickReport | None], None] | None = None,
    ) -> RunSummary:
        """Tick until `stop` is set (or `ticks` ticks ran); the tick in progress always
        finishes. Removes the heartbeat on the way out."""
        summary = RunSummary()
        self._quietly(self.beat)
        self._quietly(prune_stale_orchestrators)
        try:
            while not self.stop.is_set():
                boundary = period_end(timezone.now())
                try:
                    report = self.tick()
                except Exception:
                    log.exception("orchestrator %s: tick failed", self.name)
                    summary.errors += 1
                    report = None
                else:
                    summary.add(report)
                self._quietly(self.beat)
                if on_tick:
                    on_tick(report)
                if ticks is not None and summary.ticks + summary.errors >= ticks:
                    break
                self._wait_until(boundary)
        finally:
            self._quietly(self.retire)
        return summary

    def _wait_until(self, boundary: datetime) -> None:
        """Sleep until `boundary` (at once if it has passed) or until stopped."""
        while not self.stop.is_set():
            remaining = (boundary - timezone.now()).total_seconds()
            if remaining <= 0:
                return
            self.stop.wait(remaining + 0.002)

    @staticmethod
    def _refresh_connections() -> None:
        """A long-running process: drop connections that broke or outlived DB_CONN_MAX_AGE
        before each tick (never inside a caller's transaction, e.g. a test's)."""
        if not connection.in_atomic_block:
            close_old_connections()

    def _quietly(self, fn) -> None:
        try:
            fn()
        except Exception:
            log.exception("orchestrator %s: %s failed", self.name, getattr(fn, "__name__", fn))


__all__ = [
    "Orchestrator",
    "RunSummary",
    "TickReport",
    "period_end",
    "process_active_combats",
    "tick_seconds",
]
