"""Optimistic concurrency: one conditional UPDATE.

`update_versioned` is the whole protocol: `UPDATE … SET …, version = version + 1 WHERE id = %s
AND version = %s`. No lock is held between the read and the write; a row count of zero means
someone else changed (or deleted) the row first, and `ConcurrencyConflict` is raised. What to
do then is the caller's call: an API answers 412 `version_conflict`, a service re-reads.
"""

import functools

from django.db import connections, models, router
from django.db.models import F
from django.utils import timezone

from nightstorm import metrics
from nightstorm.errors import ConcurrencyConflict
from nightstorm.sql import run_count


def update_versioned(model, pk, expected_version: int, /, **changes) -> int:
    """Apply `changes` to row `pk` if it is still at `expected_version`; return the new version.

    `model` is a model class or a queryset (to add conditions or use another manager).
    Soft-deleted rows are included: deleting is itself a versioned change.
    """
    changes.setdefault("updated_at", timezone.now())
    if isinstance(model, models.QuerySet) or not _plain(model, changes):
        queryset = model if isinstance(model, models.QuerySet) else model._base_manager.all()
        updated = queryset.filter(pk=pk, version=expected_version).update(
            version=F("version") + 1, **changes
        )
        label = queryset.model._meta.label_lower
    else:
        updated = _fast_update(model, pk, expected_version, changes)
        label = model._meta.label_lower
    if updated == 0:
        metrics.CONFLICTS.labels(label).inc()
        raise ConcurrencyConflict()
    return expected_version + 1


def _plain(model, changes: dict) -> bool:
    """Plain values for plain columns: the fast path applies. Anything else (expressions,
    relations) goes through the ORM."""
    fields = _plain_fields(model)
    return all(
        name in fields and not hasattr(value, "resolve_expression")
        for name, value in changes.items()
    )


@functools.cache
def _plain_fields(model) -> frozenset[str]:
    return frozenset(
        f.name for f in model._meta.concrete_fields if not f.is_relation and not f.primary_key
    )


@functools.lru_cache(maxsize=256)
def _update_sql(model, fields: tuple[str, ...], alias: str) -> tuple[str, tuple]:
    """The statement the ORM would build for these fields, compiled once per shape."""
    quote = connections[alias].ops.quote_name
    opts = model._meta
    targets = tuple(opts.get_field(name) for name in fields)
    version = quote(opts.get_field("version").column)
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in targets)
    sql = (
        f"UPDATE {quote(opts.db_table)} SET {assignments}, {version} = {version} + 1 "
        f"WHERE {quote(opts.pk.column)} = %s AND {version} = %s"
    )
    return sql, targets


def _fast_update(model, pk, expected_version: int, changes: dict) -> int:
    """The same single conditional UPDATE as the ORM path, without rebuilding the query on
    every call: on the hot path the ORM's query building costs as much as the round trip."""
    connection = connections[router.db_for_write(model)]
    sql, targets = _update_sql(model, tuple(changes), connection.alias)
    params = [f.get_db_prep_save(changes[f.name], connection) for f in targets]
    params += [model._meta.pk.get_db_prep_value(pk, connection), expected_version]
    return run_count(connection.alias, sql, params)
