"""Combat registration under real concurrency: the capacity and one-active-combat invariants."""

import random
from collections import Counter

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from game import registration
from game.errors import AlreadyRegistered, CombatFull, InOtherCombat, RegistrationClosed
from game.models import Combat, Registration
from tests.game.conftest import THREADS
from tests.game.factories import ZoneFactory, make_event, make_players
from tests.helpers import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _kinds(outcomes) -> Counter:
    return Counter(type(o).__name__ for o in outcomes)


def test_hundred_players_race_for_ten_seats(naive):
    combat = make_event(ZoneFactory()).combats.order_by("index").first()
    players = make_players(100)

    outcomes = race(
        lambda pid: registration.register(player_id=pid, combat_id=combat.pk),
        [(p.pk,) for p in players],
        max_workers=THREADS,
    )

    kinds = _kinds(outcomes)
    assert kinds["Registration"] == 10, kinds
    assert kinds["CombatFull"] == 90, kinds
    assert Registration.objects.filter(combat=combat).count() == 10


def test_150_players_race_across_three_combats_in_random_order(naive):
    combats = list(make_event(ZoneFactory()).combats.order_by("index"))
    assert len(combats) == 3
    players = make_players(150)
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


def test_same_player_racing_for_two_combats_gets_one_seat(naive):
    combats = list(make_event(ZoneFactory()).combats.order_by("index"))
    (player,) = make_players(1)
    outcomes = race(
        lambda cid: registration.register(player_id=player.pk, combat_id=cid),
        [(combats[i % 3].pk,) for i in range(12)],
    )
    kinds = _kinds(outcomes)
    assert kinds["Registration"] == 1, kinds
    assert set(kinds) <= {"Registration", "InOtherCombat", "AlreadyRegistered"}
    assert Registration.objects.filter(player=player, active=True).count() == 1


def test_api_race_for_one_combat(naive):
    combat = make_event(ZoneFactory()).combats.order_by("index").first()
    players = make_players(30)
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
    assert Registration.objects.filter(combat=combat).count() == 10


def test_refusals_and_database_backstops():
    combats = list(make_event(ZoneFactory()).combats.order_by("index"))
    (player,) = make_players(1)
    registration.register(player_id=player.pk, combat_id=combats[0].pk)
    with pytest.raises(AlreadyRegistered):
        registration.register(player_id=player.pk, combat_id=combats[0].pk)
    with pytest.raises(InOtherCombat):
        registration.register(player_id=player.pk, combat_id=combats[1].pk)
    Combat.objects.filter(pk=combats[2].pk).update(status="cancelled")
    with pytest.raises(RegistrationClosed):
        registration.register(player_id=player.pk, combat_id=combats[2].pk)

    # Even a write that skips the service cannot seat the player twice.
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Registration.objects.create(combat=combats[1], player=player)
    # ... and an IntegrityError from a constraint maps to the 409 code.
    try:
        with transaction.atomic():
            Registration.objects.create(combat=combats[1], player=player)
    except IntegrityError as exc:
        assert registration._constraint_error(exc) is InOtherCombat
