"""Reads that take more than one query: a player as of now, zones with their next Nightstorm,
events with their combats and seat counts (a fixed number of queries however many rows).
Reads never write."""

from datetime import datetime

from django.db.models import Count, Prefetch
from django.utils import timezone

from game.models import Combat, Journey, NightstormEvent, Player, Zone


def player_as_of(*, user, now: datetime | None = None) -> tuple[Player, Journey | None] | None:
    """The user's player and the journey in flight as they stand at `now` (two queries), or
    None without a player.

    A journey that is due shows as landed: the player is in its destination and travels no
    more. Nothing is written: the `game:arrivals` task, or the player's next journey, lands it
    in the database (`game.travel`), so a GET stays a read however many clients poll.
    """
    now = now or timezone.now()
    player = Player.objects.select_related("zone").filter(user=user).first()
    if player is None:
        return None
    journey = (
        Journey.objects.select_related("origin", "destination")
        .filter(player=player, arrived_at__isnull=True)
        .first()
    )
    if journey is not None and journey.arrives_at <= now:
        player.zone = journey.destination
        journey = None
    return player, journey


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
    return Combat.objects.annotate(participant_count=Count("registrations"))


def nightstorm_events():
    """Events newest first, with their combats and seat counts prefetched (3 queries a page)."""
    return (
        NightstormEvent.objects.select_related("zone")
        .order_by("-slot", "zone__code")
        .prefetch_related(Prefetch("combats", queryset=combats_with_counts().order_by("index")))
    )
