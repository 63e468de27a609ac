"""Health checks: a small registry and three views.

- `/health/live/` (liveness): answers 200 without touching the database, Redis or anything
  else, so a probe that restarts the process never restarts it because a dependency is slow.
- `/health/ready/` (readiness) and `/health/` (the same, as documented since the start): every
  registered check; 200 when ok or degraded, 503 when a required part is down.

Why not django-health-check: its plugins are up or down (`HealthCheckException` or nothing),
while operators here need a third state, degraded (Redis slow, the task cluster's heartbeat
late, a jackpot conflict rate high), that still answers 200 so a load balancer keeps the web
process in rotation; and each check reports details (latency, ages, rates) in the JSON. Apps add
checks with `register()` from their `AppConfig.ready()`.

A check returns `(state, details)` with state `ok`, `degraded` or `down`. The overall status is
`down` (503) when a required check is down, `degraded` (200) when any check is not ok. The
database and Redis checks also refresh the `nightstorm_database_*` and `nightstorm_redis_*`
gauges (`nightstorm.metrics`).
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from nightstorm import metrics
from nightstorm.api.errors import json_methods

OK, DEGRADED, DOWN = "ok", "degraded", "down"


@dataclass(frozen=True)
class Check:
    name: str
    func: Callable[[], tuple[str, dict]]
    required: bool


_checks: dict[str, Check] = {}


def register(name: str, func: Callable[[], tuple[str, dict]], *, required: bool = False) -> None:
    _checks[name] = Check(name, func, required)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def check_database() -> tuple[str, dict]:
    latency = metrics.probe_database()
    return OK, {"vendor": connection.vendor, "latency_ms": _ms(latency)}


def check_redis() -> tuple[str, dict]:
    latency = metrics.probe_redis()
    if latency is None:
        return OK, {"configured": False}
    state = DEGRADED if _ms(latency) > settings.HEALTH_REDIS_DEGRADED_MS else OK
    return state, {"configured": True, "latency_ms": _ms(latency)}


def check_task_cluster() -> tuple[str, dict]:
    from nightstorm.models import Heartbeat

    beat = Heartbeat.objects.filter(name="cluster").values_list("beat_at", flat=True).first()
    if beat is None:
        return DOWN, {"reason": "the task cluster has never reported"}
    age = (timezone.now() - beat).total_seconds()
    details = {"last_heartbeat": beat.isoformat(), "age_seconds": round(age, 1)}
    if age > settings.HEALTH_CLUSTER_STALE_SECONDS:
        return DOWN, {**details, "reason": "heartbeat is stale"}
    return OK, details


def check_replica() -> tuple[str, dict]:
    """The read replica's replay lag; degraded once it exceeds the read-your-writes window
    (a client's read after the window could then be older than its own write)."""
    from django.db import connections

    with connections["replica"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = "
            "pg_last_wal_replay_lsn() THEN 0 ELSE "
            "extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
        )
        in_recovery, lag = cursor.fetchone()
    if not in_recovery:
        return DOWN, {"reason": "DATABASE_REPLICA_URL is not a replica"}
    lag = round(float(lag or 0), 3)
    state = DEGRADED if lag > settings.NIGHTSTORM_READ_YOUR_WRITES_SECONDS else OK
    return state, {"lag_seconds": lag}


register("database", check_database, required=True)
if "replica" in settings.DATABASES:
    # Not required: a lagging or lost replica degrades reads, it does not stop the platform.
    register("database_replica", check_replica)
register("redis", check_redis, required=bool(settings.REDIS_URL))
register("task_cluster", check_task_cluster)


def run_checks() -> tuple[str, dict]:
    results, status = {}, OK
    for check in _checks.values():
        try:
            state, details = check.func()
        except Exception as exc:  # a check that breaks reports down, never a 500
            state, details = DOWN, {"error": f"{type(exc).__name__}: {exc}"[:300]}
        results[check.name] = {"state": state, "required": check.required, **details}
        if state == DOWN and check.required:
            status = DOWN
        elif state != OK and status == OK:
            status = DEGRADED
    return status, results


@never_cache
@json_methods("GET")
def health_view(request):
    """Readiness: every check (`/health/` and `/health/ready/`)."""
    status, checks = run_checks()
    return JsonResponse(
        {"status": status, "checks": checks, "time": timezone.now().isoformat()},
        status=503 if status == DOWN else 200,
    )


@never_cache
@json_methods("GET")
def live_view(request):
    """Liveness: the process answers; nothing else is touched."""
    return JsonResponse({"status": OK})
