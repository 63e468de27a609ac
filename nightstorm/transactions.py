"""Transactions that survive transient database errors, and bounded row-lock waits.

PostgreSQL may abort a transaction with a serialization failure (SQLSTATE 40001) or pick it as
a deadlock victim (40P01); both mean "run the whole transaction again", never a 500. The retry
must wrap the outermost `atomic()` — retrying inside it would run on an aborted transaction —
so inside an open transaction `transient_retry` only joins it and leaves retrying to the owner.

Pessimistic paths bound their waits with `SET LOCAL lock_timeout`; a timeout (55P03) is turned
into `Busy` (API: 503 `busy`) rather than hanging a request.
"""

import functools
import logging
import random
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from nightstorm import metrics
from nightstorm.errors import Busy

log = logging.getLogger(__name__)

TRANSIENT_SQLSTATES = {"40001", "40P01"}
LOCK_NOT_AVAILABLE = "55P03"
# The session is gone: admin shutdown (pg_terminate_backend), crash shutdown, cannot connect
# now; and the whole class 08 (connection exceptions).
CONNECTION_LOST_SQLSTATES = {"57P01", "57P02", "57P03"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error raised through Django, if the driver gave one."""
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) or getattr(
        getattr(cause, "diag", None), "sqlstate", None
    )


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and sqlstate(exc) in TRANSIENT_SQLSTATES


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and sqlstate(exc) == LOCK_NOT_AVAILABLE


def is_connection_lost(exc: BaseException) -> bool:
    """The database dropped or refused the connection: the server said so (SQLSTATE 57P01-03,
    class 08), or the driver found its socket closed (a psycopg error without a SQLSTATE)."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    state = sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in CONNECTION_LOST_SQLSTATES
    cause = exc.__cause__
    return isinstance(exc, InterfaceError) or type(cause).__module__.startswith("psycopg")


def backoff_delay(attempt: int, base_ms: int, max_ms: int | None = None) -> float:
    """Exponential backoff with full jitter, in seconds, for the given 1-based attempt."""
    max_ms = settings.NIGHTSTORM_RETRY_MAX_DELAY_MS if max_ms is None else max_ms
    ceiling = min(max_ms, base_ms * (2 ** (attempt - 1)))
    return random.uniform(0, ceiling) / 1000.0


def transient_retry(func=None, *, attempts: int | None = None, name: str | None = None):
    """Run `func` in its own `atomic()` block, again on 40001/40P01, a bounded number of times.

    Usable as `@transient_retry` or `transient_retry(attempts=3)(func)`. The wrapped function
    must be safe to run again from scratch: everything it did in the failed attempt was rolled
    back. Called inside an open transaction it joins it (as a savepoint) without retrying: only
    the outermost block can be run again, so the caller that owns it retries.
    """

    def decorate(fn):
        op = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if connection.in_atomic_block:
                with transaction.atomic():
                    return fn(*args, **kwargs)
            limit = attempts or settings.NIGHTSTORM_TRANSIENT_RETRY_ATTEMPTS
            for attempt in range(1, limit + 1):
                try:
                    with transaction.atomic():
                        return fn(*args, **kwargs)
                except DatabaseError as exc:
                    if not is_transient(exc) or attempt == limit:
                        raise
                    metrics.TRANSIENT_ERRORS.labels(sqlstate(exc)).inc()
                    metrics.RETRIES.labels(op, "transient").inc()
                    log.info("%s: %s on attempt %d, retrying", op, sqlstate(exc), attempt)
                    time.sleep(backoff_delay(attempt, settings.NIGHTSTORM_RETRY_BASE_DELAY_MS))
            raise AssertionError("unreachable")

        return wrapper

    return decorate(func) if func is not None else decorate


def set_lock_timeout(ms: int | None = None) -> None:
    """Bound row-lock waits for the rest of the current transaction (PostgreSQL only).

    Must be called inside `atomic()`; `SET LOCAL` ends with the transaction.
    """
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("set_lock_timeout must run inside a transaction")
    ms = ms or settings.NIGHTSTORM_LOCK_TIMEOUT_MS
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = {int(ms)}")


class busy_on_lock_timeout:
    """Turn a row-lock timeout (55P03) raised inside the block into `Busy`.

    Use around the outermost `atomic()` of a pessimistic path: the transaction is already
    aborted when the timeout fires, so the block must end with it.
    """

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and is_lock_timeout(exc):
            metrics.LOCK_TIMEOUTS.inc()
            raise Busy() from exc
        return False
