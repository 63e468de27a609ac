"""The game API: every endpoint's happy path and its 4xx answers, in the contract's shape."""

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer

from game import registration, selectors
from game.models import Combat, Journey, Player, Registration, Zone
from game.storms import events as nightstorms
from nightstorm.api.pagination import PageNumberPagination
from tests.game.factories import ZoneFactory, make_event, make_players

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    call_command("seed_world")


def _client_for(api_client, player):
    token, _ = Token.objects.get_or_create(user_id=player.user_id)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


@pytest.fixture
def player(world):
    from game.models import Zone

    (p,) = make_players(1, zone=Zone.objects.get(code="ASH1"))
    return p


@pytest.fixture
def client(api_client, player):
    return _client_for(api_client, player)


def _error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


def test_register_creates_user_player_and_token(api_client, world):
    response = api_client.post(
        "/api/v1/auth/register/",
        {"username": "neo", "password": "a-long-passphrase-42"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["player"]["name"] == "neo" and body["player"]["zone"] == "ASH1"
    assert Token.objects.get(key=body["token"]).user.username == "neo"

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    me = api_client.get("/api/v1/players/me/")
    assert me.status_code == 200 and me.json()["id"] == body["player"]["id"]


def test_register_refusals(api_client, world):
    _error(
        api_client.post(
            "/api/v1/auth/register/", {"username": "neo", "password": "123"}, format="json"
        ),
        400,
        "weak_password",
    )
    _error(
        api_client.post(
            "/api/v1/auth/register/", {"username": "n e o", "password": "x"}, format="json"
        ),
        400,
        "invalid",
    )
    _error(
        api_client.post("/api/v1/auth/register/", "not json", content_type="application/json"),
        400,
        "parse_error",
    )
    ok = {"username": "neo", "password": "a-long-passphrase-42"}
    assert api_client.post("/api/v1/auth/register/", ok, format="json").status_code == 201
    _error(api_client.post("/api/v1/auth/register/", ok, format="json"), 409, "username_taken")
    assert get_user_model().objects.filter(username="neo").count() == 1


def test_register_is_throttled(api_client, world, settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "register": "2/hour"}
    from rest_framework.throttling import ScopedRateThrottle

    old = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = rates
    try:
        for i in range(2):
            api_client.post(
                "/api/v1/auth/register/", {"username": f"u{i}", "password": "x"}, format="json"
            )
        response = api_client.post(
            "/api/v1/auth/register/", {"username": "u9", "password": "x"}, format="json"
        )
        _error(response, 429, "throttled")
        assert response.headers["Retry-After"]
    finally:
        ScopedRateThrottle.THROTTLE_RATES = old


def test_me_has_etag_and_travel(client, player):
    response = client.get("/api/v1/players/me/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"id", "name", "zone", "gold", "hp", "level", "version", "travel"}
    assert response.headers["ETag"] == f'"{body["version"]}"' and body["travel"] is None


def test_me_needs_auth_and_a_player(api_client, world):
    _error(api_client.get("/api/v1/players/me/"), 401, "not_authenticated")
    staff = get_user_model().objects.create_user("gm", password="x")
    api_client.force_authenticate(staff)
    _error(api_client.get("/api/v1/players/me/"), 404, "no_player")


def test_a_token_whose_player_was_deleted_finds_no_player(client, player):
    assert client.get("/api/v1/players/me/").status_code == 200
    player.delete()  # soft: the row stays, hidden
    _error(client.get("/api/v1/players/me/"), 404, "no_player")
    _error(
        client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json"), 404, "no_player"
    )


def test_travel_and_lazy_arrival(client, player):
    response = client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["destination"] == "ASH2" and response.json()["arrives_at"]
    _error(
        client.post("/api/v1/players/me/travel/", {"zone": "ASH3"}, format="json"),
        409,
        "already_traveling",
    )
    me = client.get("/api/v1/players/me/").json()
    assert me["travel"]["destination"] == "ASH2" and me["zone"] == "ASH1"

    Journey.objects.update(
        arrives_at=timezone.now() - timedelta(seconds=1),
        started_at=timezone.now() - timedelta(seconds=2),
    )
    me = client.get("/api/v1/players/me/").json()
    assert me["travel"] is None and me["zone"] == "ASH2"


def _writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().split(" ", 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}
    ]


def test_reading_the_player_writes_nothing_even_with_a_journey_due(client, player):
    assert client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json").status_code
    Journey.objects.update(
        arrives_at=timezone.now() - timedelta(seconds=1),
        started_at=timezone.now() - timedelta(seconds=2),
    )
    version = Player.objects.get(pk=player.pk).version
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/api/v1/players/me/")
    assert response.status_code == 200
    assert _writes(ctx.captured_queries) == []
    me = response.json()
    assert (me["zone"], me["travel"], me["version"]) == ("ASH2", None, version)
    assert response["ETag"] == f'"{version}"'
    # Still in flight in the database: the arrivals task lands it, and the read agrees.
    assert Journey.objects.get().arrived_at is None
    assert Player.objects.get(pk=player.pk).zone.code == "ASH1"
    from game import travel

    assert travel.apply_arrivals() == 1
    after = client.get("/api/v1/players/me/").json()
    assert (after["zone"], after["travel"], after["version"]) == ("ASH2", None, version + 1)


def test_travel_refusals(client, player):
    _error(
        client.post("/api/v1/players/me/travel/", {"zone": "NOPE"}, format="json"),
        400,
        "unknown_zone",
    )
    _error(client.post("/api/v1/players/me/travel/", {}, format="json"), 400, "invalid")
    _error(
        client.post("/api/v1/players/me/travel/", {"zone": "ASH1"}, format="json"),
        409,
        "already_there",
    )
    combat = make_event(player.zone).combats.first()
    registration.register(player_id=player.pk, combat_id=combat.pk)
    _error(
        client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json"), 409, "in_combat"
    )
    assert not Journey.objects.exists()


def test_travel_with_idempotency_key_replays(client, player):
    headers = {"HTTP_IDEMPOTENCY_KEY": "trip-1"}
    first = client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json", **headers)
    again = client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json", **headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Journey.objects.count() == 1


def test_zones_lists_all_81_with_next_nightstorm(api_client, world):
    Schedule.objects.create(
        name="nightstorm:ASH1",
        func="x.y",
        next_run=timezone.now(),
        schedule_type=Schedule.MINUTES,
        minutes=60,
    )
    response = api_client.get("/api/v1/zones/")
    assert response.status_code == 200
    zones = response.json()
    assert len(zones) == 81
    by_code = {z["code"]: z for z in zones}
    assert by_code["ASH1"]["next_nightstorm_at"] is not None
    assert by_code["ASH2"]["next_nightstorm_at"] is None
    assert set(by_code["ASH2"]) == {"code", "name", "region", "next_nightstorm_at"}


def test_nightstorms_newest_first_without_n_plus_one(client):
    zone = ZoneFactory()
    old = make_event(zone, slot=timezone.now() - timedelta(hours=2))
    for _ in range(4):
        make_event(ZoneFactory())
    (p,) = make_players(1, zone=zone)
    registration.register(player_id=p.pk, combat_id=old.combats.order_by("index").first().pk)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/nightstorms/")
    assert response.status_code == 200
    assert len(queries) <= 5, [q["sql"] for q in queries]
    body = response.json()
    assert body["count"] == 5
    assert body["results"][-1]["id"] == str(old.pk)
    combats = body["results"][-1]["combats"]
    assert [c["participant_count"] for c in combats] == [1, 0, 0]
    assert set(combats[0]) == {"id", "status", "capacity", "participant_count"}


@pytest.mark.postgres
def test_zones_rendered_by_postgresql_answer_as_the_portable_rows(api_client, world):
    for code, next_run in (
        ("ASH1", timezone.now()),  # microseconds
        ("ASH3", timezone.now().replace(microsecond=0) + timedelta(hours=1)),
    ):
        Schedule.objects.create(
            name=f"nightstorm:{code}",
            func="game.tasks.open_nightstorm",
            next_run=next_run,
            schedule_type=Schedule.MINUTES,
            minutes=60,
        )
    fast = api_client.get("/api/v1/zones/")
    assert fast.status_code == 200 and fast["Content-Type"] == "application/json"
    # The rows the other databases serve, through the API's renderer.
    portable = JSONRenderer().render(selectors.zones_with_next_nightstorm())
    assert fast.json() == json.loads(portable)
    assert len(fast.json()) == 81


@pytest.mark.postgres
def test_nightstorms_pages_from_one_query_answer_as_the_portable_pages(client, monkeypatch):
    # The PostgreSQL path (one statement: page, combats, window count) against the portable
    # one (count, page, combats) on the same rows: every page, its links and the edge cases.
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    zone = ZoneFactory()
    base = timezone.now().replace(microsecond=0)
    events = [make_event(zone, slot=base + timedelta(minutes=i)) for i in range(5)]
    make_event(ZoneFactory(), slot=base + timedelta(minutes=2, microseconds=5))
    (p,) = make_players(1, zone=zone)
    registration.register(player_id=p.pk, combat_id=events[3].combats.order_by("index")[1].pk)

    def pages(**query):
        return [
            client.get("/api/v1/nightstorms/", query)
            for query in (
                {},
                {"page": 1},
                {"page": 2},
                {"page": 3},
                {"page": 4},
                {"page": "last"},
                {"page": "abc"},
                {"page": 0},
            )
        ]

    fast = pages()
    with mock.patch.object(connection, "vendor", "portable"):
        portable = pages()
    assert [r.status_code for r in fast] == [200, 200, 200, 200, 404, 200, 400, 400]
    for one, other in zip(fast, portable, strict=True):
        assert (one.status_code, one.json()) == (other.status_code, other.json())
    first = fast[0].json()
    assert first["count"] == 6 and len(first["results"]) == 2
    assert first["next"].endswith("?page=2") and first["previous"] is None
    assert fast[2].json()["previous"].endswith("/nightstorms/")
    seated = fast[1].json()["results"][1]
    assert seated["id"] == str(events[3].pk)
    assert [c["participant_count"] for c in seated["combats"]] == [0, 1, 0]


def test_nightstorms_need_auth(api_client):
    _error(api_client.get("/api/v1/nightstorms/"), 401, "not_authenticated")


def test_combat_detail_and_registration(client, player):
    combat = make_event(player.zone).combats.order_by("index").first()
    response = client.get(f"/api/v1/combats/{combat.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["capacity"], body["participant_count"], body["turn"]) == (
        "open",
        10,
        0,
        0,
    )
    assert response.headers["ETag"] == f'"{body["version"]}"'

    created = client.post(f"/api/v1/combats/{combat.pk}/registrations/")
    assert created.status_code == 201, created.content
    assert created.json()["player"] == str(player.pk)
    after = client.get(f"/api/v1/combats/{combat.pk}/")
    assert after.json()["participant_count"] == 1
    assert after.json()["version"] == body["version"] + 1

    _error(client.post(f"/api/v1/combats/{combat.pk}/registrations/"), 409, "already_registered")
    other = combat.event.combats.exclude(pk=combat.pk).first()
    _error(client.post(f"/api/v1/combats/{other.pk}/registrations/"), 409, "in_other_combat")


def test_registration_refusals(client, player):
    event = make_event(player.zone)
    combats = list(event.combats.order_by("index"))
    others = make_players(10, zone=player.zone)
    for p in others:
        registration.register(player_id=p.pk, combat_id=combats[0].pk)
    _error(client.post(f"/api/v1/combats/{combats[0].pk}/registrations/"), 409, "combat_full")
    nightstorms.cancel_combat(combat_id=combats[1].pk)
    _error(
        client.post(f"/api/v1/combats/{combats[1].pk}/registrations/"), 409, "registration_closed"
    )
    _error(client.post("/api/v1/combats/not-a-uuid/registrations/"), 404, "combat_not_found")
    _error(
        client.post(f"/api/v1/combats/{Player.objects.first().pk}/registrations/"),
        404,
        "combat_not_found",
    )
    _error(client.get("/api/v1/combats/not-a-uuid/"), 404, "combat_not_found")
    _error(
        client.get("/api/v1/combats/00000000-0000-0000-0000-000000000000/"), 404, "combat_not_found"
    )
    assert Combat.objects.get(pk=combats[1].pk).status == "cancelled"


def test_registration_needs_the_combats_zone_and_no_journey(client, player):
    elsewhere = make_event(Zone.objects.get(code="ASH2")).combats.order_by("index").first()
    url = f"/api/v1/combats/{elsewhere.pk}/registrations/"
    _error(client.post(url), 409, "not_in_combat_zone")
    here = make_event(player.zone).combats.order_by("index").first()
    assert client.post("/api/v1/players/me/travel/", {"zone": "ASH2"}, format="json").status_code
    _error(client.post(f"/api/v1/combats/{here.pk}/registrations/"), 409, "traveling")
    _error(client.post(url), 409, "traveling")
    assert not Registration.objects.exists()
    assert Combat.objects.get(pk=here.pk).seats == 0


def test_bad_bodies_get_4xx_and_change_nothing(client, player):
    url = "/api/v1/players/me/travel/"
    _error(client.post(url, "{not json", content_type="application/json"), 400, "parse_error")
    _error(client.post(url, {"zone": ["ASH2"]}, format="json"), 400, "invalid")
    _error(client.post(url, {"zone": "X" * 50}, format="json"), 400, "invalid")
    response = client.post(url, "zone=ASH2", content_type="application/x-www-form-urlencoded")
    _error(response, 415, "unsupported_media_type")
    _error(client.post(url, ["ASH2"], format="json"), 400, "invalid")
    assert not Journey.objects.exists()
    _error(client.get("/api/v1/combats/%00/"), 400, "bad_request")
    _error(
        client.post("/api/v1/combats/123/registrations/", "{bad", content_type="application/json"),
        404,
        "combat_not_found",
    )
