"""The combat orchestrator: every running combat advances by exactly one turn per tick.

`process_active_combats()` lists the running combats whose next turn is due and hands them, in
batches, to at most NIGHTSTORM_COMBAT_PARALLELISM worker threads (the bound the seed expressed
with a SemaphoreSlim). A batch is one transaction that claims its combats with
`SELECT … FOR UPDATE SKIP LOCKED`: a combat another orchestrator is processing right now is
skipped, not waited for.

NIGHTSTORM_COMBAT_BATCH_SIZE (default 25) is how many combats share a transaction. With 1,
every combat has its own transaction, but a commit per combat caps a tick at ~200-300
combats/s on a 2-core machine (plain SQL doing the same work is capped the same way); with 25
a tick runs well above 1,000 combats/s. Isolation is kept where it matters: if a batch fails,
it is rolled back and replayed combat by combat, each in its own transaction, so one broken
combat never holds back the others, and a turn is deterministic, so replaying it gives the
same result.

SKIP LOCKED alone does not stop a second orchestrator that runs just *after* the first
committed. So every turn also moves the combat's `next_turn_at` to the end of the current tick
period (ticks are aligned to multiples of NIGHTSTORM_COMBAT_TICK_SECONDS since the epoch), and
only combats with `next_turn_at <= now` are due: within one tick period a combat advances once,
however many orchestrators run.

Reads are batched (the participants of all claimed combats in one query) and writes are bulk
updates; the fight itself is the pure function `game.fight.resolve_turn`.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from game import fight, metrics
from game.models import Combat, Registration
from game.nightstorms import _end_locked, settle_events

log = logging.getLogger(__name__)

GUARD_TURNS = True  # tests flip this to demonstrate the race; never change it in code


@dataclass
class TickReport:
    due: int = 0
    advanced: int = 0
    finished: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    ended_events: set = field(default_factory=set)

    def add(self, other: "TickReport") -> None:
        self.advanced += other.advanced
        self.finished += other.finished
        self.skipped += other.skipped
        self.failed += other.failed
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


def _write_turns(seats: list[Seat], combats: list[Combat], now: datetime) -> None:
    """Write the new seat and combat states: on PostgreSQL one UPDATE … FROM unnest(…) per
    table (Django's bulk_update builds a CASE expression per row and costs far more CPU than
    the database work); elsewhere bulk_update."""
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


def _advance_batch(ids: list, now: datetime, next_due: datetime) -> TickReport:
    """Resolve one turn for each of `ids` still due, in one transaction."""
    report = TickReport()
    started = time.perf_counter()
    with transaction.atomic():
        claim = Combat.objects.filter(pk__in=ids, status=Combat.Status.RUNNING)
        if GUARD_TURNS:
            # Skip combats another orchestrator holds; re-check due-ness under the lock (it
            # may have advanced them since we listed them).
            claim = claim.select_for_update(skip_locked=True, of=("self",)).filter(
                next_turn_at__lte=now
            )
        combats = list(claim.select_related("zone").order_by("pk"))
        report.skipped = len(ids) - len(combats)
        if not combats:
            return report
        seats: dict = {c.pk: [] for c in combats}
        rows = Registration.objects.filter(combat_id__in=list(seats)).values_list(
            "id", "combat_id", "player_id", "hp", "damage_dealt", "player__level"
        )
        for row in rows:
            seats[row[1]].append(Seat(*row))
        changed_seats, outcomes = [], {}
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
            combat.turn = result.turn
            combat.boss_hp = result.boss_hp
            combat.next_turn_at = next_due
            combat.version += 1
            combat.updated_at = now
            outcomes[combat.pk] = result.outcome
        _write_turns(changed_seats, combats, now)
        for combat in combats:
            if outcomes[combat.pk]:
                # The finish, the freed seats and the rewards commit with the last turn.
                _end_locked(
                    combat,
                    Combat.Status.FINISHED,
                    now,
                    outcome=outcomes[combat.pk],
                    registrations=seats[combat.pk],
                )
                report.finished += 1
                report.ended_events.add(combat.event_id)
        report.advanced = len(combats)
    elapsed = time.perf_counter() - started
    for _ in range(report.advanced):
        metrics.TURN_SECONDS.observe(elapsed / report.advanced)
    return report


def _advance_safely(ids: list, now: datetime, next_due: datetime) -> TickReport:
    try:
        return _advance_batch(ids, now, next_due)
    except Exception as exc:
        if len(ids) > 1:
            # Isolate the broken combat: every other one still gets its turn.
            report = TickReport()
            for one in ids:
                report.add(_advance_safely([one], now, next_due))
            return report
        metrics.TURN_FAILURES.inc()
        log.exception("combat %s: turn failed", ids[0])
        return TickReport(failed=1, failures=[(ids[0], f"{type(exc).__name__}: {exc}")])


def process_active_combats(
    *,
    now: datetime | None = None,
    parallelism: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
) -> TickReport:
    """Advance every due running combat by one turn; return what happened.

    Runs batches on up to `parallelism` threads (NIGHTSTORM_COMBAT_PARALLELISM), each thread
    with its own database connection, closed when the tick ends. Called inside an open
    transaction (a test's), it works inline on the caller's connection instead.
    """
    started = time.perf_counter()
    now = now or timezone.now()
    next_due = period_end(now)
    parallelism = parallelism or settings.NIGHTSTORM_COMBAT_PARALLELISM
    batch_size = batch_size or settings.NIGHTSTORM_COMBAT_BATCH_SIZE
    due = Combat.objects.filter(status=Combat.Status.RUNNING, next_turn_at__lte=now).order_by(
        "next_turn_at", "pk"
    )
    ids = list(due.values_list("pk", flat=True)[: limit or None])
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    report = TickReport(due=len(ids))
    if parallelism <= 1 or len(batches) <= 1 or connection.in_atomic_block:
        for batch in batches:
            report.add(_advance_safely(batch, now, next_due))
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
                    part = _advance_safely(batch, now, next_due)
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
        # After the batches committed, outside any combat lock (see game.nightstorms).
        settle_events(report.ended_events)
    report.seconds = time.perf_counter() - started
    metrics.COMBATS_PER_TICK.observe(report.advanced)
    metrics.TICK_SECONDS.observe(report.seconds)
    return report


def run_ticks(
    *,
    duration: float | None = None,
    ticks: int | None = None,
    stop: threading.Event | None = None,
    on_tick=None,
) -> list[TickReport]:
    """Run a tick at every tick-period boundary for `duration` seconds or `ticks` ticks.

    Used by the `game:combat_tick` schedule (just under a minute per run, since django-q2
    fires schedules at most about once a minute) and by `manage.py process_combats --loop`.
    """
    from game.nightstorms import start_due_events

    reports = []
    stop = stop or threading.Event()
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set():
        start_due_events()
        report = process_active_combats()
        reports.append(report)
        if on_tick:
            on_tick(report)
        if ticks is not None and len(reports) >= ticks:
            break
        wait = (period_end(timezone.now()) - timezone.now()).total_seconds()
        if deadline is not None and time.monotonic() + wait >= deadline:
            break
        stop.wait(max(0.0, wait) + 0.01)
    return reports


__all__ = ["TickReport", "period_end", "process_active_combats", "run_ticks"]
