"""Every zone's Nightstorm schedule: exactly one, correct, staggered — checked and healed.

Each zone has one django-q2 `Schedule` named `nightstorm:<zone code>` that calls
`game.storms.firing.fire_nightstorm('<code>', scheduled_at=<its due time>)` every
NIGHTSTORM_INTERVAL_MINUTES. `check_schedules()` runs when the task cluster starts (a worker's
`post_spawn`), from a watchdog schedule every few minutes and on demand (`manage.py
ensure_schedules`). It creates missing schedules, repairs wrong ones (function — a row still
naming a function path from before a module move is rewritten —, arguments, interval, repeats,
a missing next run), and deletes orphans (a zone's schedule whose zone is gone, or any other
schedule calling the Nightstorm job). It also keeps the game's declared recurring schedules
(`game.schedules`) as declared and deletes `game:` schedules no longer declared.

Why it cannot create duplicates: schedule names are unique in the database (the platform's
migration adds the index django-q2 lacks), and the whole check runs under a distributed lock,
so two processes checking at once serialise and the second finds nothing left to change.

Staggering: zone i of n fires at `i * interval / n` past each interval boundary (boundaries
counted from the Unix epoch), so the 81 zones spread evenly instead of firing together, and a
schedule recreated later lands on the same phase.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from game import schedules as game_schedules
from game.models import Zone
from nightstorm.errors import LockUnavailable
from nightstorm.locks import check_fence, distributed_lock
from nightstorm.models import StatusReport

log = logging.getLogger(__name__)

PREFIX = "nightstorm:"
FUNC = "game.storms.firing.fire_nightstorm"
# Where the job lived before: rows still naming it are repaired (or deleted as strays).
LEGACY_FUNCS = ("game.storm_tasks.fire_nightstorm",)
SLOT_KWARG = "scheduled_at"
LOCK_KEY = "game:schedules:check"
LOCK_TTL_SECONDS = 120  # longer than any check; a holder killed mid-check blocks others this long
REPORT_NAME = "nightstorm-schedules"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def schedule_name(zone_code: str) -> str:
    return f"{PREFIX}{zone_code}"


def interval() -> timedelta:
    return timedelta(minutes=settings.NIGHTSTORM_INTERVAL_MINUTES)


def zone_offset(index: int, count: int) -> timedelta:
    return interval() * index / max(count, 1)


def next_slot(index: int, count: int, now: datetime | None = None) -> datetime:
    """The zone's next due time after `now`, on its staggered phase."""
    now = now or timezone.now()
    step, offset = interval(), zone_offset(index, count)
    periods = (now - EPOCH - offset) // step + 1
    return (EPOCH + offset + periods * step).replace(microsecond=0)


def wanted_fields(zone_code: str) -> dict:
    return {
        "func": FUNC,
        "args": repr(zone_code),
        "kwargs": None,
        "schedule_type": Schedule.MINUTES,
        "minutes": settings.NIGHTSTORM_INTERVAL_MINUTES,
        "repeats": -1,
        "intended_date_kwarg": SLOT_KWARG,
        "cluster": None,
    }


@dataclass
class CheckReport:
    created: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    ok: int = 0
    skipped: bool = False
    game: list[str] = field(default_factory=list)  # changes to the game's own schedules

    @property
    def changed(self) -> bool:
        return bool(self.created or self.repaired or self.deleted or self.game)

    @property
    def changes(self) -> list[str]:
        return self.created + self.repaired + self.deleted + self.game

    def summary(self) -> str:
        if self.skipped:
            return "schedules: another process is checking them; skipped"
        line = (
            f"schedules: {len(self.created)} created, {len(self.repaired)} repaired, "
            f"{len(self.deleted)} orphans deleted, {self.ok} already right"
        )
        if self.game:
            line += f"; game schedules: {', '.join(self.game)}"
        return line

    def as_dict(self) -> dict:
        return {
            "created": self.created,
            "repaired": self.repaired,
            "deleted": self.deleted,
            "game": self.game,
            "ok": self.ok,
            "skipped": self.skipped,
            "checked_at": timezone.now().isoformat(),
        }


# A game master's pause (`game.storms.controls.pause`): django-q2 never runs a schedule whose
# `repeats` is 0, and the check leaves such a row paused instead of "repairing" it.
PAUSED_REPEATS = 0


def is_paused(row: Schedule) -> bool:
    return row.repeats == PAUSED_REPEATS


def _differences(row: Schedule, wanted: dict) -> list[str]:
    diffs = [
        name
        for name, value in wanted.items()
        if getattr(row, name) != value and not (name == "repeats" and is_paused(row))
    ]
    if row.next_run is None:
        diffs.append("next_run")
    return diffs


def check_schedules(*, wait: float = 30.0) -> CheckReport:
    """Make the Nightstorm schedules exactly one per zone and correct; report what changed.

    Raises LockUnavailable when another check holds the lock longer than `wait` seconds.
    """
    with distributed_lock(LOCK_KEY, ttl=LOCK_TTL_SECONDS, wait=wait) as lease:
        report = _check(lease.fence)
    _remember(report)
    for line in report.changes:
        log.debug("schedule check: %s", line)
    if report.changed:
        log.info(report.summary())
    return report


def check_schedules_quietly() -> CheckReport:
    """The startup/watchdog flavour: a check already running elsewhere is enough."""
    try:
        return check_schedules(wait=0)
    except LockUnavailable:
        return CheckReport(skipped=True)


def _check(fence: int) -> CheckReport:
    report = CheckReport()
    zones = list(Zone.objects.order_by("code").values_list("code", flat=True))
    wanted_names = {schedule_name(code) for code in zones}
    with transaction.atomic():
        # A checker whose lease expired mid-check (paused, slow) must not write after a newer
        # one: the fence refuses its token and the transaction rolls back.
        check_fence(LOCK_KEY, fence)
        orphans = Schedule.objects.filter(name__startswith=PREFIX).exclude(name__in=wanted_names)
        strays = Schedule.objects.filter(func__in=[FUNC, *LEGACY_FUNCS]).exclude(
            name__in=wanted_names
        )
        for row in (orphans | strays).distinct():
            report.deleted.append(f"{row.name or row.pk}: deleted (no such zone)")
            row.delete()

        existing = {
            row.name: row
            for row in Schedule.objects.select_for_update().filter(name__in=wanted_names)
        }
        for index, code in enumerate(zones):
            name, wanted = schedule_name(code), wanted_fields(code)
            row = existing.get(name)
            if row is None:
                Schedule.objects.create(name=name, next_run=next_slot(index, len(zones)), **wanted)
                report.created.append(f"{name}: created")
                continue
            diffs = _differences(row, wanted)
            if not diffs:
                report.ok += 1
                continue
            for attr, value in wanted.items():
                setattr(row, attr, value)
            if row.next_run is None or "minutes" in diffs:
                row.next_run = next_slot(index, len(zones))
            row.save()
            report.repaired.append(f"{name}: repaired {', '.join(diffs)}")

        # The game's own recurring schedules: declared ones as declared (a function path
        # from before a module move is rewritten), retired ones (game:combat_tick) deleted.
        for name, outcome in game_schedules.keep_declared().items():
            why = " (no longer declared)" if outcome == "deleted" else ""
            report.game.append(f"{name}: {outcome}{why}")
    return report


def _remember(report: CheckReport) -> None:
    """Keep the last check's result where the admin page and health check can read it."""
    StatusReport.objects.update_or_create(
        name=REPORT_NAME, defaults={"data": report.as_dict(), "updated_at": timezone.now()}
    )


def last_report() -> dict | None:
    row = StatusReport.objects.filter(name=REPORT_NAME).first()
    return row.data if row else None


def zone_schedules() -> dict[str, Schedule]:
    """The Nightstorm schedule of each zone code that has one."""
    return {
        row.name.removeprefix(PREFIX): row
        for row in Schedule.objects.filter(name__startswith=PREFIX)
    }


def problems(now: datetime | None = None) -> list[str]:
    """What is wrong with the schedules right now (empty when all is well)."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.NIGHTSTORM_SCHEDULE_GRACE_SECONDS)
    codes = set(Zone.objects.values_list("code", flat=True))
    rows = zone_schedules()
    found = []
    missing = sorted(codes - set(rows))
    if missing:
        found.append(f"{len(missing)} zone(s) without a schedule: {', '.join(missing[:10])}")
    overdue = sorted(
        code
        for code, row in rows.items()
        if row.next_run and row.next_run < now - grace and not is_paused(row)
    )
    if overdue:
        found.append(f"{len(overdue)} schedule(s) overdue: {', '.join(overdue[:10])}")
    wrong = sorted(
        code
        for code, row in rows.items()
        if code in codes and _differences(row, wanted_fields(code))
    )
    if wrong:
        found.append(f"{len(wrong)} schedule(s) misconfigured: {', '.join(wrong[:10])}")
    return found
