"""Named django-q2 schedules, kept as declared: created if missing, repaired if changed.

django-q2's `Schedule.name` is not unique by itself; our migration 0002 adds a unique index on
it, so two processes ensuring the same schedule at once cannot both insert it — the loser's
insert is ignored and it then reads the winner's row.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    func: str
    minutes: int
    args: str | None = None
    kwargs: str | None = None
    intended_date_kwarg: str | None = None
    first_run: datetime | None = field(default=None, compare=False)

    def wanted(self) -> dict:
        return {
            "func": self.func,
            "schedule_type": Schedule.MINUTES,
            "minutes": self.minutes,
            "args": self.args,
            "kwargs": self.kwargs,
            "repeats": -1,
            "intended_date_kwarg": self.intended_date_kwarg,
        }


TOOLKIT_SCHEDULES = [
    ScheduleSpec("platform:heartbeat", "nightstorm.tasks.heartbeat", minutes=1),
    ScheduleSpec("platform:drain_outbox", "nightstorm.tasks.drain_outbox", minutes=1),
    ScheduleSpec(
        "platform:prune_idempotency", "nightstorm.tasks.prune_idempotency_records", minutes=60
    ),
]


_registered: dict[str, ScheduleSpec] = {spec.name: spec for spec in TOOLKIT_SCHEDULES}


def register(specs) -> None:
    """Declare recurring schedules (from an AppConfig.ready()); every `migrate` ensures them."""
    for spec in specs:
        _registered[spec.name] = spec


def registered() -> list[ScheduleSpec]:
    return list(_registered.values())


def ensure_schedule(spec: ScheduleSpec) -> str:
    """Make the named schedule match `spec`; return "created", "repaired" or "ok"."""
    with transaction.atomic():
        row, created = Schedule.objects.get_or_create(
            name=spec.name, defaults={"next_run": spec.first_run or timezone.now(), **spec.wanted()}
        )
        if created:
            return "created"
        row = Schedule.objects.select_for_update().get(pk=row.pk)
        if _matches(row, spec):
            return "ok"
        for attr, value in spec.wanted().items():
            setattr(row, attr, value)
        row.save()
        return "repaired"


def _matches(row: Schedule, spec: ScheduleSpec) -> bool:
    return all(getattr(row, attr) == value for attr, value in spec.wanted().items())


def ensure_schedules(specs) -> dict[str, str]:
    return {spec.name: ensure_schedule(spec) for spec in specs}
