"""Suite-wide fixtures and the rules that skip tests on a database or cache that cannot run them.

Markers: `postgres` (row locks, SKIP LOCKED, triggers: SQLite ignores FOR UPDATE) and `redis`
(needs REDIS_URL). `make test` runs everything on PostgreSQL + Redis, then the rest on SQLite.
"""

import pytest
from django.conf import settings
from django.db import connection


def pytest_collection_modifyitems(config, items):
    on_postgres = connection.vendor == "postgresql"
    has_redis = bool(settings.REDIS_URL)
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL")
    skip_redis = pytest.mark.skip(reason="needs REDIS_URL")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not has_redis:
            item.add_marker(skip_redis)


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters and cached values must not leak from one test into the next."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def redis_client():
    """The raw Redis client of the configured cache, on an emptied test database."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()
