"""Journeys between zones: start one, and apply arrivals when they are due.

One journey in flight per player is a partial unique index (`game_journey_one_in_flight`); the
service also checks first, under the player's row lock, to answer with a clear 409 — but two
requests that both passed a check would still not both insert.

A player in an open or running combat cannot leave. Registration locks the player row after
the combat row, and travel locks the player row, so the two cannot interleave.

Arrival is applied lazily (when the player is read) and by the `game:arrivals` schedule.
"""

from datetime import datetime, timedelta

from django.db import IntegrityError, connection
from django.db.models import F
from django.utils import timezone

from game import metrics
from game.errors import AlreadyThere, AlreadyTraveling, InCombat, NoPlayer, UnknownZone
from game.models import Journey, Player, Route, Zone
from nightstorm.errors import DomainError
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout, set_lock_timeout, transient_retry

# A zone pair without a seeded route (only in hand-made test data).
FALLBACK_SECONDS = 60
LOCK_PLAYER_ROW = True  # tests flip this to demonstrate the race; never change it in code


def _arrive_locked(journey: Journey, now: datetime) -> None:
    Journey.objects.filter(pk=journey.pk, arrived_at__isnull=True).update(arrived_at=now)
    Player.all_objects.filter(pk=journey.player_id).update(
        zone_id=journey.destination_id, version=F("version") + 1, updated_at=now
    )


# The player (locked), the journey in flight and whether it is due, whether the player holds an
# active seat, and the route's time, in one round trip. Plain SQL because this is the hot path
# of a travel request and compiling the same query through the ORM cost several times the
# database's work; every value is a bound parameter.
_STATE_SQL = """
SELECT p.zone_id,
       (SELECT j.id FROM game_journey j
         WHERE j.player_id = p.id AND j.arrived_at IS NULL LIMIT 1),
       (SELECT j.arrives_at <= %s FROM game_journey j
         WHERE j.player_id = p.id AND j.arrived_at IS NULL LIMIT 1),
       EXISTS (SELECT 1 FROM game_registration r WHERE r.player_id = p.id AND r.active),
       (SELECT rt.seconds FROM game_route rt
         WHERE rt.origin_id = p.zone_id AND rt.destination_id = %s)
  FROM game_player p
 WHERE p.id = %s AND p.deleted_at IS NULL
"""


def _player_state(player_id, destination: Zone, now: datetime):
    sql = _STATE_SQL
    if LOCK_PLAYER_ROW and connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF p"
    params = [
        connection.ops.adapt_datetimefield_value(now),
        destination.pk,
        Player._meta.pk.get_db_prep_value(player_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _start_locked(player_id, destination: Zone, now: datetime) -> Journey:
    """The checks and the insert, inside the caller's transaction (player row locked)."""
    row = _player_state(player_id, destination, now)
    if row is None:
        raise NoPlayer()
    zone_id, flight_id, flight_due, in_combat, seconds = row
    if flight_id is not None:
        if not flight_due:
            raise AlreadyTraveling()
        flying = Journey.objects.get(pk=flight_id)
        _arrive_locked(flying, now)  # it was due: land it, then leave again
        zone_id = flying.destination_id
        seconds = (
            Route.objects.filter(origin_id=zone_id, destination=destination)
            .values_list("seconds", flat=True)
            .first()
        )
    if in_combat:
        raise InCombat()
    if zone_id == destination.pk:
        raise AlreadyThere()
    return Journey.objects.create(
        player_id=player_id,
        origin_id=zone_id,
        destination=destination,
        started_at=now,
        arrives_at=now + timedelta(seconds=seconds or FALLBACK_SECONDS),
    )


@transient_retry(name="travel.start")
def _start_in_transaction(player_id, destination: Zone, now: datetime) -> Journey:
    set_lock_timeout()
    return _start_locked(player_id, destination, now)


@operation("game.travel")
def start_travel(*, player_id, zone_code: str, now: datetime | None = None) -> Journey:
    """Start a journey of `player_id` to the zone `zone_code`.

    Owns its transaction. Raises UnknownZone (400), AlreadyThere, AlreadyTraveling, InCombat
    (409), NoPlayer (404).
    """
    now = now or timezone.now()
    try:
        destination = Zone.objects.filter(code=str(zone_code)).first()
        if destination is None:
            raise UnknownZone()
        with busy_on_lock_timeout():
            try:
                journey = _start_in_transaction(player_id, destination, now)
            except IntegrityError as exc:
                # Two requests passed the check at once: the partial unique index decided.
                if "one_in_flight" in str(exc) or "game_journey.player_id" in str(exc):
                    raise AlreadyTraveling() from exc
                raise
    except DomainError as exc:
        metrics.TRAVELS.labels(exc.code).inc()
        raise
    metrics.TRAVELS.labels("started").inc()
    return journey


def current_journey(*, player_id, now: datetime | None = None) -> Journey | None:
    """The journey in flight, after applying an arrival that is due (lazily, on read)."""
    now = now or timezone.now()
    journey = (
        Journey.objects.select_related("origin", "destination")
        .filter(player_id=player_id, arrived_at__isnull=True)
        .first()
    )
    if journey is None or journey.arrives_at > now:
        return journey
    _land(player_id, journey.pk, now)
    return None


@transient_retry(name="travel.land")
def _land(player_id, journey_id, now: datetime) -> None:
    # The player row first, like start_travel: the same order everywhere cannot deadlock.
    Player.all_objects.select_for_update().filter(pk=player_id).values("pk").first()
    locked = (
        Journey.objects.select_for_update().filter(pk=journey_id, arrived_at__isnull=True).first()
    )
    if locked is not None:
        _arrive_locked(locked, now)


@operation("game.arrivals")
@transient_retry(name="travel.arrivals")
def apply_arrivals(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Land every journey that is due; return how many landed. Safe to run concurrently:
    each worker skips players another transaction has locked (a traveller mid-request, or
    another worker), and locks players before journeys, in the order start_travel does."""
    now = now or timezone.now()
    due = dict(
        Journey.objects.filter(arrived_at__isnull=True, arrives_at__lte=now)
        .order_by("arrives_at")
        .values_list("player_id", "pk")[:limit]
    )
    players = list(
        Player.all_objects.select_for_update(skip_locked=True)
        .filter(pk__in=list(due))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    landed = 0
    for journey in Journey.objects.select_for_update().filter(
        player_id__in=players, arrived_at__isnull=True, arrives_at__lte=now
    ):
        _arrive_locked(journey, now)
        landed += 1
    return landed
