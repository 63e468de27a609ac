"""Prometheus metrics shared by the toolkit and the apps, and how each process exports them.

Apps define their own metrics beside their code with `prometheus_client`; these are the ones
every concurrency path reports through. Request, database and cache metrics come from
django-prometheus (`django_http_*`, `django_db_*`, `django_cache_*`).

Two ways out of a process, both supported by every long-running one:
- `PROMETHEUS_MULTIPROC_DIR` (one directory per host, shared by gunicorn's workers, the task
  cluster, orchestrators and gateways on that host): every process writes its values to files
  there and the web's `/metrics` aggregates them all. Gauges that describe one process use a
  `live*` mode, so their series leave with the process: gunicorn's `child_exit` hook (in
  `deploy/gunicorn.conf.py`), a clean exit of a command and every scrape (for a process that
  was SIGKILLed) call `mark_process_dead` (`nightstorm.metrics_export`).
- `NIGHTSTORM_METRICS_PORT` (or a command's `--metrics-port`): the process serves its own
  registry on that port; Prometheus scrapes each process.
"""

import logging
import time

from prometheus_client import Counter, Gauge, Histogram

OPERATIONS = Counter(
    "nightstorm_operations_total", "State-changing operations by outcome.", ["operation", "outcome"]
)
CONFLICTS = Counter(
    "nightstorm_conflicts_total", "Optimistic updates that matched no row.", ["operation"]
)
RETRIES = Counter(
    "nightstorm_retries_total",
    "Retries of a unit of work, by kind (optimistic, transient).",
    ["operation", "kind"],
)
TRANSIENT_ERRORS = Counter(
    "nightstorm_transient_errors_total",
    "Serialization failures and deadlocks seen (SQLSTATE 40001/40P01).",
    ["sqlstate"],
)
LOCK_WAIT = Histogram(
    "nightstorm_lock_wait_seconds",
    "Time spent acquiring a distributed lock.",
    ["backend", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOCK_TIMEOUTS = Counter(
    "nightstorm_row_lock_timeouts_total", "Row locks not granted within lock_timeout (55P03)."
)
TASK_FAILURES = Counter(
    "nightstorm_task_failures_total", "Background tasks and outbox jobs that failed.", ["task"]
)
BACKGROUND_WRITE_FAILURES = Counter(
    "nightstorm_background_write_failures_total",
    "Non-critical background writes that failed (logged with their payload).",
    ["store"],
)
OPERATION_SECONDS = Histogram(
    "nightstorm_operation_seconds",
    "Duration of service operations.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_DEAD = Counter(
    "nightstorm_outbox_jobs_dead_total",
    "Retry-queue jobs that failed their last attempt (dead until retried from the admin).",
    ["kind"],
)
OUTBOX_DEAD_NOW = Gauge(
    "nightstorm_outbox_dead_jobs",
    "Retry-queue jobs dead right now (counted in the database by each drain of the queue).",
    multiprocess_mode="livemostrecent",
)
IDEMPOTENT_REPLAYS = Counter(
    "nightstorm_idempotent_replays_total",
    "Requests answered from a stored outcome of the same Idempotency-Key.",
)
IDEMPOTENT_TAKEOVERS = Counter(
    "nightstorm_idempotent_takeovers_total",
    "Expired idempotency claims (their request died) taken over by a retry.",
)
IDEMPOTENT_IN_PROGRESS = Counter(
    "nightstorm_idempotent_in_progress_total",
    "Requests refused with 409 because their Idempotency-Key was still being processed.",
)

# Dependency probes: refreshed by every health check and, at most every
# DEPENDENCY_PROBE_SECONDS, by every long-running process (so a host without web traffic still
# reports). `livemostrecent`: the newest value from a live process wins.
REDIS_UP = Gauge(
    "nightstorm_redis_up",
    "1 when the last PING to Redis succeeded, 0 when it failed.",
    multiprocess_mode="livemostrecent",
)
REDIS_LATENCY = Gauge(
    "nightstorm_redis_latency_seconds",
    "Round trip of the last PING to Redis.",
    multiprocess_mode="livemostrecent",
)
DATABASE_UP = Gauge(
    "nightstorm_database_up",
    "1 when the last SELECT 1 on the default database succeeded, 0 when it failed.",
    multiprocess_mode="livemostrecent",
)
DATABASE_LATENCY = Gauge(
    "nightstorm_database_latency_seconds",
    "Round trip of the last SELECT 1 on the default database.",
    multiprocess_mode="livemostrecent",
)

DEPENDENCY_PROBE_SECONDS = 15.0

log = logging.getLogger(__name__)


def probe_database() -> float:
    """SELECT 1 on the default database; sets the database gauges; returns seconds taken.
    A failure sets `nightstorm_database_up` to 0 and propagates."""
    from django.db import connection

    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        DATABASE_UP.set(0)
        raise
    elapsed = time.perf_counter() - started
    DATABASE_UP.set(1)
    DATABASE_LATENCY.set(elapsed)
    return elapsed


def probe_redis() -> float | None:
    """PING the cache's Redis; sets the Redis gauges; returns seconds taken (None without
    REDIS_URL). A failure sets `nightstorm_redis_up` to 0 and propagates."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection

    started = time.perf_counter()
    try:
        get_redis_connection("default").ping()
    except Exception:
        REDIS_UP.set(0)
        raise
    elapsed = time.perf_counter() - started
    REDIS_UP.set(1)
    REDIS_LATENCY.set(elapsed)
    return elapsed


class DependencyProbe:
    """Refreshes the dependency gauges from a long-running loop, at most every `interval`
    seconds; a failed probe is logged and shows as `*_up 0`, never raised into the loop."""

    def __init__(self, interval: float = DEPENDENCY_PROBE_SECONDS):
        self.interval = interval
        self._next = 0.0

    def maybe_run(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        for name, probe in (("database", probe_database), ("redis", probe_redis)):
            try:
                probe()
            except Exception as exc:
                log.warning("dependency probe failed: %s", name, extra={"error": repr(exc)})
