"""The `connections` health check: the shared store reachable from this (web) process.

Web workers hold no connection state and no background writer, so there is no queue to report
here; the gateway's writer reports through its own metrics and log.
"""

from django.conf import settings

from nightstorm.health import DEGRADED, DOWN, OK


def check_connections() -> tuple[str, dict]:
    from connections.web import SharedConnections, get_connections

    store = get_connections()
    if not isinstance(store, SharedConnections):
        return OK, store.stats()  # embedded: the in-process service
    details = {"mode": "redis"}
    try:
        details["store_latency_ms"] = round(store.store.ping_ms(), 2)
        details["connections"] = store.store.count()
    except Exception as exc:  # unreachable: every connection request is refused
        details["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return DOWN, details
    if details["store_latency_ms"] > settings.HEALTH_REDIS_DEGRADED_MS:
        return DEGRADED, details
    return OK, details
