"""Game masters' "who is online" admin page and the `connections` health check."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

pytestmark = pytest.mark.django_db

PAGE = "/admin/connections/onlineconnection/"


def test_who_is_online_page(client, service):
    bound = service.register(protocol="telnet", remote_addr="10.0.0.7")
    service.bind(bound.handle, player_id="p-1", player_name="Morgana")
    service.register(protocol="websocket", remote_addr="10.0.0.8")
    admin = get_user_model().objects.create_superuser("root", password="x")
    client.force_login(admin)
    response = client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Who is online" in html and "Morgana" in html and "10.0.0.8" in html
    assert "1 player logged in, 2 connections" in html


def test_page_needs_the_view_permission(client):
    gm = get_user_model().objects.create_user("gm", password="x", is_staff=True)
    client.force_login(gm)
    assert client.get(PAGE).status_code == 403
    gm.user_permissions.add(Permission.objects.get(codename="view_onlineconnection"))
    assert client.get(PAGE).status_code == 200
    # Only the list exists: no add, change, history or delete pages.
    assert client.get(f"{PAGE}add/").status_code == 404


def test_health_reports_the_store(client, service):
    body = client.get("/health/", HTTP_ACCEPT="application/json").json()
    check = body["checks"]["connections"]
    assert check["state"] == "ok"
    assert check["mode"] == ("redis" if service.store else "in_process")
    if service.store:
        # The web tier has no background queue to report: only the store it talks to.
        assert "store_latency_ms" in check and "queue_depth" not in check
