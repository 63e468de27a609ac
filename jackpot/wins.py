"""Paying a pool to a winner: everything it holds, once per operation id.

Pessimistic: the pool row is locked (`SELECT … FOR UPDATE`, the wait bounded by
JACKPOT_LOCK_TIMEOUT_MS, a timeout is 503 `busy`), then all of its stripes in primary-key
order. A contribution holds at most one stripe of the pool and only until its commit, so once
the win holds every stripe no bet is half-applied to the pool: the payout is exactly what the
pool holds, never more.
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, router, transaction
from django.db.models import Exists, F
from django.utils import timezone

from game import gold
from game.models import GoldKind, Player
from jackpot import metrics
from jackpot.errors import OperationReused, PlayerNotFound
from jackpot.inputs import player_id as _player_id
from jackpot.inputs import validate_operation_id
from jackpot.models import JackpotPool, LedgerEntry, LedgerKind, Win
from jackpot.pools import get_pool
from jackpot.stripes import bounded_lock, lock_stripes, save_stripes
from nightstorm.logs import audit
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout


@dataclass(frozen=True)
class WinResult:
    win: Win
    replayed: bool


@operation("jackpot.win")
def process_win(*, group: str, player, operation_id: str) -> WinResult:
    """Pay everything pool `group` holds to `player` and reset the pool to its seed; once.

    Under the locks of the pool and all its stripes: the payout is the sum of the stripes
    (never more, never negative); a `win` ledger row empties each stripe that held money
    (balance 0) and a `reset` row puts `seed_amount` back into stripe 0 (funded by the house,
    so the ledger still sums to the amount). The player is credited through the gold ledger
    (`game.gold.credit`, kind `jackpot_win`, reference = the operation id). The gold, its
    entry, the stripes, the ledger rows and the `Win` row commit together. A replayed
    operation id returns the first payout; one reused for another pool or player is refused
    (409).
    """
    validate_operation_id(operation_id)
    player_id = _player_id(player)
    alias = router.db_for_write(JackpotPool)
    started = time.perf_counter()
    try:
        with busy_on_lock_timeout(), transaction.atomic(using=alias):
            result = _win_once(alias, group, player_id, operation_id, started)
    except IntegrityError:
        # The read's replay probe sees the snapshot taken before it waited for the pool lock,
        # so a concurrent request with this operation id that committed during the wait is
        # only caught by the unique index on `Win.operation_id`. This attempt has rolled back
        # entirely; the stored win (read from the primary) is the answer.
        existing = (
            Win.objects.using(alias)
            .select_related("pool")
            .filter(operation_id=operation_id)
            .first()
        )
        if existing is None:
            raise
        result = _win_replay(existing, group, player_id)
    if result.replayed:
        metrics.OPERATIONS.labels("win", "replayed").inc()
        return result
    metrics.OPERATIONS.labels("win", "applied").inc()
    audit("jackpot.win", group=group, amount=result.win.amount, player=str(player_id))
    metrics.PAID.labels(group).inc(result.win.amount)
    metrics.SECONDS.labels("win").observe(time.perf_counter() - started)
    return result


def _win_replay(existing: Win, group: str, player_id) -> WinResult:
    if existing.pool.group != group or existing.player_id != player_id:
        raise OperationReused()
    return WinResult(existing, replayed=True)


def _win_once(alias: str, group: str, player_id, operation_id: str, started: float) -> WinResult:
    # One round trip takes the pool lock (bounded, see `bounded_lock`) and answers whether
    # this operation was paid already and whether the player exists.
    queryset = bounded_lock(
        JackpotPool.objects.using(alias), alias, settings.JACKPOT_LOCK_TIMEOUT_MS
    ).annotate(
        paid=Exists(Win.objects.filter(operation_id=operation_id)),
        player_known=Exists(Player.objects.filter(pk=player_id)),
    )
    pool = get_pool(group, queryset)
    if pool.paid:
        existing = Win.objects.using(alias).select_related("pool").get(operation_id=operation_id)
        return _win_replay(existing, group, player_id)
    if not pool.player_known:
        raise PlayerNotFound()
    stripes = lock_stripes(alias, pool.pk)
    metrics.LOCK_WAIT.labels("win").observe(time.perf_counter() - started)

    payout, seed, now = sum(s.amount for s in stripes), pool.seed_amount, timezone.now()
    # The Win first: if a duplicate committed while this request waited for the lock, the
    # unique index refuses it here, before anything else was written.
    win = Win.objects.using(alias).create(
        operation_id=operation_id, pool=pool, player_id=player_id, amount=payout, created_at=now
    )
    rows = []
    for stripe in stripes:
        if stripe.amount:
            stripe.version += 1
            rows.append((stripe, LedgerKind.WIN, -stripe.amount, 0))
            stripe.amount = 0
    if seed:
        first = stripes[0]
        if not any(row[0] is first for row in rows):
            first.version += 1
        first.amount = seed
        rows.append((first, LedgerKind.RESET, seed, seed))
    save_stripes(alias, stripes, pool.max_amount)
    JackpotPool.all_objects.using(alias).filter(pk=pool.pk).update(
        version=F("version") + 1, lock_holder=operation_id, last_modified_at=now, updated_at=now
    )
    LedgerEntry.objects.using(alias).bulk_create(
        LedgerEntry(
            pool=pool,
            slot=stripe.slot,
            kind=kind,
            amount=amount,
            balance_after=balance,
            pool_version=stripe.version,
            operation_id=operation_id,
            player_id=player_id,
            created_at=now,
        )
        for stripe, kind, amount, balance in rows
    )
    if payout:
        gold.credit(
            player_id=player_id,
            amount=payout,
            kind=GoldKind.JACKPOT_WIN,
            reference=operation_id,
            note=f"jackpot {group}",
        )
    return WinResult(win, replayed=False)
