"""Health: liveness touches nothing, readiness (and `/health/`) runs the checks, and the jackpot
checks judge lock and conflict rates counted by every process together."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache

from jackpot import health as jackpot_health
from nightstorm import rates

ROOT = Path(__file__).resolve().parents[2]


def test_liveness_touches_neither_the_database_nor_the_cache(client, monkeypatch):
    """No `db` fixture: pytest-django fails any database access here."""

    def refuse(*args, **kwargs):
        raise AssertionError("liveness touched the cache")

    monkeypatch.setattr(cache, "get", refuse)
    response = client.get("/health/live/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_and_health_answer_the_same_checks(client):
    ready, health = client.get("/health/ready/").json(), client.get("/health/").json()
    assert set(ready["checks"]) == set(health["checks"])
    assert {"database", "redis", "task_cluster", "jackpot_locks", "jackpot_conflicts"} <= set(
        ready["checks"]
    )


@pytest.fixture
def window(monkeypatch):
    """Counts flushed at once; the buckets of earlier tests forgotten."""
    monkeypatch.setattr(rates, "FLUSH_SECONDS", 0)
    rates.flush()
    cache.clear()


@pytest.mark.django_db
def test_few_events_never_degrade(window):
    rates.record("jackpot.contribute:conflict", 5)
    assert jackpot_health.check_conflicts()[0] == "ok"


@pytest.mark.django_db
def test_a_high_conflict_rate_degrades(window):
    rates.record("jackpot.contribute:ok", 10)
    rates.record("jackpot.contribute:conflict", 30)
    state, details = jackpot_health.check_conflicts()
    assert state == "degraded" and details["conflict_percent"] == 75.0
    assert details["attempts"] == 40


@pytest.mark.django_db
def test_pool_locks_not_granted_in_time_degrade(window):
    rates.record("jackpot.win:ok", 15)
    rates.record("jackpot.adjust:busy", 5)
    state, details = jackpot_health.check_locks()
    assert state == "degraded" and details["lock_success_percent"] == 75.0


@pytest.mark.django_db
def test_conflicts_of_real_contributions_are_counted(window, monkeypatch):
    """A contribution attempt that loses (every stripe of a pool held) counts a conflict; its
    retry an ok."""
    from jackpot import contributions, services
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    real = contributions._contribute_once
    lost = []

    def lose_first(*args, **kwargs):
        if not lost:
            lost.append(True)
            from nightstorm.errors import ConcurrencyConflict

            raise ConcurrencyConflict()
        return real(*args, **kwargs)

    monkeypatch.setattr(contributions, "_contribute_once", lose_first)
    services.contribute(player=player, bet=1000, operation_id="op-conflicted")
    counts = rates.totals(["jackpot.contribute:ok", "jackpot.contribute:conflict"])
    assert counts == {"jackpot.contribute:ok": 1, "jackpot.contribute:conflict": 1}


CHILD = """
import django
django.setup()
from nightstorm import rates
rates.record("jackpot.contribute:conflict", 30)
rates.flush()
"""


@pytest.mark.redis
@pytest.mark.django_db
def test_every_process_counts_into_the_same_window(window, redis_client):
    """Another process's conflicts reach this process's health check through Redis."""
    rates.record("jackpot.contribute:ok", 10)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nightstorm.settings"}
    subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, check=True, timeout=60)
    state, details = jackpot_health.check_conflicts()
    assert details["attempts"] == 40 and state == "degraded"


@pytest.mark.redis
@pytest.mark.django_db
def test_control_a_process_local_count_misses_the_others(window, redis_client):
    """The naive check, from this process's Prometheus counters: blind to the other process."""
    from prometheus_client import REGISTRY

    def local_conflicts():
        labels = {"operation": "contribute"}
        return REGISTRY.get_sample_value("jackpot_version_conflicts_total", labels) or 0

    before = local_conflicts()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nightstorm.settings"}
    child = CHILD.replace(
        'rates.record("jackpot.contribute:conflict", 30)',
        'from jackpot import metrics\nmetrics.CONFLICTS.labels("contribute").inc(30)',
    )
    subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, check=True, timeout=60)
    assert local_conflicts() == before  # what one process sees of the platform: nothing
    assert rates.totals(["jackpot.contribute:conflict"]) == {"jackpot.contribute:conflict": 30}
