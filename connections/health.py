"""The `connections` health check: store reachable, background queue depth, write failures."""

import time

from nightstorm.health import DEGRADED, DOWN, OK

QUEUE_DEGRADED_FRACTION = 0.8
RECENT_FAILURE_SECONDS = 60


def check_connections() -> tuple[str, dict]:
    from connections.service import get_service

    service = get_service()
    details = service.stats()
    last_failure = details.pop("last_error_at", None)
    if service.store is None:
        return OK, details
    try:
        details["store_latency_ms"] = round(service.store.ping_ms(), 2)
    except Exception as exc:  # unreachable: critical writes are being refused
        details["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return DOWN, details
    if details["queue_depth"] >= QUEUE_DEGRADED_FRACTION * details["queue_limit"]:
        return DEGRADED, details
    if last_failure is not None and time.time() - last_failure < RECENT_FAILURE_SECONDS:
        details["reason"] = "background writes failed in the last minute"
        return DEGRADED, details
    return OK, details
