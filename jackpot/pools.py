"""A pool's configuration and a game master's adjustments; creating the default pools.

`update_config` locks all pools, because the sum of the rates is a rule across rows, and
compares the caller's `expected_version` with `config_version`: bets and wins do not make a
configuration edit stale, another configuration edit does (412). A new rate or cap is copied
onto the pool's stripes (`rate_bp`, and the cap spread as `ceiling`s) under their locks, so a
contribution that locks a stripe afterwards uses the new configuration.

`adjust_pool` is a signed correction with an `adjustment` ledger row per stripe it changes,
under the locks of the pool and all its stripes; its `expected_version` names
`config_version` too (a delta is relative; its bounds are checked against the amount held
under the locks).
"""

from django.conf import settings
from django.db import router, transaction
from django.db.models import F
from django.utils import timezone

from jackpot import metrics
from jackpot.errors import OperationReused, UnknownGroup
from jackpot.inputs import MAX_STORABLE, strict_int, validate_operation_id
from jackpot.ledger import spread_ceilings, total_ceiling
from jackpot.models import (
    BP_SCALE,
    GROUPS,
    STRIPES_PER_POOL,
    JackpotPool,
    LedgerEntry,
    LedgerKind,
    PoolStripe,
)
from jackpot.stripes import bounded_lock, lock_stripes, save_stripes
from nightstorm.errors import InvalidInput, PreconditionFailed
from nightstorm.logs import audit
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout

DEFAULT_POOLS = (
    # group, seed_amount, contribution_rate_bp, max_amount (minor units); as migration 0002
    ("minor", 1_000, 100, 500_000),
    ("major", 10_000, 50, 5_000_000),
    ("mega", 100_000, 25, None),
)

CONFIG_FIELDS = ("seed_amount", "contribution_rate_bp", "max_amount")


def get_pool(group: str, queryset=None) -> JackpotPool:
    """The live pool of `group` (from `queryset`, e.g. a locking one), or 404 `unknown_group`."""
    queryset = JackpotPool.objects.all() if queryset is None else queryset
    pool = queryset.filter(group=group).first()
    if pool is None:
        raise UnknownGroup()
    return pool


def _locked_pools(alias: str):
    return bounded_lock(JackpotPool.objects.using(alias), alias, settings.JACKPOT_LOCK_TIMEOUT_MS)


@operation("jackpot.adjust")
def adjust_pool(
    *,
    group: str,
    delta: int,
    operation_id: str,
    note: str = "",
    expected_version: int | None = None,
) -> JackpotPool:
    """Add a signed correction to a pool with `adjustment` ledger rows; once per operation id.

    The result must stay within 0..max_amount, checked against the amount held under the
    locks. A positive delta goes to stripe 0; a negative one is taken from the stripes in slot
    order. A replayed operation id changes nothing and returns the pool; one reused for another
    delta is refused (409 `operation_id_reused`).

    `expected_version` names the pool's *configuration* version (`config_version`), like
    `update_config`'s: a pool whose seed, rate or cap changed since the caller decided on the
    correction is refused (412). It does not name the balance: a delta is relative, so it stays
    meaningful however many bets landed meanwhile.
    """
    delta = strict_int(delta, field="delta")
    validate_operation_id(operation_id)
    alias = router.db_for_write(JackpotPool)
    with busy_on_lock_timeout(), transaction.atomic(using=alias):
        pool = get_pool(group, _locked_pools(alias))
        # Read on the primary, under the pool lock: no replica lag, no concurrent twin.
        done = LedgerEntry.objects.using(alias).filter(
            operation_id=operation_id, pool=pool, kind=LedgerKind.ADJUSTMENT
        )
        if done.exists():
            if sum(done.values_list("amount", flat=True)) != delta:
                raise OperationReused()
            return pool
        if expected_version is not None and pool.config_version != expected_version:
            raise PreconditionFailed()
        if delta == 0:
            return pool
        stripes = lock_stripes(alias, pool.pk)
        held = sum(s.amount for s in stripes)
        if held + delta < 0:
            raise InvalidInput("The pool cannot go below zero.", code="adjustment_below_zero")
        if pool.max_amount is not None and delta > 0 and held + delta > pool.max_amount:
            raise InvalidInput("The pool cannot go above its maximum.", code="adjustment_above_max")
        now, rows, left = timezone.now(), [], delta
        for stripe in stripes if delta < 0 else stripes[:1]:
            change = left if delta > 0 else -min(stripe.amount, -left)
            if change:
                stripe.amount += change
                stripe.version += 1
                rows.append((stripe, change))
                left -= change
        save_stripes(alias, stripes, pool.max_amount)
        JackpotPool.all_objects.using(alias).filter(pk=pool.pk).update(
            version=F("version") + 1, lock_holder=operation_id, last_modified_at=now, updated_at=now
        )
        LedgerEntry.objects.using(alias).bulk_create(
            LedgerEntry(
                pool=pool,
                slot=stripe.slot,
                kind=LedgerKind.ADJUSTMENT,
                amount=change,
                balance_after=stripe.amount,
                pool_version=stripe.version,
                operation_id=operation_id,
                note=note[:200],
                created_at=now,
            )
            for stripe, change in rows
        )
    metrics.OPERATIONS.labels("adjust", "applied").inc()
    pool = get_pool(group, JackpotPool.objects.using(alias))
    audit("jackpot.adjustment", group=group, delta=delta, balance=pool.amount, note=note[:200])
    return pool


def validate_config(changes: dict, pool: JackpotPool, others: list[JackpotPool]) -> dict:
    """The validated changes, or InvalidInput naming the rule broken."""
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise InvalidInput(f"Only {', '.join(CONFIG_FIELDS)} can be changed.", code="unknown_field")
    for name, value in changes.items():
        if not (name == "max_amount" and value is None):
            strict_int(value, field=name)
            if abs(value) > MAX_STORABLE:
                raise InvalidInput(f"{name} is out of range.", code=f"{name}_out_of_range")
    merged = {name: changes.get(name, getattr(pool, name)) for name in CONFIG_FIELDS}
    if not 0 <= merged["contribution_rate_bp"] <= BP_SCALE:
        raise InvalidInput("contribution_rate_bp must be 0-10000.", code="rate_out_of_range")
    if merged["seed_amount"] < 0:
        raise InvalidInput("seed_amount cannot be negative.", code="seed_negative")
    if merged["max_amount"] is not None and merged["max_amount"] < merged["seed_amount"]:
        raise InvalidInput("max_amount cannot be below seed_amount.", code="max_below_seed")
    if merged["contribution_rate_bp"] + sum(p.contribution_rate_bp for p in others) > BP_SCALE:
        raise InvalidInput(
            "The contribution rates of all pools cannot add up to more than 10000 bp.",
            code="rates_exceed_bet",
        )
    return {name: value for name, value in changes.items() if getattr(pool, name) != value}


@operation("jackpot.config")
def update_config(
    *, group: str, changes: dict, expected_version: int, actor: str = "config"
) -> JackpotPool:
    """Change a pool's seed, rate or cap if its configuration is still at `expected_version`.

    `expected_version` names `config_version` (what the pool's ETag carries), not the balance:
    bets, wins and adjustments do not make a configuration edit stale, another configuration
    edit does (412). A change bumps `version` and `config_version`.

    All pools are locked (primary-key order) because the rates must add up to at most one
    whole bet across pools; a new rate or cap also locks the pool's stripes, which carry them.
    A new seed applies from the next reset; a lower cap does not take money out of a pool
    already above it (it only stops contributions). Changing nothing returns the pool as it
    is, without a new version.
    """
    alias = router.db_for_write(JackpotPool)
    with busy_on_lock_timeout(), transaction.atomic(using=alias):
        pools = list(_locked_pools(alias).order_by("pk"))
        pool = next((p for p in pools if p.group == group), None)
        if pool is None:
            raise UnknownGroup()
        if pool.config_version != expected_version:
            raise PreconditionFailed()
        effective = validate_config(changes, pool, [p for p in pools if p is not pool])
        if not effective:
            return pool
        now = timezone.now()
        for name, value in effective.items():
            setattr(pool, name, value)
        if {"contribution_rate_bp", "max_amount"} & set(effective):
            stripes = lock_stripes(alias, pool.pk)
            for stripe in stripes:
                stripe.rate_bp = pool.contribution_rate_bp
            save_stripes(alias, stripes, pool.max_amount)
        # Under the row lock: config_version is the value just read.
        JackpotPool.all_objects.using(alias).filter(pk=pool.pk).update(
            version=F("version") + 1,
            config_version=F("config_version") + 1,
            lock_holder=actor[:120],
            last_modified_at=now,
            updated_at=now,
            **effective,
        )
        pool.version += 1
        pool.config_version += 1
        pool.lock_holder, pool.last_modified_at = actor[:120], now
    metrics.OPERATIONS.labels("config", "applied").inc()
    audit(
        "jackpot.config",
        group=group,
        actor=actor[:120],
        changes=effective,
        version=pool.config_version,
    )
    return pool


def create_stripes(alias: str, pool: JackpotPool, seed: int) -> None:
    """The stripes of a new pool, `seed` in stripe 0, with its `seed` ledger row."""
    amounts = [seed] + [0] * (STRIPES_PER_POOL - 1)
    ceilings = spread_ceilings(amounts, total_ceiling(amounts, pool.max_amount))
    PoolStripe.objects.using(alias).bulk_create(
        PoolStripe(
            pool=pool, slot=slot, amount=amount, rate_bp=pool.contribution_rate_bp, ceiling=ceiling
        )
        for slot, (amount, ceiling) in enumerate(zip(amounts, ceilings, strict=True))
    )
    LedgerEntry.objects.using(alias).create(
        pool=pool,
        slot=0,
        kind=LedgerKind.SEED,
        amount=seed,
        balance_after=seed,
        pool_version=1,
        operation_id=f"seed:{pool.group}",
    )


def ensure_default_pools() -> list[JackpotPool]:
    """Create any missing pool of DEFAULT_POOLS with its stripes and `seed` ledger row
    (idempotent)."""
    alias = router.db_for_write(JackpotPool)
    with transaction.atomic(using=alias):
        for group, seed, rate, cap in DEFAULT_POOLS:
            pool, created = JackpotPool.all_objects.using(alias).get_or_create(
                group=group,
                defaults={"seed_amount": seed, "contribution_rate_bp": rate, "max_amount": cap},
            )
            if created:
                create_stripes(alias, pool, seed)
    pools = JackpotPool.objects.using(alias).all()
    return sorted(pools, key=lambda p: GROUPS.index(p.group))
