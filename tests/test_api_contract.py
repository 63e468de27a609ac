"""The served OpenAPI contract, validated pagination parameters and default throttling."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.jackpot.factories import PlayerFactory

pytestmark = pytest.mark.django_db

SERVICE_TOKEN = "contract-service-token-0123456789"


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _header_params(operation) -> dict:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}


def test_every_error_answer_is_documented_with_the_error_component(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "detail"} and "fields" in error["properties"]
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        assert {"429", "503"} <= set(responses), (method, path)
        assert "Retry-After" in responses["429"]["headers"]
        for status, response in responses.items():
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, status)
        if operation.get("security") and {} not in operation["security"]:
            assert {"401", "403"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if method in ("post", "patch") and "requestBody" in operation:
            assert {"400", "415"} <= set(responses), (method, path)


def test_request_and_response_headers_are_declared(schema):
    paths = schema["paths"]
    contribute = paths["/api/v1/jackpots/contributions/"]["post"]
    key = _header_params(contribute)["Idempotency-Key"]
    assert key["required"] and key["schema"]["maxLength"] == 255
    assert "Idempotent-Replayed" in contribute["responses"]["201"]["headers"]
    assert {"409", "422"} <= set(contribute["responses"])
    travel = paths["/api/v1/players/me/travel/"]["post"]
    assert not _header_params(travel)["Idempotency-Key"].get("required", False)
    patch = paths["/api/v1/jackpots/{group}/"]["patch"]
    assert _header_params(patch)["If-Match"]["required"]
    assert {"412", "428"} <= set(patch["responses"])
    for path in ("/api/v1/jackpots/{group}/", "/api/v1/players/me/", "/api/v1/combats/{id}/"):
        assert "ETag" in paths[path]["get"]["responses"]["200"]["headers"], path
    wins = paths["/api/v1/jackpots/{group}/wins/"]["post"]
    assert {"serviceToken": []} in wins["security"]
    assert schema["components"]["securitySchemes"]["serviceToken"]["scheme"] == "bearer"


def test_field_constraints_filters_and_paginated_shapes(schema):
    components = schema["components"]["schemas"]
    bet = components["ContributionIn"]["properties"]["bet"]
    assert bet["minimum"] == 1 and bet["maximum"] > 1
    zone = components["TravelInput"]["properties"]["zone"]["allOf"][0]["$ref"]
    assert len(components[zone.rsplit("/", 1)[1]]["enum"]) == 81
    remote = components["ConnectionRegisterInput"]["properties"]["remote_addr"]
    assert {"format": "ipv4"} in remote["anyOf"]
    register = components["RegisterInput"]["properties"]
    assert register["password"]["minLength"] == 8 and register["username"]["maxLength"] == 150
    assert register["username"]["pattern"] == r"^[\w.@+-]+$"
    connections = schema["paths"]["/api/v1/connections/"]["get"]
    listed = connections["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = components[listed.rsplit("/", 1)[1]]
    assert {"count", "next", "previous", "results"} <= set(page["properties"])
    params = {p["name"]: p for p in connections["parameters"]}
    assert params["page"]["schema"]["minimum"] == 1 and "enum" in params["state"]["schema"]
    ledger = schema["paths"]["/api/v1/jackpots/ledger/"]["get"]
    params = {p["name"] for p in ledger["parameters"]}
    assert {"cursor", "group", "kind", "operation_id"} <= params


@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5", ""])
def test_a_malformed_page_is_a_400_with_a_code(api_client, page):
    response = api_client.get("/api/v1/jackpots/", {"page": page})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_page"


def test_a_page_past_the_end_is_a_404(api_client):
    assert api_client.get("/api/v1/jackpots/", {"page": 1}).status_code == 200
    response = api_client.get("/api/v1/jackpots/", {"page": 99})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def _throttled(responses):
    last = responses[-1]
    assert [r.status_code for r in responses[:-1]] == [200] * (len(responses) - 1)
    assert last.status_code == 429
    assert last.json()["code"] == "throttled" and last.json()["detail"]
    assert int(last["Retry-After"]) >= 1


def test_anonymous_callers_are_throttled_by_default(api_client, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "anon", "2/min")
    _throttled([api_client.get("/api/v1/zones/") for _ in range(3)])
    assert api_client.get("/api/schema/").status_code == 429  # the schema too


def test_accounts_are_throttled_per_user(monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "2/min")
    first, second = APIClient(), APIClient()
    first.force_authenticate(PlayerFactory().user)
    second.force_authenticate(PlayerFactory().user)
    _throttled([first.get("/api/v1/players/me/") for _ in range(3)])
    assert second.get("/api/v1/players/me/").status_code == 200  # its own count


def test_service_tokens_are_not_throttled(api_client, monkeypatch, settings):
    settings.CONNECTIONS_SERVICE_TOKEN = SERVICE_TOKEN
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "anon", "2/min")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {SERVICE_TOKEN}")
    codes = {api_client.get("/api/v1/connections/").status_code for _ in range(5)}
    assert codes == {200}


def test_staff_without_a_service_token_are_throttled_as_accounts(monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "2/min")
    staff = get_user_model().objects.create_user("gm", password="x", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    _throttled([client.get("/api/v1/connections/") for _ in range(3)])
