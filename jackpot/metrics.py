"""Prometheus metrics of the jackpot app (the shared ones are in `nightstorm.metrics`).

JACKPOT_ENABLE_METRICS=false turns these into no-ops: nothing is recorded or exported (not
even into PROMETHEUS_MULTIPROC_DIR). The toolkit's `nightstorm_*` series of jackpot
operations stay.
"""

from django.conf import settings
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram

from nightstorm import rates


class _Off:
    """Stands for a metric when JACKPOT_ENABLE_METRICS is off."""

    def labels(self, *args, **kwargs):
        return self

    def inc(self, amount=1):
        pass

    def observe(self, amount):
        pass


def Counter(*args, **kwargs):
    return _Counter(*args, **kwargs) if settings.JACKPOT_ENABLE_METRICS else _Off()


def Histogram(*args, **kwargs):
    return _Histogram(*args, **kwargs) if settings.JACKPOT_ENABLE_METRICS else _Off()


OPERATIONS = Counter(
    "jackpot_operations_total",
    "Jackpot operations by outcome (applied, replayed, refused, contended).",
    ["operation", "outcome"],
)


class _Conflicts:
    """`jackpot_version_conflicts_total`, each conflict also counted in `nightstorm.rates`
    (as `jackpot.<operation>:conflict`) for the `jackpot_conflicts` health check, which
    works whether or not JACKPOT_ENABLE_METRICS is on."""

    def __init__(self):
        self.metric = Counter(
            "jackpot_version_conflicts_total",
            "Optimistic pool updates that found a newer version (each one causes a retry or a "
            "refusal).",
            ["operation"],
        )

    def labels(self, operation: str):
        return _Conflict(self.metric.labels(operation), f"jackpot.{operation}:conflict")


class _Conflict:
    def __init__(self, child, event: str):
        self.child, self.event = child, event

    def inc(self, amount: int = 1) -> None:
        self.child.inc(amount)
        rates.record(self.event, amount)


CONFLICTS = _Conflicts()
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
