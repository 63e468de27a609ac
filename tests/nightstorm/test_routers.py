"""Which database a read goes to (`nightstorm.routers`), and the read-your-writes marks of
`ReplicaReadsMiddleware`. The real primary + replica run in tests/scaleout/test_replica.py."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpResponse
from django.test import RequestFactory

from nightstorm import routers
from nightstorm.middleware import ReplicaReadsMiddleware
from nightstorm.settings import redis_cache
from tests.toolkit_app.models import Account


@pytest.fixture
def with_replica(monkeypatch):
    monkeypatch.setattr(routers, "replica_configured", lambda: True)
    return routers.PrimaryReplicaRouter()


def test_reads_stay_on_the_primary_unless_a_read_only_request_allows_the_replica(with_replica):
    assert with_replica.db_for_read(Account) == "default"
    with routers.replica_reads():
        assert with_replica.db_for_read(Account) == "replica"
    assert with_replica.db_for_read(Account) == "default"


@pytest.mark.django_db(transaction=True)
def test_a_read_inside_a_transaction_goes_to_the_primary(with_replica):
    """select_for_update and the reads a service makes before it writes: always the primary."""
    with routers.replica_reads(), transaction.atomic():
        assert with_replica.db_for_read(Account) == "default"


def test_after_a_write_the_request_reads_the_primary(with_replica):
    with routers.replica_reads():
        assert with_replica.db_for_write(Account) == "default"
        assert with_replica.db_for_read(Account) == "default"


def test_migrations_run_on_the_primary_only(with_replica):
    assert with_replica.allow_migrate("default", "game")
    assert not with_replica.allow_migrate("replica", "game")


def test_a_client_that_wrote_reads_the_primary_for_the_window(with_replica, settings):
    seen = []

    def view(request):
        seen.append(routers.PrimaryReplicaRouter().db_for_read(Account))
        return HttpResponse()

    middleware = ReplicaReadsMiddleware(view)
    factory = RequestFactory()
    alice = {"HTTP_AUTHORIZATION": "Token alice", "REMOTE_ADDR": "10.0.0.1"}
    bob = {"HTTP_AUTHORIZATION": "Token bob", "REMOTE_ADDR": "10.0.0.2"}
    middleware(factory.get("/api/v1/players/me/", **alice))
    middleware(factory.post("/api/v1/players/me/travel/", **alice))  # marks alice
    middleware(factory.get("/api/v1/players/me/", **alice))
    middleware(factory.get("/api/v1/players/me/", **bob))
    # A fresh token from the same address (register, then read) is covered by the address.
    middleware(
        factory.get("/api/v1/players/me/", HTTP_AUTHORIZATION="Token new", REMOTE_ADDR="10.0.0.1")
    )
    assert seen == ["replica", "default", "default", "replica", "default"]


def test_without_a_replica_the_middleware_changes_nothing():
    seen = []

    def view(request):
        seen.append(routers.PrimaryReplicaRouter().db_for_read(Account))
        return HttpResponse()

    ReplicaReadsMiddleware(view)(RequestFactory().get("/api/v1/zones/"))
    assert seen == ["default"]


def test_sentinels_configure_django_redis_sentinel_client():
    cache = redis_cache("redis://nsmaster/0", ["10.0.0.1:26379", "10.0.0.2:26380"])
    assert cache["OPTIONS"]["CLIENT_CLASS"] == "django_redis.client.SentinelClient"
    assert cache["OPTIONS"]["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert cache["OPTIONS"]["SENTINELS"] == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert cache["LOCATION"] == ["redis://nsmaster/0"]  # the primary only
    with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS"):
        redis_cache("redis://nsmaster/0", ["10.0.0.1"])
