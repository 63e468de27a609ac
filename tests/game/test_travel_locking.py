"""Landing a due journey while the same player starts another: one lock order, no deadlock."""

import contextlib
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from game import travel
from game.models import Journey
from tests.game.factories import make_players, make_zones
from tests.helpers import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_read_landing_a_journey_and_a_new_journey_do_not_deadlock(monkeypatch):
    home, there, further = make_zones(3)
    (player,) = make_players(1, zone=home)
    now = timezone.now()
    Journey.objects.create(
        player=player,
        origin=home,
        destination=there,
        started_at=now - timedelta(minutes=5),
        arrives_at=now - timedelta(minutes=1),
    )
    # Both paths land the due journey; make them meet right there, each holding its first lock.
    meet = threading.Barrier(2, timeout=2)
    land = travel._arrive_locked

    def meeting(journey, when):
        # A broken barrier means the other side is (correctly) waiting for our lock.
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return land(journey, when)

    monkeypatch.setattr(travel, "_arrive_locked", meeting)
    outcomes = race(
        lambda f: f(),
        [
            (lambda: travel.start_travel(player_id=player.pk, zone_code=further.code),),
            (lambda: travel.current_journey(player_id=player.pk),),
        ],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert Journey.objects.filter(player=player, arrived_at__isnull=True).count() == 1
    assert Journey.objects.filter(player=player, destination=there).get().arrived_at is not None


def test_apply_arrivals_skips_a_player_locked_by_a_request():
    from django.db import transaction

    from game.models import Player

    home, there = make_zones(2)
    (player,) = make_players(1, zone=home)
    now = timezone.now()
    Journey.objects.create(
        player=player,
        origin=home,
        destination=there,
        started_at=now - timedelta(minutes=5),
        arrives_at=now - timedelta(minutes=1),
    )
    holding, done = threading.Event(), threading.Event()

    def request_holding_the_player():
        with transaction.atomic():
            Player.objects.select_for_update().get(pk=player.pk)
            holding.set()
            done.wait(timeout=10)

    def worker():
        holding.wait(timeout=10)
        try:
            return travel.apply_arrivals()
        finally:
            done.set()

    outcomes = race(lambda f: f(), [(request_holding_the_player,), (worker,)])
    assert outcomes[1] == 0  # skipped, not blocked and not deadlocked
    assert travel.apply_arrivals() == 1
