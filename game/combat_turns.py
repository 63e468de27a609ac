"""The combat orchestrator: every running combat advances by exactly one turn per tick.

`process_active_combats()` lists the running combats whose next turn is due and hands them, in
batches, to at most NIGHTSTORM_COMBAT_PARALLELISM worker threads (the bound the seed expressed
with a SemaphoreSlim). A batch is one transaction that claims its combats with
`SELECT … FOR UPDATE SKIP LOCKED`: a combat another orchestrator is processing right now is
skipped, not waited for. NIGHTSTORM_COMBAT_BATCH_SIZE (default 1) is how many combats share a
transaction: 1 keeps every combat in its own transaction; larger batches trade that isolation
for throughput (a failing batch is retried combat by combat, so one broken combat never holds
back the others).

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
from game.nightstorms import _end_locked

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

    def add(self, other: "TickReport") -> None:
        self.advanced += other.advanced
        self.finished += other.finished
        self.skipped += other.skipped
        self.failed += other.failed
        self.failures.extend(other.failures)


def tick_seconds() -> int:
    return settings.NIGHTSTORM_COMBAT_TICK_SECONDS


def period_end(now: datetime, seconds: int | None = None) -> datetime:
    """The end of the tick period containing `now` (periods aligned to the epoch)."""
    seconds = seconds or tick_seconds()
    stamp = now.timestamp()
    return datetime.fromtimestamp((stamp // seconds + 1) * seconds, tz=UTC)


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
        rows = (
            Registration.objects.filter(combat_id__in=list(seats))
            .select_related("player")
            .only("id", "combat_id", "player_id", "hp", "damage_dealt", "active", "player__level")
        )
        for seat in rows:
            seats[seat.combat_id].append(seat)
        changed_seats, changed_combats, outcomes = [], [], {}
        max_turns = settings.NIGHTSTORM_COMBAT_MAX_TURNS
        for combat in combats:
            mine = seats[combat.pk]
            by_id = {s.pk: s for s in mine}
            result = fight.resolve_turn(
                combat_id=combat.pk,
                turn=combat.turn + 1,
                boss_hp=combat.boss_hp,
                boss_attack=combat.zone.boss_attack,
                fighters=[
                    fight.Fighter(
                        key=s.pk, hp=s.hp, level=s.player.level, damage_dealt=s.damage_dealt
                    )
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
            changed_combats.append(combat)
        if changed_seats:
            Registration.objects.bulk_update(changed_seats, ["hp", "damage_dealt"])
        Combat.objects.bulk_update(
            changed_combats, ["turn", "boss_hp", "next_turn_at", "version", "updated_at"]
        )
        for combat in changed_combats:
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
        report.advanced = len(changed_combats)
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
    batch_size = batch_size or getattr(settings, "NIGHTSTORM_COMBAT_BATCH_SIZE", 1)
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
