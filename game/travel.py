"""Journeys between zones: start one, and apply arrivals when they are due.

One journey in flight per player is a partial unique index (`game_journey_one_in_flight`); the
service also checks first, under the player's row lock, to answer with a clear 409 — but two
requests that both passed a check would still not both insert.

A player in an open or running combat cannot leave. Registration locks the player row after
the combat row, and travel locks the player row, so the two cannot interleave. The lock is its
own statement and the checks run in the next one: under READ COMMITTED a statement that waited
for a row lock still reads every other table as of its start, so checks made in the locking
statement would miss a seat committed by the registration it waited for.

On PostgreSQL a start is three statements: the zone lookup with the lock, the checks with the
insert, the commit. A due journey is landed by the next start (first thing, under the same
lock) or by the `game:arrivals` schedule; a read shows it as landed without writing
(`game.selectors.player_as_of`).
"""

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models import F
from django.utils import timezone

from game import metrics
from game.errors import AlreadyThere, AlreadyTraveling, InCombat, NoPlayer, UnknownZone
from game.models import Journey, Player, Registration, Route, Zone
from nightstorm import sql
from nightstorm.errors import DomainError
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout, transient_retry

# A zone pair without a seeded route (only in hand-made test data).
FALLBACK_SECONDS = 60

_JOURNEY = Journey._meta.db_table
_PLAYER = Player._meta.db_table
_ZONE = Zone._meta.db_table
_SEAT = Registration._meta.db_table
_ROUTE = Route._meta.db_table


def _arrival(now: datetime, seconds: int | None) -> datetime:
    """When a journey started `now` on a route of `seconds` (None: no seeded route) arrives,
    in UTC, as the database adds it."""
    return now.astimezone(UTC) + timedelta(seconds=FALLBACK_SECONDS if seconds is None else seconds)


def _arrive_locked(journey: Journey, now: datetime) -> None:
    Journey.objects.filter(pk=journey.pk, arrived_at__isnull=True).update(arrived_at=now)
    Player.all_objects.filter(pk=journey.player_id).update(
        zone_id=journey.destination_id, version=F("version") + 1, updated_at=now
    )


# The destination and the player's row lock in one round trip. The lock's wait is bounded by
# `set_config('lock_timeout', …, true)` (SET LOCAL) in the locked row's filter: a filter runs
# before the row is locked, so the bound is in force when the wait starts.
_LOCK_SQL = f"""
SELECT (SELECT z.id FROM {_ZONE} z WHERE z.code = %s),
       (SELECT p.id FROM {_PLAYER} p
         WHERE p.id = %s AND p.deleted_at IS NULL
           AND set_config('lock_timeout', %s, true) IS NOT NULL
           FOR UPDATE)
"""

# Run with the player row locked (a fresh snapshot: it sees what the lock's holder committed).
# The state the checks need and the journey's insert when they all pass, in one statement: the
# insert's conditions are the checks; the row says which one failed when nothing was inserted.
_START_SQL = f"""
WITH state AS (
    SELECT p.zone_id,
           j.id AS flight_id,
           j.arrives_at <= %(now)s AS flight_due,
           EXISTS (SELECT 1 FROM {_SEAT} r WHERE r.player_id = p.id AND r.active) AS in_combat,
           (SELECT rt.seconds FROM {_ROUTE} rt
             WHERE rt.origin_id = p.zone_id AND rt.destination_id = %(destination)s) AS seconds
      FROM {_PLAYER} p
      LEFT JOIN {_JOURNEY} j ON j.player_id = p.id AND j.arrived_at IS NULL
     WHERE p.id = %(player)s
), started AS (
    INSERT INTO {_JOURNEY} (player_id, origin_id, destination_id, started_at, arrives_at)
    SELECT %(player)s, zone_id, %(destination)s, %(now)s,
           %(now)s + make_interval(secs => coalesce(seconds, %(fallback)s))
      FROM state
     WHERE flight_id IS NULL AND NOT in_combat AND zone_id IS DISTINCT FROM %(destination)s
    RETURNING id
)
SELECT s.zone_id, s.flight_id, s.flight_due, s.in_combat, j.id, s.seconds,
       (SELECT z.code FROM {_ZONE} z WHERE z.id = s.zone_id)
  FROM state s LEFT JOIN started j ON true
"""


def _lock_player(player_id, zone_code: str) -> tuple:
    """(destination id or None, whether the player exists), the player's row locked.

    Joins the caller's transaction. Other databases: no row lock (SQLite serialises writers).
    """
    if connection.vendor != "postgresql":
        zone_id = Zone.objects.filter(code=zone_code).values_list("pk", flat=True).first()
        return zone_id, Player.objects.filter(pk=player_id).exists()
    params = [zone_code, player_id, str(settings.NIGHTSTORM_LOCK_TIMEOUT_MS)]
    ((zone_id, locked),) = sql.run(connection.alias, _LOCK_SQL, params)
    return zone_id, locked is not None


def _zone(pk, code: str) -> Zone:
    """A Zone carrying only what a journey's answer shows (its code)."""
    return Zone.from_db(connection.alias, ["id", "code"], [pk, code])


def _start_locked(player_id, destination: Zone, now: datetime) -> Journey:
    """The checks and the insert, inside the caller's transaction, the player row locked."""
    if connection.vendor != "postgresql":
        return _start_portable(player_id, destination, now)
    params = {
        "now": now,
        "destination": destination.pk,
        "player": player_id,
        "fallback": FALLBACK_SECONDS,
    }
    ((zone_id, flight_id, flight_due, in_combat, journey_id, seconds, origin),) = sql.run(
        connection.alias, _START_SQL, params
    )
    if journey_id is not None:
        journey = Journey(
            id=journey_id,
            player_id=player_id,
            origin=_zone(zone_id, origin) if zone_id is not None else None,
            destination=destination,
            started_at=now,
            # What the insert stored (an exact sum); cheaper than reading a timestamp back.
            arrives_at=_arrival(now, seconds),
        )
        journey._state.adding, journey._state.db = False, connection.alias
        return journey
    if flight_id is not None:
        if not flight_due:
            raise AlreadyTraveling()
        _arrive_locked(Journey.objects.get(pk=flight_id), now)  # due: land it, leave again
        return _start_locked(player_id, destination, now)
    if in_combat:
        raise InCombat()
    raise AlreadyThere()


def _start_portable(player_id, destination: Zone, now: datetime) -> Journey:
    """`_start_locked` in portable ORM queries (databases other than PostgreSQL)."""
    player = Player.objects.filter(pk=player_id).values("zone_id").first()
    flying = Journey.objects.filter(player_id=player_id, arrived_at__isnull=True).first()
    if flying is not None:
        if flying.arrives_at > now:
            raise AlreadyTraveling()
        _arrive_locked(flying, now)
        player = {"zone_id": flying.destination_id}
    if Registration.objects.filter(player_id=player_id, active=True).exists():
        raise InCombat()
    if player["zone_id"] == destination.pk:
        raise AlreadyThere()
    seconds = (
        Route.objects.filter(origin_id=player["zone_id"], destination=destination)
        .values_list("seconds", flat=True)
        .first()
    )
    return Journey.objects.create(
        player_id=player_id,
        origin_id=player["zone_id"],
        destination=destination,
        started_at=now,
        arrives_at=_arrival(now, seconds),
    )


@transient_retry(name="travel.start")
def _start_in_transaction(player_id, zone_code: str, now: datetime) -> Journey:
    zone_id, found = _lock_player(player_id, zone_code)
    if zone_id is None:
        raise UnknownZone()
    if not found:
        raise NoPlayer()
    return _start_locked(player_id, _zone(zone_id, zone_code), now)


@operation("game.travel", ok_level=logging.DEBUG)  # the row is the record
def start_travel(*, player_id, zone_code: str, now: datetime | None = None) -> Journey:
    """Start a journey of `player_id` to the zone `zone_code`.

    Owns its transaction. Raises UnknownZone (400), AlreadyThere, AlreadyTraveling, InCombat
    (409), NoPlayer (404); Busy (503) if the player row stays locked longer than
    NIGHTSTORM_LOCK_TIMEOUT_MS.
    """
    now = now or timezone.now()
    try:
        with busy_on_lock_timeout():
            try:
                journey = _start_in_transaction(player_id, str(zone_code), now)
            except IntegrityError as exc:
                # Two requests passed the check at once: the partial unique index decided.
                if "one_in_flight" in str(exc) or "game_journey.player_id" in str(exc):
                    raise AlreadyTraveling() from exc
                raise
    except DomainError as exc:
        metrics.TRAVELS.labels(exc.code).inc()
        raise
    _STARTED.inc()
    return journey


_STARTED = metrics.TRAVELS.labels("started")  # looked up once: every start counts here


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
