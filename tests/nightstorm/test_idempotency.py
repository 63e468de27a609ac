"""Idempotency keys: applied once, replayed identically, refused on a different request."""

import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import DatabaseError, connections, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from nightstorm.errors import Conflict
from nightstorm.idempotency import idempotent, request_fingerprint
from nightstorm.models import IdempotencyRecord
from tests.helpers import race
from tests.nightstorm.factories import make_account
from tests.toolkit_app.models import Account


class CreditView(APIView):
    """Adds `amount` gold to the caller's account: a state change worth doing exactly once."""

    @idempotent(required=True)
    def post(self, request):
        amount = request.data["amount"]
        if amount == 0:
            raise Conflict("nothing to credit", code="nothing_to_credit")
        Account.objects.filter(user=request.user).update(gold=F("gold") + amount)
        gold = Account.objects.get(user=request.user).gold
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
    account = make_account()
    first = call(account.user, {"amount": 5})
    second = call(account.user, {"amount": 5})
    assert first.status_code == second.status_code == 201
    assert first.data == second.data == {"credited": 5, "gold": 5}
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    account.refresh_from_db()
    assert account.gold == 5


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_refused():
    account = make_account()
    call(account.user, {"amount": 5})
    response = call(account.user, {"amount": 6})
    assert response.status_code == 422
    assert response.data["code"] == "idempotency_key_reused"
    account.refresh_from_db()
    assert account.gold == 5


@pytest.mark.django_db
def test_keys_are_scoped_per_user():
    alice, bob = make_account(), make_account()
    call(alice.user, {"amount": 5})
    assert call(bob.user, {"amount": 5}).status_code == 201
    bob.refresh_from_db()
    assert bob.gold == 5


@pytest.mark.django_db
def test_missing_or_malformed_keys_are_400():
    account = make_account()
    assert call(account.user, {"amount": 5}, key=None).data["code"] == "idempotency_key_required"
    assert (
        call(account.user, {"amount": 5}, key="x" * 300).data["code"] == "idempotency_key_invalid"
    )
    account.refresh_from_db()
    assert account.gold == 0


@pytest.mark.django_db
def test_a_refusal_is_stored_and_replayed_as_such_and_applies_nothing():
    account = make_account()
    first = call(account.user, {"amount": 0})
    second = call(account.user, {"amount": 0})
    assert first.status_code == second.status_code == 409
    assert first.data == second.data
    assert second["Idempotent-Replayed"] == "true"
    assert IdempotencyRecord.objects.get().status_code == 409
    account.refresh_from_db()
    assert account.gold == 0


class CrashView(APIView):
    """Writes, then crashes: a 500 that must leave neither the write nor the claim behind."""

    @idempotent(required=True)
    def post(self, request):
        Account.objects.filter(user=request.user).update(gold=F("gold") + 1)
        if request.data.get("crash"):
            raise RuntimeError("the worker fell over")
        return Response({"ok": True}, status=201)


@pytest.mark.django_db
def test_a_crash_rolls_the_work_back_and_releases_the_key_for_a_retry():
    account = make_account()
    factory = APIRequestFactory()

    def send(view):
        request = factory.post("/c/", {"crash": True}, format="json", HTTP_IDEMPOTENCY_KEY="k")
        force_authenticate(request, user=account.user)
        return view(request)

    with pytest.raises(RuntimeError):
        send(CrashView.as_view())
    assert not IdempotencyRecord.objects.exists()
    account.refresh_from_db()
    assert account.gold == 0

    class Healed(CrashView):
        @idempotent(required=True)
        def post(self, request):
            Account.objects.filter(user=request.user).update(gold=F("gold") + 1)
            return Response({"ok": True}, status=201)

    assert send(Healed.as_view()).status_code == 201
    account.refresh_from_db()
    assert account.gold == 1


def _stale_claim(account, *, seconds: int, body=None):
    """A claim as a request that died after claiming would leave it."""
    factory = APIRequestFactory()
    request = factory.post("/credit/", body or {"amount": 5}, format="json")
    force_authenticate(request, user=account.user)
    request = CreditView().initialize_request(request)
    return IdempotencyRecord.objects.create(
        scope=f"user:{account.user.pk}",
        key="key-1",
        request_hash=request_fingerprint(request),
        claim_token="dead",
        claimed_until=timezone.now() + timedelta(seconds=seconds),
    )


@pytest.mark.django_db
def test_a_live_claim_answers_409_in_progress_with_retry_after():
    account = make_account()
    _stale_claim(account, seconds=20)
    response = call(account.user, {"amount": 5})
    assert response.status_code == 409
    assert response.data["code"] == "idempotency_in_progress"
    assert 1 <= int(response["Retry-After"]) <= 5
    account.refresh_from_db()
    assert account.gold == 0


@pytest.mark.django_db
def test_an_expired_claim_left_by_a_dead_request_is_taken_over_and_applied_once():
    account = make_account()
    _stale_claim(account, seconds=-1)
    assert call(account.user, {"amount": 5}).status_code == 201
    assert call(account.user, {"amount": 5})["Idempotent-Replayed"] == "true"
    account.refresh_from_db()
    assert account.gold == 5
    assert IdempotencyRecord.objects.get().claim_token != "dead"


class SlowView(APIView):
    """Its lease runs out while it works and a retry takes the key over meanwhile."""

    @idempotent(required=True)
    def post(self, request):
        Account.objects.filter(user=request.user).update(gold=F("gold") + 1)
        # What a retry does once this request's lease has run out (see `claim`).
        IdempotencyRecord.objects.filter(pk=request.idempotency.record_id).update(
            claim_token="taken-over"
        )
        return Response({"ok": True}, status=201)


@pytest.mark.django_db
def test_a_request_whose_claim_was_taken_over_rolls_back_its_work():
    account = make_account()
    request = APIRequestFactory().post("/s/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    force_authenticate(request, user=account.user)
    response = SlowView.as_view()(request)
    assert response.status_code == 409
    assert response.data["code"] == "idempotency_in_progress"
    account.refresh_from_db()
    assert account.gold == 0  # the taker applies it; this one must not


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_concurrent_duplicate_is_409_while_the_first_works_then_replays():
    account = make_account()
    working, release = threading.Event(), threading.Event()

    class Blocking(APIView):
        @idempotent(required=True)
        def post(self, request):
            Account.objects.filter(user=request.user).update(gold=F("gold") + 9)
            working.set()
            assert release.wait(10)
            return Response({"ok": True}, status=201)

    def send():
        request = APIRequestFactory().post("/b/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k")
        force_authenticate(request, user=account.user)
        try:
            return Blocking.as_view()(request)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(send)
        assert working.wait(10)
        duplicate = send()
        release.set()
        assert first.result(10).status_code == 201
    assert duplicate.status_code == 409
    assert duplicate.data["code"] == "idempotency_in_progress"
    assert duplicate.has_header("Retry-After")
    assert send()["Idempotent-Replayed"] == "true"
    account.refresh_from_db()
    assert account.gold == 9


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_idempotency_row_is_locked_while_the_work_runs():
    """The work's transaction holds only what the work locks: another transaction can lock
    the request's idempotency row while the work is in flight (the old design held it FOR
    UPDATE from the first statement to the commit)."""
    account = make_account()
    probe = []

    class Probing(APIView):
        @idempotent(required=True)
        def post(self, request):
            def try_lock():
                try:
                    with transaction.atomic():
                        rows = IdempotencyRecord.objects.select_for_update(nowait=True).filter(
                            pk=request.idempotency.record_id
                        )
                        probe.append(len(list(rows)))
                except DatabaseError as exc:
                    probe.append(exc)
                finally:
                    connections.close_all()

            thread = threading.Thread(target=try_lock)
            thread.start()
            thread.join(10)
            return Response({"ok": True}, status=201)

    request = APIRequestFactory().post("/p/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    force_authenticate(request, user=account.user)
    assert Probing.as_view()(request).status_code == 201
    assert probe == [1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_requests_with_one_key_apply_once_and_agree():
    account = make_account()
    responses = race(lambda _: call(account.user, {"amount": 7}), [(i,) for i in range(10)])
    assert all(not isinstance(r, Exception) for r in responses), responses
    applied = [
        r for r in responses if r.status_code == 201 and not r.has_header("Idempotent-Replayed")
    ]
    assert len(applied) == 1
    others = {(r.status_code, r.data.get("code")) for r in responses if r is not applied[0]}
    # A duplicate either arrived while the first worked (409, retry later) or after (replay).
    assert others <= {(409, "idempotency_in_progress"), (201, None)}
    assert call(account.user, {"amount": 7}).data == applied[0].data == {"credited": 7, "gold": 7}
    account.refresh_from_db()
    assert account.gold == 7


def check_then_act(view, *, everyone_checked: threading.Barrier):
    """The naive key: look the key up, and if it is not recorded yet do the work and record
    it. Every request passes the check before any records the key (the barrier holds that
    window open), which is the race the claim-first design closes."""

    @functools.wraps(view)
    def post(self, request, *args, **kwargs):
        scope, key = f"user:{request.user.pk}", request.headers["Idempotency-Key"]
        if IdempotencyRecord.objects.filter(scope=scope, key=key).exists():
            return Response({"replayed": True}, status=201)
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_checked.wait()
        with transaction.atomic():
            response = view(self, request, *args, **kwargs)
            IdempotencyRecord.objects.bulk_create(
                [IdempotencyRecord(scope=scope, key=key, request_hash="-", status_code=201)],
                ignore_conflicts=True,
            )
        return response

    return post


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_a_check_then_act_key_applies_the_same_ten_requests_more_than_once():
    """The control: the same ten requests with one key, through a key that is checked before
    the work instead of claimed, credit the account once per request."""
    account, requests = make_account(), 10
    everyone_checked = threading.Barrier(requests, timeout=10)

    class NaiveKeyed(CreditView):
        post = check_then_act(CreditView.post.__wrapped__, everyone_checked=everyone_checked)

    def send(_):
        request = APIRequestFactory().post(
            "/credit/", {"amount": 7}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
        )
        force_authenticate(request, user=account.user)
        return NaiveKeyed.as_view()(request)

    responses = race(send, [(i,) for i in range(requests)])
    assert [r.status_code for r in responses] == [201] * requests, responses
    account.refresh_from_db()
    assert account.gold == 7 * requests
    assert IdempotencyRecord.objects.count() == 1  # one record, ten payouts


@pytest.mark.django_db
def test_the_same_body_written_differently_is_the_same_request():
    account = make_account()
    factory = APIRequestFactory()

    def send(raw):
        request = factory.post(
            "/credit/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
        )
        force_authenticate(request, user=account.user)
        response = CreditView.as_view()(request)
        response.render()
        return response

    first = send('{"amount": 5, "note": "x"}')
    second = send('{"note":"x","amount":5}')
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content  # byte for byte, keys in the same order
    account.refresh_from_db()
    assert account.gold == 5


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
