"""Reads that take more than one query: zones with their next Nightstorm, events with their
combats and seat counts (a fixed number of queries however many rows)."""

from django.db.models import F, Prefetch

from game.models import Combat, NightstormEvent, Zone


def zones_with_next_nightstorm() -> list[Zone]:
    """All zones, each with `next_nightstorm_at` from its django-q2 schedule (None if none)."""
    from game.storms.schedules import zone_schedules

    schedules = zone_schedules()
    zones = list(Zone.objects.order_by("code"))
    for zone in zones:
        schedule = schedules.get(zone.code)
        zone.next_nightstorm_at = schedule.next_run if schedule else None
    return zones


def zone_storm_annotations() -> dict:
    """Per-zone columns for the admin: the schedule's next run, its last task's start and
    outcome, and the latest event's slot and state (subqueries: one query for the page)."""
    from django.db.models import OuterRef, Subquery, Value
    from django.db.models.functions import Concat
    from django_q.models import Schedule, Task

    from game.storms.schedules import PREFIX

    def zone_schedule(code):
        return Schedule.objects.filter(name=Concat(Value(PREFIX), code))

    schedule = zone_schedule(OuterRef("code"))
    last_task = Task.objects.filter(
        id=Subquery(zone_schedule(OuterRef(OuterRef("code"))).values("task")[:1])
    )
    latest = NightstormEvent.objects.filter(zone=OuterRef("pk")).order_by("-slot")
    return {
        "next_run": Subquery(schedule.values("next_run")[:1]),
        "last_run_at": Subquery(last_task.values("started")[:1]),
        "last_run_ok": Subquery(last_task.values("success")[:1]),
        "last_event_slot": Subquery(latest.values("slot")[:1]),
        "last_event_state": Subquery(latest.values("state")[:1]),
    }


def combats_with_counts():
    """Combats with `participant_count`: the seats counter, which is the count of their
    registration rows (see `Combat.seats`), so no join or aggregate is needed."""
    return Combat.objects.annotate(participant_count=F("seats"))


def nightstorm_events():
    """Events newest first, with their combats and seat counts prefetched (3 queries a page)."""
    return (
        NightstormEvent.objects.select_related("zone")
        .order_by("-slot", "zone__code")
        .prefetch_related(Prefetch("combats", queryset=combats_with_counts().order_by("index")))
    )
