"""Locking pools and their stripes, and writing a pool's stripes back (wins, adjustments,
configuration changes).

Lock order, for every writer: pool rows first (primary-key order), then stripes (primary-key
order). Contributions never lock a pool row and take their stripes either with SKIP LOCKED
(never waiting, so never part of a wait cycle) or in primary-key order; so no two writers can
deadlock.
"""

from django.db import connections
from django.db.models import CharField, Func, Value

from jackpot.ledger import spread_ceilings, total_ceiling
from jackpot.models import PoolStripe


def bounded_lock(queryset, alias: str, lock_timeout_ms: int):
    """`queryset` locked FOR UPDATE (its own rows), the wait bounded by `lock_timeout_ms`.

    On PostgreSQL `SET LOCAL lock_timeout` is folded into the locking read (one round trip
    less): `set_config(…, true)` is the function form of SET LOCAL, and as a row filter it runs
    in the scan, below the node that takes the row locks, so the bound is in force before the
    first lock is waited for, and for the rest of the transaction (the stripes locked next).
    Other backends have no row locks to wait for.
    """
    # NO KEY UPDATE: the ledger rows a contribution inserts reference the pool, and their
    # foreign key check takes KEY SHARE on the pool row; FOR UPDATE would make that insert
    # wait for this lock while the contribution holds a stripe this transaction will want.
    queryset = queryset.select_for_update(of=("self",), no_key=True)
    if connections[alias].vendor != "postgresql":
        return queryset
    return queryset.alias(
        lock_timeout=Func(
            Value("lock_timeout"),
            Value(f"{int(lock_timeout_ms)}ms"),
            Value(True),
            function="set_config",
            output_field=CharField(),
        )
    ).filter(lock_timeout__isnull=False)


def lock_stripes(alias: str, pool_id) -> list[PoolStripe]:
    """All stripes of a pool, locked in primary-key order (the caller holds the pool row lock
    and, on PostgreSQL, set the lock timeout with it). Must run inside the caller's atomic()."""
    return list(
        PoolStripe.objects.using(alias).select_for_update().filter(pool_id=pool_id).order_by("pk")
    )


def save_stripes(alias: str, stripes: list[PoolStripe], max_amount: int | None) -> None:
    """Write back locked stripes whose amounts were changed, with their ceilings spread again
    under `max_amount` (the pool's cap, after the change). One UPDATE statement."""
    amounts = [s.amount for s in stripes]
    for stripe, ceiling in zip(
        stripes, spread_ceilings(amounts, total_ceiling(amounts, max_amount)), strict=True
    ):
        stripe.ceiling = ceiling
    fields = ["amount", "version", "ceiling", "rate_bp"]
    PoolStripe.objects.using(alias).bulk_update(stripes, fields)
