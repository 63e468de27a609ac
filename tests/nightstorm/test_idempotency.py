"""Idempotency keys: applied once, replayed identically, refused on a different request."""

import pytest
from django.db.models import F
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from game.models import Player
from nightstorm.errors import Conflict
from nightstorm.idempotency import idempotent
from nightstorm.models import IdempotencyRecord
from tests.helpers import race
from tests.nightstorm.factories import make_player


class CreditView(APIView):
    """Adds `amount` gold to the caller's player: a state change worth doing exactly once."""

    @idempotent(required=True)
    def post(self, request):
        amount = request.data["amount"]
        if amount == 0:
            raise Conflict("nothing to credit", code="nothing_to_credit")
        Player.objects.filter(user=request.user).update(gold=F("gold") + amount)
        gold = Player.objects.get(user=request.user).gold
        return Response({"credited": amount, "gold": gold}, status=201)


def call(user, body, key="key-1"):
    factory = APIRequestFactory()
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    request = factory.post("/credit/", body, format="json", **headers)
    force_authenticate(request, user=user)
    response = CreditView.as_view()(request)
    response.render()
    return response


@pytest.mark.django_db
def test_a_repeat_replays_the_stored_response_without_doing_the_work_again():
    player = make_player()
    first = call(player.user, {"amount": 5})
    second = call(player.user, {"amount": 5})
    assert first.status_code == second.status_code == 201
    assert first.data == second.data == {"credited": 5, "gold": 5}
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    player.refresh_from_db()
    assert player.gold == 5


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_refused():
    player = make_player()
    call(player.user, {"amount": 5})
    response = call(player.user, {"amount": 6})
    assert response.status_code == 422
    assert response.data["code"] == "idempotency_key_reused"
    player.refresh_from_db()
    assert player.gold == 5


@pytest.mark.django_db
def test_keys_are_scoped_per_user():
    alice, bob = make_player(), make_player()
    call(alice.user, {"amount": 5})
    assert call(bob.user, {"amount": 5}).status_code == 201
    bob.refresh_from_db()
    assert bob.gold == 5


@pytest.mark.django_db
def test_missing_or_malformed_keys_are_400():
    player = make_player()
    assert call(player.user, {"amount": 5}, key=None).data["code"] == "idempotency_key_required"
    assert call(player.user, {"amount": 5}, key="x" * 300).data["code"] == "idempotency_key_invalid"
    player.refresh_from_db()
    assert player.gold == 0


@pytest.mark.django_db
def test_a_refused_request_records_nothing_and_may_be_retried():
    player = make_player()
    assert call(player.user, {"amount": 0}).status_code == 409
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_requests_with_one_key_apply_once_and_agree():
    player = make_player()
    responses = race(lambda _: call(player.user, {"amount": 7}), [(i,) for i in range(10)])
    assert all(not isinstance(r, Exception) for r in responses), responses
    assert {r.status_code for r in responses} == {201}
    assert {tuple(sorted(r.data.items())) for r in responses} == {(("credited", 7), ("gold", 7))}
    assert sum(1 for r in responses if r.has_header("Idempotent-Replayed")) == 9
    player.refresh_from_db()
    assert player.gold == 7


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_the_key_the_same_ten_requests_apply_ten_times():
    """The control: the race above is real, only the key makes it apply once."""
    player = make_player()

    class Unkeyed(CreditView):
        post = CreditView.post.__wrapped__

    def send(_):
        request = APIRequestFactory().post("/credit/", {"amount": 7}, format="json")
        force_authenticate(request, user=player.user)
        return Unkeyed.as_view()(request)

    race(send, [(i,) for i in range(10)])
    player.refresh_from_db()
    assert player.gold == 70


@pytest.mark.django_db
def test_the_same_body_written_differently_is_the_same_request():
    player = make_player()
    factory = APIRequestFactory()

    def send(raw):
        request = factory.post(
            "/credit/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
        )
        force_authenticate(request, user=player.user)
        response = CreditView.as_view()(request)
        response.render()
        return response

    first = send('{"amount": 5, "note": "x"}')
    second = send('{"note":"x","amount":5}')
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content  # byte for byte, keys in the same order
    player.refresh_from_db()
    assert player.gold == 5


@pytest.mark.django_db
def test_service_callers_have_their_own_key_space(settings):
    from nightstorm.api.permissions import service_token_or_staff

    settings.NIGHTSTORM_TEST_TOKEN = "gateway-secret"

    class ServiceView(APIView):
        authentication_classes = []
        permission_classes = [service_token_or_staff("NIGHTSTORM_TEST_TOKEN")]

        @idempotent(required=True)
        def post(self, request):
            return Response({"ok": True}, status=201)

    request = APIRequestFactory().post(
        "/svc/",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_AUTHORIZATION="Bearer gateway-secret",
    )
    assert ServiceView.as_view()(request).status_code == 201
    assert IdempotencyRecord.objects.get().scope == "service:NIGHTSTORM_TEST_TOKEN"
