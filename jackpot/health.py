"""`/health/`'s jackpot checks (registered in JackpotConfig.ready), over the last
JACKPOT_HEALTH_WINDOW_MINUTES, all processes together (`nightstorm.rates`):

- `jackpot_locks`: lock acquisition success rate of the pessimistic paths (wins, adjustments,
  configuration edits): the share that got their pool locks within JACKPOT_LOCK_TIMEOUT_MS
  rather than answering 503 `busy`. Degraded below JACKPOT_HEALTH_MIN_LOCK_SUCCESS_PERCENT.
- `jackpot_conflicts`: conflict rate of contributions: attempts that found every stripe of a
  pool held, or timed out waiting for one, per attempt. Degraded above
  JACKPOT_HEALTH_MAX_CONFLICT_PERCENT: bets are queueing, each one paying for retries.

Neither is required (a busy jackpot slows bets, it breaks nothing), and neither judges fewer
than MIN_SAMPLES events, so a quiet platform never flaps. Prometheus has the same signals per
process for alerts (`deploy/prometheus/alerts.yml`).
"""

from django.conf import settings

from nightstorm import rates
from nightstorm.health import DEGRADED, OK

LOCKING = ("jackpot.win", "jackpot.adjust", "jackpot.config")
MIN_SAMPLES = 20


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def check_locks() -> tuple[str, dict]:
    minutes = settings.JACKPOT_HEALTH_WINDOW_MINUTES
    outcomes = ("ok", "replayed", "busy")
    counts = rates.totals([f"{op}:{o}" for op in LOCKING for o in outcomes], minutes)
    busy = sum(v for k, v in counts.items() if k.endswith(":busy"))
    total = sum(counts.values())
    success = _percent(total - busy, total)
    details = {
        "window_minutes": minutes,
        "attempts": total,
        "busy": busy,
        "lock_success_percent": success,
        "min_percent": settings.JACKPOT_HEALTH_MIN_LOCK_SUCCESS_PERCENT,
    }
    if total >= MIN_SAMPLES and success < settings.JACKPOT_HEALTH_MIN_LOCK_SUCCESS_PERCENT:
        return DEGRADED, {**details, "reason": "pool locks are often not granted in time"}
    return OK, details


def check_conflicts() -> tuple[str, dict]:
    minutes = settings.JACKPOT_HEALTH_WINDOW_MINUTES
    events = ["jackpot.contribute:ok", "jackpot.contribute:replayed", "jackpot.contribute:conflict"]
    counts = rates.totals(events, minutes)
    conflicts = counts["jackpot.contribute:conflict"]
    attempts = sum(counts.values())
    rate = _percent(conflicts, attempts)
    details = {
        "window_minutes": minutes,
        "attempts": attempts,
        "conflicts": conflicts,
        "conflict_percent": rate,
        "max_percent": settings.JACKPOT_HEALTH_MAX_CONFLICT_PERCENT,
    }
    if attempts >= MIN_SAMPLES and rate > settings.JACKPOT_HEALTH_MAX_CONFLICT_PERCENT:
        return DEGRADED, {**details, "reason": "contributions often lose version races"}
    return OK, details
