"""Combat registration under real concurrency: capacity, one active seat, the zone rule.

Every race here runs real threads against PostgreSQL. The control at the top is the naive
check-then-insert the service replaced; it runs every time and must over-seat, which shows the
races below can fail.
"""

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from game import registration, travel
from game.errors import (
    AlreadyRegistered,
    CombatFull,
    InOtherCombat,
    NotInCombatZone,
    RegistrationClosed,
    Traveling,
)
from game.models import Combat, Journey, Registration
from tests.game.conftest import THREADS
from tests.game.factories import ZoneFactory, make_event, make_players, make_zones
from tests.helpers import race, while_held

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _kinds(outcomes) -> Counter:
    return Counter(type(o).__name__ for o in outcomes)


def _open_combats(n_players: int):
    """An open event's combats (10 seats each) and `n_players` players in its zone."""
    zone = ZoneFactory()
    combats = list(make_event(zone).combats.order_by("index"))
    return combats, make_players(n_players, zone=zone)


def _assert_seats_match_rows(*combats):
    for combat in combats:
        combat.refresh_from_db()
        assert combat.seats == Registration.objects.filter(combat=combat).count() <= combat.capacity


def test_control_check_then_insert_over_seats():
    """The naive version: count the seats, then insert. Every contender counts before any of
    them inserts (the barrier widens the window that a storm hits by chance), so all of them
    see free seats and the combat ends with more players than seats."""
    (combat, *_), players = _open_combats(20)
    barrier = threading.Barrier(len(players))

    def naive_register(player_id):
        with transaction.atomic():
            capacity = Combat.objects.values_list("capacity", flat=True).get(pk=combat.pk)
            taken = Registration.objects.filter(combat_id=combat.pk).count()
            barrier.wait(timeout=30)
            if taken >= capacity:
                raise CombatFull()
            return Registration.objects.create(combat_id=combat.pk, player_id=player_id)

    outcomes = race(naive_register, [(p.pk,) for p in players], max_workers=len(players))

    assert _kinds(outcomes)["Registration"] == 20, _kinds(outcomes)
    assert Registration.objects.filter(combat=combat).count() > combat.capacity


def test_hundred_players_race_for_ten_seats():
    (combat, *_), players = _open_combats(100)

    outcomes = race(
        lambda pid: registration.register(player_id=pid, combat_id=combat.pk),
        [(p.pk,) for p in players],
        max_workers=THREADS,
    )

    kinds = _kinds(outcomes)
    assert kinds["Registration"] == 10, kinds
    assert kinds["CombatFull"] == 90, kinds
    _assert_seats_match_rows(combat)
    assert combat.seats == 10


def test_150_players_race_across_three_combats_in_random_order():
    combats, players = _open_combats(150)
    assert len(combats) == 3
    rng = random.Random(7)

    def join_any(pid, order):
        seats = []
        for combat_id in order:
            try:
                seats.append(registration.register(player_id=pid, combat_id=combat_id))
            except (CombatFull, InOtherCombat):
                continue
        return seats

    args = [(p.pk, rng.sample([c.pk for c in combats], 3)) for p in players]
    outcomes = race(join_any, args, max_workers=THREADS)

    assert not [o for o in outcomes if isinstance(o, Exception)], _kinds(outcomes)
    per_combat = Counter(
        Registration.objects.filter(combat__in=combats).values_list("combat_id", flat=True)
    )
    assert all(per_combat[c.pk] == 10 for c in combats), per_combat
    per_player = Counter(Registration.objects.values_list("player_id", flat=True))
    assert max(per_player.values()) == 1
    assert sum(len(o) for o in outcomes) == 30
    _assert_seats_match_rows(*combats)


def test_same_player_racing_for_two_combats_gets_one_seat():
    combats, (player,) = _open_combats(1)
    outcomes = race(
        lambda cid: registration.register(player_id=player.pk, combat_id=cid),
        [(combats[i % 3].pk,) for i in range(12)],
    )
    kinds = _kinds(outcomes)
    assert kinds["Registration"] == 1, kinds
    assert set(kinds) <= {"Registration", "InOtherCombat", "AlreadyRegistered"}
    assert Registration.objects.filter(player=player, active=True).count() == 1
    # A claim whose insert hit a unique index was rolled back with it: one seat counted.
    _assert_seats_match_rows(*combats)


def test_api_race_for_one_combat_seats_exactly_capacity_without_5xx():
    (combat, *_), players = _open_combats(30)
    tokens = Token.objects.bulk_create(
        [Token(user_id=p.user_id, key=Token.generate_key()) for p in players]
    )

    def post(key):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        response = client.post(f"/api/v1/combats/{combat.pk}/registrations/")
        return response.status_code, response.json().get("code")

    outcomes = race(post, [(t.key,) for t in tokens], max_workers=THREADS)
    counts = Counter(outcomes)
    assert counts[(201, None)] == 10, counts
    assert counts[(409, "combat_full")] == 20, counts
    _assert_seats_match_rows(combat)


def test_joining_and_leaving_race_never_both_happen():
    """Each player races a registration against a journey out of the zone: the player row lock
    orders them, so a player ends seated or travelling, never both (a seat away from the
    combat's zone, or a journey out of an open combat)."""
    home, away = make_zones(2)
    combats = list(make_event(home).combats.order_by("index"))
    players = make_players(30, zone=home)

    def join(pid, combat_id):
        return registration.register(player_id=pid, combat_id=combat_id)

    def leave(pid, _):
        return travel.start_travel(player_id=pid, zone_code=away.code)

    calls = []
    for i, p in enumerate(players):
        calls += [(join, p.pk, combats[i % 3].pk), (leave, p.pk, None)]
    random.Random(3).shuffle(calls)
    outcomes = race(lambda fn, pid, cid: fn(pid, cid), calls, max_workers=THREADS)

    kinds = _kinds(outcomes)
    assert set(kinds) <= {"Registration", "Journey", "Traveling", "InCombat"}, kinds
    seated = set(Registration.objects.values_list("player_id", flat=True))
    gone = set(Journey.objects.values_list("player_id", flat=True))
    assert seated | gone == {p.pk for p in players}
    assert not seated & gone
    _assert_seats_match_rows(*combats)


def test_refusals_and_database_backstops():
    zone = ZoneFactory()
    combats = list(make_event(zone).combats.order_by("index"))
    player, elsewhere = make_players(2, zone=zone)
    registration.register(player_id=player.pk, combat_id=combats[0].pk)
    with pytest.raises(AlreadyRegistered):
        registration.register(player_id=player.pk, combat_id=combats[0].pk)
    with pytest.raises(InOtherCombat):
        registration.register(player_id=player.pk, combat_id=combats[1].pk)
    Combat.objects.filter(pk=combats[2].pk).update(status="cancelled")
    with pytest.raises(RegistrationClosed):
        registration.register(player_id=elsewhere.pk, combat_id=combats[2].pk)
    _assert_seats_match_rows(*combats)

    # Even a write that skips the service cannot seat the player twice.
    with pytest.raises(IntegrityError), transaction.atomic():
        Registration.objects.create(combat=combats[1], player=player)
    # ... and an IntegrityError from a constraint maps to the 409 code.
    try:
        with transaction.atomic():
            Registration.objects.create(combat=combats[1], player=player)
    except IntegrityError as exc:
        assert registration._constraint_error(exc) is InOtherCombat

    # The counter can never pass the capacity, whoever writes it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Combat.objects.filter(pk=combats[1].pk).update(seats=11)
    # A seat removed by any path is given back (trigger), so the counter stays the row count.
    Registration.objects.filter(combat=combats[0]).delete()
    combats[0].refresh_from_db()
    assert combats[0].seats == 0
    registration.register(player_id=elsewhere.pk, combat_id=combats[0].pk)
    _assert_seats_match_rows(combats[0])


def test_a_player_joins_only_from_the_combats_zone_and_not_on_a_journey():
    home, away = make_zones(2)
    combat = make_event(home).combats.order_by("index").first()
    stranger, walker, arrived = make_players(3, zone=away)
    with pytest.raises(NotInCombatZone):
        registration.register(player_id=stranger.pk, combat_id=combat.pk)

    now = timezone.now()
    travel.start_travel(player_id=walker.pk, zone_code=home.code, now=now)
    with pytest.raises(Traveling):
        registration.register(player_id=walker.pk, combat_id=combat.pk, now=now)
    # Once the arrival is due, the player counts as arrived in the combat's zone.
    travel.start_travel(player_id=arrived.pk, zone_code=home.code, now=now - timedelta(hours=1))
    registration.register(player_id=arrived.pk, combat_id=combat.pk, now=now)
    travel.apply_arrivals(now=now)
    arrived.refresh_from_db()
    assert arrived.zone == home
    assert not Registration.objects.filter(player__in=[stranger, walker]).exists()
    _assert_seats_match_rows(combat)


def test_migration_backfill_counts_existing_registrations():
    """The backfill statement of the migration that added the counter."""
    from importlib import import_module

    migration = import_module("game.migrations.0005_combat_seats").Migration
    (backfill,) = [op for op in migration.operations if type(op).__name__ == "RunSQL"]
    combats, players = _open_combats(4)
    Registration.objects.bulk_create(
        [Registration(combat=combats[i % 2], player=p) for i, p in enumerate(players)]
    )
    Combat.objects.filter(pk__in=[c.pk for c in combats]).update(seats=0)
    with connection.cursor() as cursor:
        cursor.execute(backfill.sql)
    assert [Combat.objects.get(pk=c.pk).seats for c in combats] == [2, 2, 0]


def test_a_player_row_held_elsewhere_bounds_the_wait_and_takes_no_seat(settings):
    # The player's lock statement also sets the transaction's lock timeout: a seat request
    # behind another transaction's lock on the player gives up with Busy (503), seating no one.
    from nightstorm.errors import Busy

    settings.NIGHTSTORM_LOCK_TIMEOUT_MS = 200
    zone = ZoneFactory()
    combat = make_event(zone).combats.order_by("index").first()
    (player,) = make_players(1, zone=zone)
    held, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM game_player WHERE id = %s FOR UPDATE", [player.pk])
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(Busy):
            registration.register(player_id=player.pk, combat_id=combat.pk)
    finally:
        release.set()
        holder.join()
    combat.refresh_from_db()
    assert combat.seats == 0 and not Registration.objects.filter(player=player).exists()
    registration.register(player_id=player.pk, combat_id=combat.pk)  # free again: seated


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("UPDATE game_combat SET seats = capacity WHERE id = %s", CombatFull),
        ("UPDATE game_combat SET status = 'cancelled' WHERE id = %s", RegistrationClosed),
    ],
    ids=["filled", "closed"],
)
def test_a_claim_that_finds_no_seat_after_the_read_says_why(change, error):
    """The reads saw a free seat; the combat filled or closed before the claim got its row
    (another transaction held it, uncommitted, through both reads). The claim waits, re-checks,
    finds no seat, and the status committed since says which error it is; no seat is taken."""
    zone = ZoneFactory()
    combat = make_event(zone).combats.order_by("index").first()
    (player,) = make_players(1, zone=zone)

    def change_the_combat():
        with connection.cursor() as cursor:
            cursor.execute(change, [combat.pk])

    outcome = while_held(
        change_the_combat,
        lambda: registration.register(player_id=player.pk, combat_id=combat.pk),
    )
    assert isinstance(outcome.get("error"), error), outcome
    assert not Registration.objects.filter(player=player).exists()
