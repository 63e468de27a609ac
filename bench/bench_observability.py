"""What observability costs: each row is the instrumented path beside the same work without it.

* a request through the whole middleware stack (request metrics before and after, request id
  and its log line) vs the same stack without those three;
* a jackpot contribution through `@operation` (counted, timed, logged as JSON, its outcome
  added to the shared counts) vs the undecorated service;
* `SELECT 1` through the django-prometheus database backend vs Django's own PostgreSQL
  backend.

Log lines are formatted as in production (JSON) and written to /dev/null while measuring.
"""

import contextlib
import logging
import os
import uuid

from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from bench.common import Row, rate

GOAL = 0.8
OBSERVABILITY_MIDDLEWARE = (
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "nightstorm.middleware.RequestIdMiddleware",
)


@contextlib.contextmanager
def logs_to_devnull():
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    with open(os.devnull, "w") as sink:
        previous = [h.setStream(sink) for h in handlers]
        try:
            yield
        finally:
            for handler, stream in zip(handlers, previous, strict=True):
                handler.setStream(stream)


def best_rate(fn) -> float:
    return max(rate(fn, seconds=1.5), rate(fn, seconds=1.5))


def bench_request() -> list[Row]:
    path = "/api/v1/zones/"
    ours_client = Client(HTTP_HOST="localhost")
    bare = [m for m in settings.MIDDLEWARE if m not in OBSERVABILITY_MIDDLEWARE]
    with override_settings(MIDDLEWARE=bare):
        bare_client = Client(HTTP_HOST="localhost")
        baseline = best_rate(lambda: bare_client.get(path))
    assert ours_client.get(path).status_code == 200
    ours = best_rate(lambda: ours_client.get(path))
    return [
        Row(
            "GET zones: request metrics + request id",
            "req/s",
            ours,
            baseline,
            GOAL,
            note="baseline: the same middleware stack without the three observability ones",
        )
    ]


def bench_operation() -> list[Row]:
    from game.models import Player
    from jackpot import services

    services.ensure_default_pools()
    player = Player.objects.first()
    if player is None:
        return []

    def ours():
        services.contribute(player=player, bet=1000, operation_id=uuid.uuid4().hex)

    def undecorated():
        services.contribute.__wrapped__(player=player, bet=1000, operation_id=uuid.uuid4().hex)

    baseline = best_rate(undecorated)
    return [
        Row(
            "jackpot contribute: @operation",
            "ops/s",
            best_rate(ours),
            baseline,
            GOAL,
            note="baseline: the same service without its @operation decorator",
        )
    ]


def bench_query() -> list[Row]:
    from django.db.backends.postgresql.base import DatabaseWrapper

    if connection.vendor != "postgresql":
        return []
    # The same settings on Django's own backend: no django-prometheus cursor wrapper.
    plain = DatabaseWrapper(dict(connection.settings_dict), alias="bench_plain")

    def select_one(conn):
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    baseline = best_rate(lambda: select_one(plain))
    ours = best_rate(lambda: select_one(connection))
    plain.close()
    return [
        Row(
            "SELECT 1: query metrics",
            "ops/s",
            ours,
            baseline,
            GOAL,
            note="baseline: Django's PostgreSQL backend without django-prometheus's wrapper",
        )
    ]


def run() -> list[Row]:
    from game.world import seed_world

    with logs_to_devnull():
        seed_world(demo=True)
        return bench_request() + bench_operation() + bench_query()
