"""Journeys between zones: start one, and apply arrivals when they are due.

One journey in flight per player is a partial unique index (`game_journey_one_in_flight`); the
service also checks first, under the player's row lock, to answer with a clear 409 — but two
requests that both passed a check would still not both insert.

A player in an open or running combat cannot leave. Registration locks the player row after
the combat row, and travel locks the player row, so the two cannot interleave.

Arrival is applied lazily (when the player is read) and by the `game:arrivals` schedule.
"""

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from game import metrics
from game.errors import AlreadyThere, AlreadyTraveling, InCombat, NoPlayer, UnknownZone
from game.models import Journey, Player, Registration, Route, Zone
from nightstorm.errors import DomainError
from nightstorm.transactions import busy_on_lock_timeout, set_lock_timeout

# A zone pair without a seeded route (only in hand-made test data).
FALLBACK_SECONDS = 60
LOCK_PLAYER_ROW = True  # tests flip this to demonstrate the race; never change it in code


def _arrive_locked(journey: Journey, now: datetime) -> None:
    Journey.objects.filter(pk=journey.pk, arrived_at__isnull=True).update(arrived_at=now)
    Player.all_objects.filter(pk=journey.player_id).update(
        zone_id=journey.destination_id, version=F("version") + 1, updated_at=now
    )


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
        with busy_on_lock_timeout(), transaction.atomic():
            set_lock_timeout()
            players = Player.objects.filter(pk=player_id).only("pk", "zone")
            if LOCK_PLAYER_ROW:
                players = players.select_for_update()
            player = players.first()
            if player is None:
                raise NoPlayer()
            flying = Journey.objects.filter(player_id=player_id, arrived_at__isnull=True).first()
            if flying is not None and flying.arrives_at <= now:
                _arrive_locked(flying, now)
                player.zone_id, flying = flying.destination_id, None
            if flying is not None:
                raise AlreadyTraveling()
            if Registration.objects.filter(player_id=player_id, active=True).exists():
                raise InCombat()
            if player.zone_id == destination.pk:
                raise AlreadyThere()
            seconds = (
                Route.objects.filter(origin_id=player.zone_id, destination=destination)
                .values_list("seconds", flat=True)
                .first()
            ) or FALLBACK_SECONDS
            try:
                with transaction.atomic():
                    journey = Journey.objects.create(
                        player_id=player_id,
                        origin_id=player.zone_id,
                        destination=destination,
                        started_at=now,
                        arrives_at=now + timedelta(seconds=seconds),
                    )
            except IntegrityError as exc:
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
    with transaction.atomic():
        locked = (
            Journey.objects.select_for_update()
            .filter(pk=journey.pk, arrived_at__isnull=True)
            .first()
        )
        if locked is not None:
            _arrive_locked(locked, now)
    return None


def apply_arrivals(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Land every journey that is due; return how many landed. Safe to run concurrently:
    each worker skips journeys another one has locked."""
    now = now or timezone.now()
    landed = 0
    with transaction.atomic():
        due = list(
            Journey.objects.select_for_update(skip_locked=True)
            .filter(arrived_at__isnull=True, arrives_at__lte=now)
            .order_by("arrives_at")[:limit]
        )
        for journey in due:
            _arrive_locked(journey, now)
            landed += 1
    return landed
