"""Reads that take more than one query: a player as of now, zones with their next Nightstorm,
events with their combats and seat counts (a fixed number of queries however many rows).
Reads never write."""

import functools
from datetime import datetime

from django.db import router
from django.db.models import Exists, F, OuterRef, Prefetch, Subquery, Value
from django.db.models.functions import Concat
from django.utils import timezone

from game.models import Combat, Journey, NightstormEvent, Player, Zone
from nightstorm import sql


def player_as_of(*, user, now: datetime | None = None) -> tuple[Player, Journey | None] | None:
    """The user's player and the journey in flight as they stand at `now` (two queries), or
    None without a player.

    A journey that is due shows as landed: the player is in its destination and travels no
    more. Nothing is written: the `game:arrivals` task, or the player's next journey, lands it
    in the database (`game.travel`), so a GET stays a read however many clients poll.
    """
    player = Player.objects.select_related("zone").filter(user=user).first()
    if player is None:
        return None
    return player, journey_as_of(player, now=now)


def journey_as_of(player: Player, *, now: datetime | None = None) -> Journey | None:
    """`player`'s journey in flight as it stands at `now` (one query); a due one shows as
    landed: `player.zone` becomes its destination (in memory only) and None is returned."""
    now = now or timezone.now()
    journey = (
        Journey.objects.select_related("origin", "destination")
        .filter(player=player, arrived_at__isnull=True)
        .first()
    )
    if journey is not None and journey.arrives_at <= now:
        player.zone = journey.destination
        journey = None
    return journey


@functools.cache
def _zones_sql() -> str:
    from django_q.models import Schedule

    return f"""
    SELECT coalesce(json_agg(json_build_object(
               'code', z.code, 'name', z.name, 'region', z.region,
               'next_nightstorm_at', {sql.json_datetime("s.next_run")}
           ) ORDER BY z.code), '[]')::text
      FROM {Zone._meta.db_table} z
      LEFT JOIN LATERAL (SELECT next_run FROM {Schedule._meta.db_table}
                          WHERE name = CAST(%s AS text) || z.code
                          ORDER BY next_run LIMIT 1) s ON true
    """


def zones_json() -> str:
    """PostgreSQL: `zones_with_next_nightstorm()` rendered by the database as a JSON array
    (text): the worker neither builds nor encodes 81 rows on one of the most read endpoints."""
    from game.storms.schedules import PREFIX

    ((text,),) = sql.run(router.db_for_read(Zone), _zones_sql(), [PREFIX])
    return text


def zones_with_next_nightstorm() -> list[dict]:
    """All zones as `{code, name, region, next_nightstorm_at}` (the time from the zone's
    django-q2 schedule, None if it has none), in one query and without model instances: the
    zones list is one of the most read endpoints."""
    from django_q.models import Schedule

    from game.storms.schedules import PREFIX

    schedule = Schedule.objects.filter(name=Concat(Value(PREFIX), OuterRef("code")))
    return list(
        Zone.objects.order_by("code")
        .annotate(next_nightstorm_at=Subquery(schedule.values("next_run")[:1]))
        .values("code", "name", "region", "next_nightstorm_at")
    )


def player_of_user(user):
    """The user's player with its zone and `traveling` (a journey is in flight). One query;
    None when the user has no player."""
    in_flight = Journey.objects.filter(player=OuterRef("pk"), arrived_at__isnull=True)
    return (
        Player.objects.select_related("zone")
        .annotate(traveling=Exists(in_flight))
        .filter(user=user)
        .first()
    )


def zone_storm_annotations() -> dict:
    """Per-zone columns for the admin: the schedule's next run, its last task's start and
    outcome, and the latest event's slot and state (subqueries: one query for the page)."""
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


def nightstorm_event_rows():
    """Events newest first, as rows of `id, zone (code), slot, state` (paginate, then call
    `with_combats` on the page): the API's list, without model instances."""
    return (
        NightstormEvent.objects.order_by("-slot", "zone__code")
        .annotate(zone_code=F("zone__code"))
        .values("id", "zone_code", "slot", "state")
    )


# A page of events rendered by PostgreSQL in the API's shape (JSON text: the worker neither
# parses nor encodes it), with the length of the whole list (a window count, taken before
# LIMIT), in one statement. `json` (not `jsonb`) keeps the keys in order. The page's combats
# are aggregated in one grouped pass, not by a subquery per event: a third less server time
# for a full page (50 events, 150 combats).
_EVENT_PAGE_SQL = f"""
WITH page AS (
    SELECT e.id, z.code, e.slot, e.state, count(*) OVER () AS total
      FROM {NightstormEvent._meta.db_table} e JOIN {Zone._meta.db_table} z ON z.id = e.zone_id
     ORDER BY e.slot DESC, z.code
     LIMIT %s OFFSET %s
), combats AS (
    SELECT c.event_id, json_agg(json_build_object(
               'id', c.id, 'status', c.status, 'capacity', c.capacity,
               'participant_count', c.seats) ORDER BY c.index) AS list
      FROM {Combat._meta.db_table} c
     WHERE c.event_id IN (SELECT id FROM page) AND c.deleted_at IS NULL
     GROUP BY c.event_id
)
SELECT max(p.total), coalesce(json_agg(json_build_object(
           'id', p.id,
           'zone', p.code,
           'slot', {sql.json_datetime("p.slot")},
           'state', p.state,
           'combats', coalesce(c.list, '[]')
       ) ORDER BY p.slot DESC, p.code), '[]')::text
  FROM page p LEFT JOIN combats c ON c.event_id = p.id
"""


def nightstorm_event_page(limit: int, offset: int) -> tuple[str, int | None]:
    """PostgreSQL: a page of `nightstorm_event_rows()` already `with_combats`, as a JSON array
    (text), and the number of events in the whole list (None when the page is empty)."""
    ((total, page),) = sql.run(
        router.db_for_read(NightstormEvent), _EVENT_PAGE_SQL, [limit, offset]
    )
    return page, total


def with_combats(events: list[dict]) -> list[dict]:
    """The page of `nightstorm_event_rows()` rendered with each event's combats and seat counts:
    one more query for the whole page."""
    combats: dict = {e["id"]: [] for e in events}
    rows = (
        Combat.objects.filter(event_id__in=list(combats))
        .order_by("event_id", "index")
        .values_list("event_id", "id", "status", "capacity", "seats")
    )
    for event_id, pk, status, capacity, seats in rows:
        combats[event_id].append(
            {"id": pk, "status": status, "capacity": capacity, "participant_count": seats}
        )
    return [
        {
            "id": e["id"],
            "zone": e["zone_code"],
            "slot": e["slot"],
            "state": e["state"],
            "combats": combats[e["id"]],
        }
        for e in events
    ]
