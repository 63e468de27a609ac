import pytest


@pytest.mark.django_db
def test_health_answers_json(client):
    response = client.get("/health/", HTTP_ACCEPT="application/json")
    body = response.json()
    assert body["checks"]["database"]["state"] == "ok"
    assert response.status_code == 200
