"""Query counts of the endpoints players hit most, pinned: a change that adds a query to one
of them shows up here (their throughput is measured in `python -m bench http`).

Counts are for PostgreSQL (the production database), where the write paths also set their
lock timeout and lock the player in statements of their own. Each request authenticates with
a token: one query (the token and its user; for the player's endpoints also the player, its
zone and whether it is travelling, see `game.auth`).
"""

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from game import travel
from game.models import Registration, Zone
from jackpot import services as jackpot
from tests.game.factories import make_event, make_players

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def world():
    call_command("seed_world")
    jackpot.ensure_default_pools()


@pytest.fixture
def player(world):
    (p,) = make_players(1, zone=Zone.objects.get(code="ASH1"))
    return p


@pytest.fixture
def client(api_client, player):
    token = Token.objects.create(user_id=player.user_id)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def _count(django_assert_num_queries, n, call):
    with django_assert_num_queries(n):
        response = call()
    assert response.status_code < 300, response.content
    return response


def test_reads(client, player, django_assert_num_queries):
    for _ in range(3):
        make_event(player.zone)
    q = django_assert_num_queries
    # the token with its user, player, zone and whether a journey is in flight or due
    _count(q, 1, lambda: client.get("/api/v1/players/me/"))
    # zones with their next Nightstorm: one query (public: the token is not looked up)
    _count(q, 1, lambda: client.get("/api/v1/zones/"))
    # token; the page of events with their combats and the list's length, in one statement
    _count(q, 2, lambda: client.get("/api/v1/nightstorms/"))
    # the pools (public; a handful, so no COUNT)
    _count(q, 1, lambda: client.get("/api/v1/jackpots/"))


def test_players_me_while_travelling_and_on_arrival(client, player, django_assert_num_queries):
    now = timezone.now()
    travel.start_travel(player_id=player.pk, zone_code="ASH2", now=now)
    # + the journey in flight with its zones
    _count(django_assert_num_queries, 2, lambda: client.get("/api/v1/players/me/"))


def test_writes(client, player, django_assert_num_queries):
    combat = make_event(player.zone).combats.order_by("index").first()
    q = django_assert_num_queries
    # token (with the player); the unlocked read of the checks; then the transaction (a
    # savepoint here, BEGIN/COMMIT in production): player lock with the lock timeout and the
    # locked read (one round trip), the claim with the seat's insert and the combat's status
    # (one round trip, with the COMMIT in production): 4 round trips
    _count(q, 8, lambda: client.post(f"/api/v1/combats/{combat.pk}/registrations/"))
    Registration.objects.filter(player=player).delete()
    # token (with the player); the transaction (a savepoint here): the destination with the
    # player's lock, then the checks with the insert in one statement
    body = {"zone": "ASH2"}
    _count(q, 5, lambda: client.post("/api/v1/players/me/travel/", body, format="json"))
    # token (with the player); idempotency claim; the view's durable transaction (a
    # savepoint here): the contribution (one statement from claim to write, no savepoint of
    # its own), the stored answer
    _count(
        q,
        6,
        lambda: client.post(
            "/api/v1/jackpots/contributions/",
            {"bet": 100},
            format="json",
            HTTP_IDEMPOTENCY_KEY="bet-1",
        ),
    )
