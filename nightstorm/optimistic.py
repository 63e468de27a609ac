"""Optimistic concurrency: one conditional UPDATE, and a bounded retry around it.

`update_versioned` is the whole protocol: `UPDATE … SET …, version = version + 1 WHERE id = %s
AND version = %s`. No lock is held between the read and the write; a row count of zero means
someone else changed (or deleted) the row first, and `ConcurrencyConflict` is raised.

`retry_on_conflict` runs a read-modify-write again on conflict with exponential backoff and
full jitter, a bounded number of times. Its function must re-read the row on every attempt.
"""

import functools
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils import timezone

from nightstorm import metrics
from nightstorm.errors import ConcurrencyConflict
from nightstorm.transactions import backoff_delay

T = TypeVar("T")


def update_versioned(model, pk, expected_version: int, /, **changes) -> int:
    """Apply `changes` to row `pk` if it is still at `expected_version`; return the new version.

    `model` is a model class or a queryset (to add conditions or use another manager).
    Soft-deleted rows are included: deleting is itself a versioned change.
    """
    queryset = model if isinstance(model, models.QuerySet) else model._base_manager.all()
    changes.setdefault("updated_at", timezone.now())
    updated = queryset.filter(pk=pk, version=expected_version).update(
        version=F("version") + 1, **changes
    )
    if updated == 0:
        metrics.CONFLICTS.labels(queryset.model._meta.label_lower).inc()
        raise ConcurrencyConflict()
    return expected_version + 1


def retry_on_conflict(
    func: Callable[[], T] | None = None,
    *,
    attempts: int | None = None,
    base_delay_ms: int | None = None,
    name: str | None = None,
):
    """Call `func` again when it raises `ConcurrencyConflict`, with backoff; bounded.

    Usable as a decorator (`@retry_on_conflict` or `@retry_on_conflict(attempts=3)`); the
    decorated function is called with its own arguments on every attempt. The last conflict
    propagates.
    """

    def decorate(fn):
        op = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            limit = attempts or settings.NIGHTSTORM_MAX_RETRY_ATTEMPTS
            base = (
                settings.NIGHTSTORM_RETRY_BASE_DELAY_MS if base_delay_ms is None else base_delay_ms
            )
            for attempt in range(1, limit + 1):
                try:
                    return fn(*args, **kwargs)
                except ConcurrencyConflict:
                    if attempt == limit:
                        metrics.OPERATIONS.labels(op, "conflict").inc()
                        raise
                    metrics.RETRIES.labels(op, "optimistic").inc()
                    time.sleep(backoff_delay(attempt, base))
            raise AssertionError("unreachable")

        return wrapper

    return decorate(func) if func is not None else decorate


def apply_versioned(model, pk, mutate: Callable[[models.Model], dict], **retry_options):
    """Read row `pk`, compute changes with `mutate(row)`, write them optimistically; retry.

    Returns the row as written (re-read values plus the changes and the new version).
    """

    @retry_on_conflict(name=f"{model._meta.label_lower}.apply", **retry_options)
    def attempt():
        row = model._base_manager.get(pk=pk)
        changes = mutate(row)
        row.version = update_versioned(model, pk, row.version, **changes)
        for field, value in changes.items():
            setattr(row, field, value)
        return row

    return attempt()
