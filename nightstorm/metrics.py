"""Prometheus metrics shared by the toolkit and the apps.

Apps define their own metrics beside their code with `prometheus_client`; these are the ones
every concurrency path reports through. Under gunicorn with several workers, set
`PROMETHEUS_MULTIPROC_DIR` so `/metrics` aggregates all of them.
"""

from prometheus_client import Counter, Histogram

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
