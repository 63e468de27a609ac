"""Landing a due journey while the same player starts another: one lock order everywhere (the
player, then the journey), so the paths never deadlock.

`start_travel` and `apply_arrivals` run under `transient_retry`, which would quietly run a
deadlocked transaction again and still end in the right state; so the tests assert that no
transient error (40P01/40001) happened at all. The control lands the journey in the opposite
order (journey, then player) and shows that such a regression deadlocks, is retried and would
pass on its final state alone.
"""

import contextlib
import threading
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from game import travel
from game.models import Journey, Player
from nightstorm import transactions
from nightstorm.transactions import transient_retry
from tests.game.factories import make_players, make_zones
from tests.helpers import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def transient_errors(monkeypatch):
    """Every deadlock or serialization failure a `transient_retry` saw (and retried)."""
    seen = []
    real = transactions.is_transient

    def spy(exc):
        if real(exc):
            seen.append(exc)
            return True
        return False

    monkeypatch.setattr(transactions, "is_transient", spy)
    return seen


@pytest.fixture
def due_journey():
    home, there, further = make_zones(3)
    (player,) = make_players(1, zone=home)
    now = timezone.now()
    journey = Journey.objects.create(
        player=player,
        origin=home,
        destination=there,
        started_at=now - timedelta(minutes=5),
        arrives_at=now - timedelta(minutes=1),
    )
    return player, journey, further


@pytest.fixture
def meet_in_start_travel(monkeypatch):
    """`start_travel` waits (a while, at most) for the other side when it has the player
    locked and is about to land the due journey: both sides hold their first lock there."""
    meet = threading.Barrier(2, timeout=2)
    land = travel._arrive_locked

    def meeting(journey, when):
        # A broken barrier means the other side is (correctly) waiting for our lock.
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return land(journey, when)

    monkeypatch.setattr(travel, "_arrive_locked", meeting)
    return meet


def _assert_landed_and_left(player, journey, further):
    assert Journey.objects.get(pk=journey.pk).arrived_at is not None
    in_flight = Journey.objects.get(player=player, arrived_at__isnull=True)
    assert (in_flight.origin_id, in_flight.destination_id) == (journey.destination_id, further.pk)


def test_arrivals_and_a_new_journey_of_the_same_player_never_deadlock(
    due_journey, meet_in_start_travel, transient_errors
):
    player, journey, further = due_journey
    outcomes = race(
        lambda f: f(),
        [
            (lambda: travel.start_travel(player_id=player.pk, zone_code=further.code),),
            (lambda: travel.apply_arrivals(),),
        ],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert transient_errors == [], "a deadlock was retried: the lock order regressed"
    _assert_landed_and_left(player, journey, further)


def test_control_landing_in_the_opposite_order_deadlocks_and_only_the_retry_hides_it(
    due_journey, meet_in_start_travel, transient_errors
):
    player, journey, further = due_journey
    meet = meet_in_start_travel
    attempts = []

    @transient_retry
    def land_journey_first():
        attempts.append(1)
        locked = Journey.objects.select_for_update().get(pk=journey.pk)
        if len(attempts) == 1:
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait()  # both hold their first lock: the journey here, the player there
        Player.all_objects.select_for_update().filter(pk=player.pk).values("pk").first()
        if Journey.objects.filter(pk=locked.pk, arrived_at__isnull=True).update(
            arrived_at=timezone.now()
        ):
            Player.all_objects.filter(pk=player.pk).update(
                zone_id=locked.destination_id, version=F("version") + 1
            )

    outcomes = race(
        lambda f: f(),
        [
            (lambda: travel.start_travel(player_id=player.pk, zone_code=further.code),),
            (land_journey_first,),
        ],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    _assert_landed_and_left(player, journey, further)  # the final state alone looks fine...
    # ...it was not: deadlocks happened (one or more, as the retries meet again) and were retried.
    states = {transactions.sqlstate(e) for e in transient_errors}
    assert states == {"40P01"}, transient_errors


def test_apply_arrivals_skips_a_player_locked_by_a_request():
    from django.db import transaction

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
            done.wait(timeout=30)

    def worker():
        assert holding.wait(timeout=30)
        try:
            return travel.apply_arrivals()
        finally:
            done.set()

    outcomes = race(lambda f: f(), [(request_holding_the_player,), (worker,)])
    assert outcomes == [None, 0]  # skipped, not blocked and not deadlocked
    assert travel.apply_arrivals() == 1
