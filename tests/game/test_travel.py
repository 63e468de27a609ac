"""Travel: one journey in flight per player, under real concurrency; arrivals; combat lock."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from game import registration, travel
from game.errors import AlreadyThere, AlreadyTraveling, InCombat, UnknownZone
from game.models import Journey, Player, Registration, Zone
from nightstorm.errors import Busy
from tests.game.conftest import THREADS
from tests.game.factories import ZoneFactory, make_event, make_players, make_zones
from tests.helpers import race, wait_for_a_lock_waiter


def naive_lock(player_id, zone_code):
    """`travel._lock_player` without the row lock: the destination and whether the player
    exists. Only the tests use it, to show what the lock prevents."""
    zone_id = Zone.objects.filter(code=zone_code).values_list("pk", flat=True).first()
    return zone_id, Player.objects.filter(pk=player_id).exists()


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
def test_20_concurrent_journeys_of_one_player_give_one():
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

    assert travel.apply_arrivals(now=now) == 0
    assert travel.apply_arrivals(now=now + timedelta(seconds=91)) == 1
    player.refresh_from_db()
    assert player.zone == away
    assert player.version == 2

    # A due journey does not block the next one: it lands first.
    travel.start_travel(player_id=player.pk, zone_code=home.code, now=now + timedelta(seconds=100))
    travel.start_travel(player_id=player.pk, zone_code=away.code, now=now + timedelta(seconds=300))
    assert travel.apply_arrivals(now=now + timedelta(seconds=1000)) == 1
    player.refresh_from_db()
    assert player.zone == away


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


class HeldPlayer:
    """Another transaction holding a player's row lock, as a registration does between taking
    the lock and committing its seat; `seat_in` also inserts that seat. The lock is released
    (and the seat committed) by `release()`."""

    def __init__(self, player, *, seat_in=None):
        self.player, self.seat_in = player, seat_in
        self.locked, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self):
        try:
            with transaction.atomic():
                Player.objects.select_for_update().filter(pk=self.player.pk).first()
                if self.seat_in is not None:
                    Registration.objects.create(combat=self.seat_in, player=self.player)
                self.locked.set()
                self.done.wait(30)
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def release(self):
        self.done.set()
        self.thread.join(10)

    def __exit__(self, *exc):
        self.release()


def travel_in_thread(player, zone) -> tuple[threading.Thread, list]:
    outcome = []

    def run():
        try:
            outcome.append(travel.start_travel(player_id=player.pk, zone_code=zone.code))
        except Exception as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_journey_waits_for_the_registration_holding_the_player_and_sees_its_seat():
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    combat = make_event(ZoneFactory()).combats.first()
    with HeldPlayer(player, seat_in=combat) as held:
        thread, outcome = travel_in_thread(player, away)
        assert "FOR UPDATE" in wait_for_a_lock_waiter()  # travel waits for the player's row
        held.release()
        thread.join(10)
    assert [type(o) for o in outcome] == [InCombat], outcome
    assert not Journey.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_without_the_player_lock_a_player_being_seated_leaves(monkeypatch):
    """The control: the same schedule with the test-local naive lock. The journey's checks run
    while the seat is being taken and pass; its insert then waits only at COMMIT (the foreign
    key's check on the player row), and both commit: a seated player is travelling."""
    monkeypatch.setattr(travel, "_lock_player", naive_lock)
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    combat = make_event(ZoneFactory()).combats.first()
    with HeldPlayer(player, seat_in=combat) as held:
        thread, outcome = travel_in_thread(player, away)
        assert wait_for_a_lock_waiter() == "COMMIT"
        held.release()
        thread.join(10)
    assert [type(o) for o in outcome] == [Journey], outcome
    assert Registration.objects.filter(player=player, active=True).exists()
    assert Journey.objects.filter(player=player, arrived_at__isnull=True).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_player_row_held_too_long_answers_busy(settings):
    settings.NIGHTSTORM_LOCK_TIMEOUT_MS = 300
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    with HeldPlayer(player):
        thread, outcome = travel_in_thread(player, away)
        thread.join(5)
        assert not thread.is_alive(), "the lock wait is bounded"
    assert [type(o) for o in outcome] == [Busy], outcome
    assert not Journey.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_journey_starts_in_three_statements_and_a_commit(django_assert_num_queries):
    """Pinned: BEGIN, the lock with the destination, the checks with the insert, COMMIT."""
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    with django_assert_num_queries(4):
        journey = travel.start_travel(player_id=player.pk, zone_code=away.code)
    assert (journey.origin.code, journey.destination.code) == (home.code, away.code)
    with django_assert_num_queries(4), pytest.raises(AlreadyTraveling):
        travel.start_travel(player_id=player.pk, zone_code=home.code)
