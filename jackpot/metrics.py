"""Prometheus metrics of the jackpot app (the shared ones are in `nightstorm.metrics`)."""

from prometheus_client import Counter, Histogram

OPERATIONS = Counter(
    "jackpot_operations_total",
    "Jackpot operations by outcome (applied, replayed, refused, contended).",
    ["operation", "outcome"],
)
CONFLICTS = Counter(
    "jackpot_version_conflicts_total",
    "Optimistic pool updates that found a newer version (each one causes a retry or a refusal).",
    ["operation"],
)
RETRIES = Counter(
    "jackpot_retries_total", "Attempts run again after a version conflict.", ["operation"]
)
PAID = Counter("jackpot_paid_minor_units_total", "Minor units paid out by wins.", ["group"])
CONTRIBUTED = Counter(
    "jackpot_contributed_minor_units_total", "Minor units added to pools by bets.", ["group"]
)
LOCK_WAIT = Histogram(
    "jackpot_row_lock_wait_seconds",
    "Time spent waiting for pool row locks on pessimistic paths.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SECONDS = Histogram(
    "jackpot_operation_seconds",
    "Duration of jackpot operations, retries included.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
