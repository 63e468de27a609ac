"""The admin login locks an address out after AXES_FAILURE_LIMIT failures (django-axes);
the API's token login and the gateway's logins are not counted against it."""

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-staff-passw0rd"


@pytest.fixture
def staff():
    return get_user_model().objects.create_user(
        "gm", password=PASSWORD, is_staff=True, is_superuser=True
    )


def _login(client, password, addr="10.1.2.3"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "gm", "password": password},
        REMOTE_ADDR=addr,
    )


def test_the_admin_login_locks_an_address_out_after_the_failure_limit(staff, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "wrong").status_code == 200  # the form again, with its error
    assert _login(client, "wrong").status_code == 429
    locked = _login(client, PASSWORD)
    assert locked.status_code == 429  # the right password does not help while locked
    assert "_auth_user_id" not in client.session

    other = Client()  # another address is not locked
    assert _login(other, PASSWORD, addr="10.9.9.9").status_code == 302


def test_a_success_before_the_limit_resets_the_count(staff, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "wrong")
    assert _login(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "wrong").status_code == 200
    assert _login(client, PASSWORD).status_code == 302


def test_api_token_failures_do_not_lock_the_admin(staff, api_client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        response = api_client.post(
            "/api/v1/auth/token/", {"username": "gm", "password": "wrong"}, REMOTE_ADDR="10.1.2.3"
        )
        assert response.status_code == 400
    assert _login(Client(), PASSWORD).status_code == 302


def test_a_login_without_a_request_still_authenticates(staff):
    """The gateway calls authenticate() with no request: axes must not refuse it."""
    assert authenticate(username="gm", password=PASSWORD) == staff
    assert authenticate(username="gm", password="wrong") is None
