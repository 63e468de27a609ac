"""API basics: token login, one error shape, OpenAPI, metrics and health."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from nightstorm.models import Heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user(username="ann", password="correct horse 9")


def test_token_login_returns_the_same_token_each_time(api_client, user):
    first = api_client.post(
        "/api/v1/auth/token/", {"username": "ann", "password": "correct horse 9"}
    )
    second = api_client.post(
        "/api/v1/auth/token/", {"username": "ann", "password": "correct horse 9"}
    )
    assert first.status_code == 200
    assert first.json()["token"] == second.json()["token"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "ann", "password": "wrong"}, "invalid_credentials"),
        ({"username": "ann"}, "invalid"),
        ({}, "invalid"),
    ],
)
def test_bad_logins_are_400_with_a_code(api_client, user, body, code):
    response = api_client.post("/api/v1/auth/token/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["detail"]


def test_validation_errors_name_the_fields(api_client, user):
    body = api_client.post("/api/v1/auth/token/", {"username": "ann"}, format="json").json()
    assert "password" in body["fields"]


def test_malformed_json_is_400_not_500(api_client):
    response = api_client.post(
        "/api/v1/auth/token/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_unknown_urls_answer_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_wrong_method_is_405_json(api_client):
    response = api_client.get("/api/v1/auth/token/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.urls("tests.nightstorm.urls")
def test_a_bad_token_is_401_json(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = api_client.get("/test/protected/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


@pytest.mark.urls("tests.nightstorm.urls")
def test_no_credentials_is_401_json(api_client):
    response = api_client.get("/test/protected/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.urls("tests.nightstorm.urls")
def test_a_good_token_authenticates(api_client, user):
    from rest_framework.authtoken.models import Token

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert api_client.get("/test/protected/").json() == {"user": "ann"}


@pytest.mark.urls("tests.nightstorm.urls")
def test_an_unexpected_error_is_a_json_500(client):
    client.raise_request_exception = False
    response = client.get("/test/crash/")
    assert response.status_code == 500
    assert response.json() == {"code": "server_error", "detail": "Internal server error."}


def test_login_is_throttled_with_retry_after(api_client, user, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "2/min")
    codes = [
        api_client.post("/api/v1/auth/token/", {"username": "ann", "password": "x"}).status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 429]
    last = api_client.post("/api/v1/auth/token/", {"username": "ann", "password": "x"})
    assert last.json()["code"] == "throttled"
    assert int(last["Retry-After"]) > 0


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/auth/token/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"nightstorm_conflicts_total" in response.content


def test_metrics_can_require_a_token(client, settings):
    settings.METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 403
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert ok.status_code == 200


def test_health_is_degraded_until_the_cluster_beats_then_ok(client):
    body = client.get("/health/").json()
    assert body["checks"]["task_cluster"]["state"] == "down"
    Heartbeat.objects.create(name="cluster", beat_at=timezone.now())
    response = client.get("/health/")
    checks = response.json()["checks"]
    assert response.status_code == 200
    assert checks["task_cluster"]["state"] == "ok"
    assert checks["database"]["state"] == "ok"


def test_health_is_503_when_a_required_part_is_down(client, monkeypatch):
    from nightstorm import health

    def broken():
        raise ConnectionError("gone")

    monkeypatch.setitem(health._checks, "database", health.Check("database", broken, True))
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["state"] == "down"


def test_a_stale_heartbeat_is_reported(client, settings):
    from datetime import timedelta

    Heartbeat.objects.create(name="cluster", beat_at=timezone.now() - timedelta(hours=1))
    check = client.get("/health/").json()["checks"]["task_cluster"]
    assert check["state"] == "down"
    assert check["reason"] == "heartbeat is stale"


@pytest.mark.redis
def test_health_reports_redis_latency(client):
    check = client.get("/health/").json()["checks"]["redis"]
    assert check["state"] == "ok"
    assert check["latency_ms"] >= 0


# --- hostile input never reaches a 500 ---------------------------------------------------


@pytest.mark.urls("tests.nightstorm.urls")
@pytest.mark.parametrize("key", ["\x00", "abc", "é" * 40, "0" * 41])
def test_a_malformed_token_is_401_not_a_database_error(client, key):
    response = client.get("/test/protected/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_a_non_ascii_bearer_token_is_refused_not_a_crash(client, settings):
    settings.METRICS_TOKEN = "scrape-me"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer café")
    assert response.status_code == 403


def test_deeply_nested_json_is_a_parse_error(api_client):
    body = "[" * 100_000
    response = api_client.post("/api/v1/auth/token/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize("url", ["/api/v1/zones/?x=%00", "/api/v1/combats/%00/", "/health/%00"])
def test_nul_bytes_in_urls_are_400(client, url):
    response = client.get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/health/", "/metrics"])
def test_plain_views_answer_405_in_json(client, path):
    response = client.post(path)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert client.head(path).status_code == 200


def test_docs_refuse_options_cleanly(client):
    assert client.options("/api/docs/").status_code == 405


@pytest.mark.urls("tests.nightstorm.urls")
def test_an_escaped_deadlock_is_503_busy_not_500(client):
    response = client.get("/test/deadlock/")
    assert response.status_code == 503
    assert response.json()["code"] == "busy"
    assert response["Retry-After"] == "1"


@pytest.mark.urls("tests.nightstorm.urls")
@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/test/connection-lost/", "database_unavailable"),
        ("/test/redis-down/", "redis_unavailable"),
    ],
)
def test_a_lost_database_connection_or_redis_is_503_not_500(client, path, code):
    """tests/faults provokes both for real (pg_terminate_backend, a stopped redis-server)."""
    response = client.get(path)
    assert response.status_code == 503
    assert response.json()["code"] == code
    assert response["Retry-After"] == "1"


@pytest.mark.urls("tests.nightstorm.urls")
def test_a_value_the_database_refuses_is_400(client):
    response = client.get("/test/data-error/")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_value"


def test_only_a_dropped_or_refused_connection_counts_as_lost():
    from django.db import IntegrityError, InterfaceError, OperationalError

    from nightstorm.transactions import is_connection_lost

    def raised(error, sqlstate=None):
        cause = type("Cause", (Exception,), {"sqlstate": sqlstate})()
        try:
            raise error("boom") from cause
        except Exception as exc:
            return exc

    for state in ("57P01", "57P02", "57P03", "08006", "08001"):
        assert is_connection_lost(raised(OperationalError, state)), state
    assert is_connection_lost(InterfaceError("connection already closed"))
    for state in ("40P01", "40001", "55P03", "23505"):
        assert not is_connection_lost(raised(OperationalError, state)), state
    assert not is_connection_lost(OperationalError("database is locked"))  # SQLite: busy
    assert not is_connection_lost(raised(IntegrityError, "08006"))
