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

Reads are batched (the participants of all claimed combats in one query) and writes are bulk
statements; the fight itself is the pure function `game.fight.resolve_turn`.
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
from django.utils import timezone

from game import fight, metrics
from game.models import Combat, CombatTurn, Registration
from game.storms.events import _end_locked, settle_events, start_due_events
from game.storms.health import HEARTBEAT_PREFIX, prune_stale_orchestrators
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
    combat_id: object
    player_id: object
    hp: int
    damage_dealt: int
    level: int


def _claim(ids: list, now: datetime) -> list[Combat]:
    """Lock those of `ids` that are still running and due at `now`, skipping any combat another
    orchestrator holds; the due re-check under the lock sees a turn another orchestrator
    committed since the combats were listed."""
    return list(
        Combat.objects.filter(pk__in=ids, status=Combat.Status.RUNNING, next_turn_at__lte=now)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("zone")
        .order_by("pk")
    )


def _write_turns(
    seats: list[Seat], combats: list[Combat], log_rows: list[CombatTurn], now: datetime
) -> None:
    """Write the new seat and combat states and the turn log: on PostgreSQL one UPDATE … FROM
    unnest(…) per table (Django's bulk_update builds a CASE expression per row and costs far
    more CPU than the database work); elsewhere bulk_update. The log is one INSERT."""
    CombatTurn.objects.bulk_create(log_rows)
    if connection.vendor != "postgresql":
        if seats:
            objs = [Registration(id=s.id, hp=s.hp, damage_dealt=s.damage_dealt) for s in seats]
            Registration.objects.bulk_update(objs, ["hp", "damage_dealt"])
        Combat.objects.bulk_update(
            combats, ["turn", "boss_hp", "next_turn_at", "version", "updated_at"]
        )
        return
    with connection.cursor() as cursor:
        if seats:
            cursor.execute(
                f"UPDATE {Registration._meta.db_table} AS r SET hp = v.hp, "
                "damage_dealt = v.damage FROM unnest(%s::bigint[], %s::integer[], "
                "%s::integer[]) AS v(id, hp, damage) WHERE r.id = v.id",
                [[s.id for s in seats], [s.hp for s in seats], [s.damage_dealt for s in seats]],
            )
        cursor.execute(
            f"UPDATE {Combat._meta.db_table} AS c SET turn = v.turn, boss_hp = v.boss_hp, "
            "version = v.version, next_turn_at = %s, updated_at = %s "
            "FROM unnest(%s::uuid[], %s::integer[], %s::integer[], %s::integer[]) "
            "AS v(id, turn, boss_hp, version) WHERE c.id = v.id",
            [
                combats[0].next_turn_at,
                now,
                [c.pk for c in combats],
                [c.turn for c in combats],
                [c.boss_hp for c in combats],
                [c.version for c in combats],
            ],
        )


def _advance_batch(ids: list, clock: Callable[[], datetime]) -> TickReport:
    """Resolve one turn for each of `ids` still due, in one transaction.

    `clock()` is read once, inside the transaction: the turns run at that time, are due when
    `next_turn_at <= ran_at`, and the next ones are due at the end of ran_at's tick period.
    """
    report = TickReport()
    started = time.perf_counter()
    lateness = []
    with transaction.atomic():
        ran_at = clock()
        next_due = period_end(ran_at)
        combats = _claim(ids, ran_at)
        report.skipped = len(ids) - len(combats)
        if not combats:
            return report
        seats: dict = {c.pk: [] for c in combats}
        rows = Registration.objects.filter(combat_id__in=list(seats)).values_list(
            "id", "combat_id", "player_id", "hp", "damage_dealt", "player__level"
        )
        for row in rows:
            seats[row[1]].append(Seat(*row))
        changed_seats, outcomes, log_rows = [], {}, []
        max_turns = settings.NIGHTSTORM_COMBAT_MAX_TURNS
        for combat in combats:
            mine = seats[combat.pk]
            by_id = {s.id: s for s in mine}
            result = fight.resolve_turn(
                combat_id=combat.pk,
                turn=combat.turn + 1,
                boss_hp=combat.boss_hp,
                boss_attack=combat.zone.boss_attack,
                fighters=[
                    fight.Fighter(key=s.id, hp=s.hp, level=s.level, damage_dealt=s.damage_dealt)
                    for s in mine
                ],
                max_turns=max_turns,
            )
            for f in result.fighters:
                seat = by_id[f.key]
                if (seat.hp, seat.damage_dealt) != (f.hp, f.damage_dealt):
                    seat.hp, seat.damage_dealt = f.hp, f.damage_dealt
                    changed_seats.append(seat)
            due_at = combat.next_turn_at
            lateness.append(max(0.0, (ran_at - due_at).total_seconds()))
            log_rows.append(
                CombatTurn(
                    combat_id=combat.pk,
                    turn=result.turn,
                    due_at=due_at,
                    ran_at=ran_at,
                    boss_hp=result.boss_hp,
                )
            )
            combat.turn = result.turn
            combat.boss_hp = result.boss_hp
            combat.next_turn_at = next_due
            combat.version += 1
            combat.updated_at = ran_at
            outcomes[combat.pk] = result.outcome
        _write_turns(changed_seats, combats, log_rows, ran_at)
        for combat in combats:
            if outcomes[combat.pk]:
                # The finish, the freed seats and the rewards commit with the last turn.
                _end_locked(
                    combat,
                    Combat.Status.FINISHED,
                    ran_at,
                    outcome=outcomes[combat.pk],
                    registrations=seats[combat.pk],
                )
                report.finished += 1
                report.ended_events.add(combat.event_id)
        report.advanced = len(combats)
    # Committed: only turns that happened are measured.
    elapsed = time.perf_counter() - started
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
