"""A game master's hand on a zone's Nightstorm schedule: skip the next one, pause, resume.

They change the zone's django-q2 `Schedule` row under the same distributed lock as the schedule
check (`schedules.LOCK_KEY`), so a check running at the same moment cannot undo them halfway,
and they leave the row in a shape the check accepts: a skip moves `next_run` one interval later
on the zone's phase; a pause sets `repeats` to `schedules.PAUSED_REPEATS` (django-q2 does not run
such a row and the check leaves it paused); a resume puts `repeats` back and the next run on the
zone's phase after now. Each returns what changed as `{field: (old, new)}` for the audit trail.
"""

from contextlib import contextmanager
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from game.models import Zone
from game.storms import schedules
from nightstorm.errors import DomainError
from nightstorm.locks import check_fence, distributed_lock


class NoSchedule(DomainError):
    code = "no_schedule"
    status = 409
    detail = "This zone has no Nightstorm schedule yet; run the schedule check first."


@contextmanager
def _locked_schedule(zone_code: str):
    """The zone's schedule row, locked, under the schedule check's lock and fence."""
    with (
        distributed_lock(schedules.LOCK_KEY, ttl=30, wait=10) as lease,
        transaction.atomic(durable=True),
    ):
        check_fence(schedules.LOCK_KEY, lease.fence)
        name = schedules.schedule_name(zone_code)
        row = Schedule.objects.select_for_update().filter(name=name).first()
        if row is None:
            raise NoSchedule()
        yield row


def _phase_slot(zone_code: str, now: datetime) -> datetime:
    codes = list(Zone.objects.order_by("code").values_list("code", flat=True))
    return schedules.next_slot(codes.index(zone_code), len(codes), now)


def skip_next(*, zone_code: str, now: datetime | None = None) -> dict:
    """The zone's next Nightstorm does not happen; the one after it does, on time."""
    with _locked_schedule(zone_code) as row:
        before = row.next_run
        base = before or _phase_slot(zone_code, now or timezone.now())
        row.next_run = base + schedules.interval()
        row.save(update_fields=["next_run"])
    return {"next Nightstorm": (before, row.next_run)}


def pause(*, zone_code: str) -> dict:
    """No Nightstorm opens in the zone until `resume`; the schedule row stays (and counted)."""
    with _locked_schedule(zone_code) as row:
        before = row.repeats
        row.repeats = schedules.PAUSED_REPEATS
        row.save(update_fields=["repeats"])
    return {"paused": (before == schedules.PAUSED_REPEATS, True)}


def resume(*, zone_code: str, now: datetime | None = None) -> dict:
    """Undo `pause`: the next Nightstorm comes at the zone's next slot after now."""
    now = now or timezone.now()
    with _locked_schedule(zone_code) as row:
        was_paused, before = schedules.is_paused(row), row.next_run
        row.repeats = schedules.wanted_fields(zone_code)["repeats"]
        if was_paused or row.next_run is None or row.next_run < now:
            row.next_run = _phase_slot(zone_code, now)
        row.save(update_fields=["repeats", "next_run"])
    return {"paused": (was_paused, False), "next Nightstorm": (before, row.next_run)}
