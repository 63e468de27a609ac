"""Travel: one journey in flight per player, under real concurrency; arrivals; combat lock."""

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from game import registration, travel
from game.errors import AlreadyThere, AlreadyTraveling, InCombat, UnknownZone
from game.models import Journey, Player
from tests.game.conftest import THREADS
from tests.game.factories import make_event, make_players, make_zones
from tests.helpers import race


@pytest.fixture
def drop_journey_index(naive):
    """In the naive demonstration, also drop the database's one-in-flight index."""
    if not naive:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS game_journey_one_in_flight")
    yield
    Journey.objects.all().delete()
    from django.db import connection as conn

    with conn.schema_editor() as editor:
        editor.add_constraint(Journey, Journey._meta.constraints[0])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_1000_players_start_journeys_at_once():
    home, away = make_zones(2)
    players = make_players(1000, zone=home)
    outcomes = race(
        lambda pid: travel.start_travel(player_id=pid, zone_code=away.code),
        [(p.pk,) for p in players],
        max_workers=THREADS,
    )
    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Journey": 1000}, kinds
    assert Journey.objects.filter(arrived_at__isnull=True).count() == 1000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_20_concurrent_journeys_of_one_player_give_one(drop_journey_index):
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    outcomes = race(
        lambda: travel.start_travel(player_id=player.pk, zone_code=away.code), [()] * 20
    )
    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Journey": 1, "AlreadyTraveling": 19}, kinds
    assert Journey.objects.filter(player=player, arrived_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_refusals_and_arrival():
    home, away = make_zones(2, route_seconds=90)
    (player,) = make_players(1, zone=home)
    with pytest.raises(UnknownZone):
        travel.start_travel(player_id=player.pk, zone_code="NOPE")
    with pytest.raises(AlreadyThere):
        travel.start_travel(player_id=player.pk, zone_code=home.code)
    now = timezone.now()
    journey = travel.start_travel(player_id=player.pk, zone_code=away.code, now=now)
    assert journey.arrives_at == now + timedelta(seconds=90)
    with pytest.raises(AlreadyTraveling):
        travel.start_travel(player_id=player.pk, zone_code=home.code, now=now)

    assert travel.current_journey(player_id=player.pk, now=now) == journey
    assert travel.current_journey(player_id=player.pk, now=now + timedelta(seconds=91)) is None
    player.refresh_from_db()
    assert player.zone == away
    assert player.version == 2

    # A due journey does not block the next one: it lands first.
    travel.start_travel(player_id=player.pk, zone_code=home.code, now=now + timedelta(seconds=100))
    assert travel.apply_arrivals(now=now + timedelta(seconds=1000)) == 1
    player.refresh_from_db()
    assert player.zone == home


@pytest.mark.django_db
def test_player_in_combat_cannot_travel():
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    combat = make_event(home).combats.first()
    registration.register(player_id=player.pk, combat_id=combat.pk)
    with pytest.raises(InCombat):
        travel.start_travel(player_id=player.pk, zone_code=away.code)
    assert not Journey.objects.exists()
    assert Player.objects.get(pk=player.pk).zone == home
