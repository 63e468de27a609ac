"""A zone fires a storm: the django-q2 entry points of the Nightstorm schedules. Each
tolerates running twice.

Delivery is at least once (a redelivered task, two clusters, a manual trigger): the event is
keyed by (zone, slot) and `open_nightstorm` is a get-or-create on that key, so a second run of
the same slot finds the first one's event. What follows the opening (registration closes,
combats start and advance, rewards) is the orchestrator's (`game.storms.orchestrator`).
"""

import logging
from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from game.metrics import FIRES, MISSED_SLOTS
from game.models import Zone
from game.storms import health, schedules
from game.storms.events import open_nightstorm
from nightstorm.operations import operation

log = logging.getLogger(__name__)


def coalesce(due: datetime, now: datetime) -> tuple[datetime, int]:
    """The misfire policy: an overdue schedule fires once, for its latest due slot.

    Returns that slot and how many earlier slots were skipped. django-q2 (with catch_up off)
    moves the schedule's next run past `now` on the same phase.
    """
    step = schedules.interval()
    missed = max(0, int((now - due) // step))
    return due + missed * step, missed


@operation("game.fire_nightstorm")
def fire_nightstorm(zone_code: str, scheduled_at: str | None = None) -> str | None:
    """Open the Nightstorm of `zone_code` for the slot the schedule was due at."""
    now = timezone.now()
    due = parse_datetime(scheduled_at) if scheduled_at else None
    if due is None:
        log.warning("nightstorm %s fired without a due time; using now", zone_code)
        due = now.replace(second=0, microsecond=0)
    slot, missed = coalesce(due, now)
    if missed:
        MISSED_SLOTS.labels(zone_code).inc(missed)
        log.warning(
            "nightstorm %s was %d slot(s) overdue; firing once for %s", zone_code, missed, slot
        )
    try:
        event = open_nightstorm(zone=zone_code, slot=slot)
    except Zone.DoesNotExist:
        FIRES.labels("unknown_zone").inc()
        log.error("nightstorm schedule for unknown zone %s; the next check removes it", zone_code)
        return None
    FIRES.labels("opened").inc()
    return str(event.pk)


def trigger_now(zone_code: str) -> str:
    """A game master's "open now": the slot is the current minute, so triggering twice in the
    same minute opens one event."""
    slot = timezone.now().replace(second=0, microsecond=0)
    return str(open_nightstorm(zone=zone_code, slot=slot).pk)


def watchdog() -> str:
    """Periodic safety net: the same schedule check the cluster runs at start, and a look at
    the orchestrators' heartbeats (a missing orchestrator is logged; stale beats pruned)."""
    summary = schedules.check_schedules_quietly().summary()
    health.prune_stale_orchestrators()
    state, details = health.check_orchestrators()
    if state != health.OK:
        log.warning("combat orchestrator: %s", details["reason"])
        summary += f"; orchestrator: {details['reason']}"
    return summary
