"""REST surface: 201/200/204, 400 codes that change nothing, 403 for players, 404 JSON, and
idempotent registration across a failure between the store write and the database commit."""

import contextlib
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection

from connections import api
from connections.web import get_connections
from tests.connections.factories import PlayerFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/connections/"
TOKEN = "gateway-secret-token"


@pytest.fixture
def gateway(api_client, settings):
    settings.CONNECTIONS_SERVICE_TOKEN = TOKEN
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return api_client


@pytest.fixture
def staff_user_client():
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("gm2", is_staff=True))
    return client


@pytest.fixture
def staff(api_client):
    user = get_user_model().objects.create_user("gm", password="x", is_staff=True)
    api_client.force_authenticate(user)
    return api_client


def register(client, **body):
    response = client.post(
        URL, {"protocol": "telnet", "remote_addr": "10.0.0.1", **body}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_register_list_bind_metadata_delete(gateway, service):
    body = register(gateway)
    handle = body["handle"]
    assert body["state"] == "connected" and body["player"] is None
    player = PlayerFactory(name="Vega")

    bound = gateway.post(f"{URL}{handle}/bind/", {"player": "Vega"}, format="json")
    assert bound.status_code == 200
    assert (bound.json()["player"], bound.json()["state"]) == (str(player.pk), "logged_in")
    again = gateway.post(f"{URL}{handle}/bind/", {"player": str(player.pk)}, format="json")
    assert again.status_code == 200  # same player by id: idempotent

    patched = gateway.patch(
        f"{URL}{handle}/metadata/", {"client": "mudlet", "width": 80}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["metadata"] == {"client": "mudlet", "width": "80"}
    service.flush()

    listed = gateway.get(URL)
    assert listed.status_code == 200
    page = listed.json()
    assert page["count"] == 1
    row = page["results"][0]
    assert (row["handle"], row["player_name"], row["metadata"]) == (
        handle,
        "Vega",
        {"client": "mudlet", "width": "80"},
    )
    assert row["idle_seconds"] >= 0
    assert gateway.get(URL, {"state": "connected"}).json()["count"] == 0
    assert gateway.get(f"{URL}{handle}/").json()["player_name"] == "Vega"

    assert gateway.delete(f"{URL}{handle}/").status_code == 204
    gone = gateway.delete(f"{URL}{handle}/")
    assert gone.status_code == 404 and gone.json()["code"] == "connection_not_found"
    assert gateway.get(URL).json()["count"] == 0


def test_staff_may_use_it(staff):
    assert register(staff)["handle"] > 0
    assert staff.get(URL).status_code == 200


def test_players_and_strangers_are_refused(api_client, settings):
    settings.CONNECTIONS_SERVICE_TOKEN = TOKEN
    assert api_client.get(URL).status_code in (401, 403)
    api_client.credentials(HTTP_AUTHORIZATION="Bearer wrong-token")
    assert api_client.get(URL).status_code in (401, 403)
    api_client.credentials()
    player = PlayerFactory()
    api_client.force_authenticate(player.user)
    refused = api_client.post(URL, {"protocol": "telnet", "remote_addr": "10.0.0.1"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert api_client.get(URL).status_code == 403
    assert api_client.delete(f"{URL}1/").status_code == 403


@pytest.mark.parametrize(
    "body,field",
    [
        ({"protocol": "telnet", "remote_addr": "not-an-ip"}, "remote_addr"),
        ({"protocol": "Tel Net", "remote_addr": "10.0.0.1"}, "protocol"),
        ({"protocol": "telnet"}, "remote_addr"),
    ],
)
def test_register_bad_input(gateway, service, body, field):
    response = gateway.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()["fields"]
    assert service.online(shared=True) == []


@pytest.mark.parametrize(
    "body,code",
    [
        ([1, 2], "invalid_metadata"),
        ({}, "invalid_metadata"),
        ({"nested": {"a": 1}}, "invalid_metadata"),
        ({"bad key!": "x"}, "invalid_metadata"),
        ({"flag": True}, "invalid_metadata"),
        ({"big": "x" * 5000}, "invalid_metadata"),
        ({f"k{i}": i for i in range(40)}, "metadata_too_large"),
    ],
)
def test_metadata_bad_input_changes_nothing(gateway, service, body, code):
    handle = register(gateway)["handle"]
    response = gateway.patch(f"{URL}{handle}/metadata/", body, format="json")
    assert response.status_code == 400 and response.json()["code"] == code
    service.flush()
    assert service.lookup(handle).metadata == {}


def test_bind_errors(gateway):
    handle = register(gateway)["handle"]
    missing = gateway.post(f"{URL}{handle}/bind/", {"player": "Nobody"}, format="json")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_player"
    empty = gateway.post(f"{URL}{handle}/bind/", {}, format="json")
    assert empty.status_code == 400 and empty.json()["code"] == "invalid"
    first, second = PlayerFactory(), PlayerFactory()
    ok = gateway.post(f"{URL}{handle}/bind/", {"player": first.name}, format="json")
    assert ok.status_code == 200
    taken = gateway.post(f"{URL}{handle}/bind/", {"player": second.name}, format="json")
    assert taken.status_code == 409 and taken.json()["code"] == "already_bound"


def test_unknown_handle_is_json_404(gateway):
    for response in (
        gateway.post(f"{URL}424242/bind/", {"player": "x"}, format="json"),
        gateway.patch(f"{URL}424242/metadata/", {"a": "b"}, format="json"),
        gateway.delete(f"{URL}424242/"),
        gateway.get(f"{URL}424242/"),
    ):
        assert response.status_code in (400, 404)
        assert response.json()["code"] in ("connection_not_found", "unknown_player")
    assert gateway.patch(f"{URL}424242/metadata/", {"a": "b"}, format="json").status_code == 404
    assert gateway.delete(f"{URL}not-a-handle/").status_code == 404
    assert gateway.get(URL, {"state": "dancing"}).json()["code"] == "invalid_state"


def test_register_replays_with_an_idempotency_key(gateway, service):
    first = gateway.post(
        URL,
        {"protocol": "telnet", "remote_addr": "10.0.0.1"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="gw-1-conn-77",
    )
    again = gateway.post(
        URL,
        {"protocol": "telnet", "remote_addr": "10.0.0.1"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="gw-1-conn-77",
    )
    assert first.status_code == again.status_code == 201
    assert first.json()["handle"] == again.json()["handle"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(service.online(shared=True)) == 1


# --- idempotent registration: the Redis effect is keyed too ----------------------------------

REGISTRATION = {"protocol": "telnet", "remote_addr": "10.0.0.1"}
# UPDATE … idempotencyrecord … SET … "status_code" = … WHERE: the outcome, not a claim.
STORES_OUTCOME = re.compile(
    r'^\s*UPDATE\s.*idempotencyrecord.*?\sSET\s(?:(?!\sWHERE\s).)*"status_code"\s*=', re.S
)


@contextlib.contextmanager
def failing_outcome_write(times: int = 1):
    """Fault injection on the database side: the statement storing the response in the
    idempotency record fails, after the view has written to the store and before the commit."""
    fault = {"left": times}

    def fail(execute, sql, params, many, context):
        if fault["left"] and STORES_OUTCOME.match(sql):
            fault["left"] -= 1
            raise DatabaseError("injected: the idempotency record could not be stored")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail):
        yield fault


def post_registration(client, key, body=REGISTRATION):
    return client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def stored_handles() -> list[int]:
    return sorted(c.handle for c in get_connections().online())


@pytest.mark.django_db(transaction=True)
def test_registration_retried_after_a_failed_commit_is_one_connection(gateway):
    with failing_outcome_write() as fault, pytest.raises(DatabaseError):
        post_registration(gateway, "gw-1-conn-9")
    assert fault["left"] == 0  # the fault really hit the outcome's write
    [handle] = stored_handles()  # the store write happened before the failed commit
    # Meanwhile the connection is visible to everyone, and someone annotates it.
    noted = gateway.patch(f"{URL}{handle}/metadata/", {"seen": "yes"}, format="json")
    assert noted.status_code == 200

    retry = post_registration(gateway, "gw-1-conn-9")
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry.headers
    assert retry.json()["handle"] == handle
    assert retry.json()["metadata"] == {"seen": "yes"}  # returned as stored, not re-created
    replay = post_registration(gateway, "gw-1-conn-9")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["handle"] == handle
    assert stored_handles() == [handle]


@pytest.mark.django_db(transaction=True)
def test_control_without_the_keyed_handle_a_retry_registers_twice(gateway, monkeypatch):
    """CONTROL: the database record alone cannot cover the store's effect."""
    monkeypatch.setattr(api, "registration_idempotency", lambda request, body: None)
    with failing_outcome_write(), pytest.raises(DatabaseError):
        post_registration(gateway, "gw-1-conn-10")
    assert post_registration(gateway, "gw-1-conn-10").status_code == 201
    assert len(stored_handles()) == 2  # the first one is an orphan


@pytest.mark.django_db(transaction=True)
def test_key_reused_on_another_body_after_a_failed_commit_is_refused(gateway):
    with failing_outcome_write(), pytest.raises(DatabaseError):
        post_registration(gateway, "gw-1-conn-11")
    [handle] = stored_handles()
    other = post_registration(gateway, "gw-1-conn-11", {**REGISTRATION, "remote_addr": "10.9.9.9"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert stored_handles() == [handle]
    assert get_connections().lookup(handle).remote_addr == "10.0.0.1"


@pytest.mark.django_db(transaction=True)
def test_the_same_key_from_two_callers_is_two_registrations(gateway, staff_user_client):
    mine = post_registration(gateway, "shared-key")
    theirs = post_registration(staff_user_client, "shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["handle"] != theirs.json()["handle"]
    assert len(stored_handles()) == 2
