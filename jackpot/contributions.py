"""A bet's share into the three pools, once per operation id, without a hot row.

A pool's money is spread over its stripes (`jackpot.models.PoolStripe`). A contribution locks
one stripe per pool and adds that pool's part to it, so concurrent bets run side by side on
different stripes instead of queueing on three pool rows. It never touches the pool rows. On
PostgreSQL the first attempt is one statement, from claim to write, and its own transaction
outside a caller's; an attempt it leaves (a pool without a free stripe, a capped part for the
exact path) is retried as two (see `jackpot.statements`).

Caps without a shared counter: each stripe has a `ceiling`, its share of the room left under
the pool's cap, and a contribution credits at most what its stripe can still take. When that
is less than the part although the pool's other stripes still have room, the attempt is run
again on the exact path for that pool: it locks all of the pool's stripes (primary-key order),
credits `min(part, room of the pool)` over as many stripes as needed, and spreads the room left
evenly over the stripes again. So a capped pool takes exactly what it would take as one row,
and it never holds more than its cap.

Retries: a pool whose stripes were all held (by other bets, or by a win locking them all)
makes the attempt roll back and run again after a jittered backoff, then waiting for one
stripe per pool in primary-key order, the wait bounded by JACKPOT_LOCK_TIMEOUT_MS. A lock
timeout or a deadlock victim is retried the same way; after JACKPOT_MAX_RETRY_ATTEMPTS
attempts the call raises 503 `jackpot_contended`, having applied nothing.

Once only: the claim also answers whether the operation id was applied. A concurrent request
with the same id that commits first makes this attempt's insert meet the unique index: the
one-statement attempt's insert then does nothing (ON CONFLICT), and with it the stripes' and
the ledger's writes, which depend on it; the two-statement attempt's fails and rolls back. In
both cases the stored contribution is returned instead. A one-statement attempt inside a
caller's transaction runs without a savepoint, and raises a database error (a deadlock
victim) to the caller rather than retrying in a transaction that error aborted.

On SQLite (no row locks; transactions are serialised) an attempt reads all stripes and always
takes the exact path with ORM statements.
"""

import logging
import random
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import F
from django.utils import timezone

from jackpot import metrics, statements
from jackpot.errors import JackpotContended, OperationReused, PoolsMissing
from jackpot.inputs import player_id as _player_id
from jackpot.inputs import validate_bet, validate_operation_id
from jackpot.ledger import split_bet, spread_ceilings
from jackpot.models import (
    GROUPS,
    STRIPES_PER_POOL,
    Contribution,
    LedgerEntry,
    LedgerKind,
    PoolStripe,
)
from nightstorm import metrics as toolkit_metrics
from nightstorm.errors import ConcurrencyConflict
from nightstorm.operations import operation
from nightstorm.sql import run
from nightstorm.transactions import backoff_delay, is_lock_timeout, is_transient


@dataclass(frozen=True)
class ContributionResult:
    contribution: Contribution
    replayed: bool
    attempts: int


class _StripesHeld(ConcurrencyConflict):
    """Every stripe of some pool was held: wait for one on the next attempt."""


class _NeedsExactCap(Exception):
    """A capped part did not fit its stripe while the pool had room elsewhere."""

    def __init__(self, groups: set[str]):
        super().__init__(groups)
        self.groups = groups


@operation("jackpot.contribute", ok_level=logging.DEBUG)
def contribute(*, player, bet: int, operation_id: str) -> ContributionResult:
    """Add a bet's share to all three pools, once per `operation_id`; retry on conflicts.

    Replaying an operation id returns the stored contribution (`replayed=True`); reusing it for
    another player or bet is refused (409 `operation_id_reused`). After the last attempt loses
    to concurrent writers, nothing is applied and `JackpotContended` (503) is raised. Owns its
    transaction (a savepoint inside a caller's).
    """
    bet = validate_bet(bet)
    validate_operation_id(operation_id)
    player_id = _player_id(player)
    alias = router.db_for_write(Contribution)
    connection = connections[alias]
    limit = settings.JACKPOT_MAX_RETRY_ATTEMPTS
    started = time.perf_counter()
    wait, exact, attempt = False, frozenset(), 0
    while True:
        attempt += 1
        # The one-statement attempt takes no transaction of its own. Outside a caller's it is
        # one (no BEGIN, no COMMIT round trip); inside one it needs no savepoint (two round
        # trips): whatever it leaves to another attempt, a concurrent twin included, it leaves
        # without an error and without a write. A database error in it has made the caller's
        # transaction unusable, so it is the caller's to handle (`@idempotent` retries it).
        one_statement = _in_one_statement(connection, wait, exact)
        unguarded = one_statement and connection.in_atomic_block
        try:
            with nullcontext() if one_statement else transaction.atomic(using=alias):
                contribution, replayed = _contribute_once(
                    alias, player_id, bet, operation_id, wait=wait, exact=exact
                )
            break
        except IntegrityError:
            if unguarded:
                raise
            # A concurrent request with the same operation id committed first (unique index);
            # this attempt rolled back entirely and the stored contribution is the answer.
            # Read from the primary: a replica may not have it yet.
            existing = Contribution.objects.using(alias).filter(operation_id=operation_id).first()
            if existing is None:
                raise
            contribution, replayed = _replay(existing, player_id, bet), True
            break
        except _NeedsExactCap as exc:
            # Not contention: run again at once, locking all stripes of those pools.
            exact, wait = exact | exc.groups, True
            if attempt >= limit:
                metrics.OPERATIONS.labels("contribute", "contended").inc()
                raise JackpotContended() from None
        except (ConcurrencyConflict, DatabaseError) as exc:
            # All stripes of a pool held, a lock timeout (55P03) or a deadlock victim (40P01):
            # run again, waiting for a stripe this time.
            if not isinstance(exc, ConcurrencyConflict) and (
                unguarded or not (is_transient(exc) or is_lock_timeout(exc))
            ):
                raise
            metrics.CONFLICTS.labels("contribute").inc()
            wait = True
            if attempt >= limit:
                metrics.OPERATIONS.labels("contribute", "contended").inc()
                raise JackpotContended() from None
            metrics.RETRIES.labels("contribute").inc()
            time.sleep(backoff_delay(attempt, settings.JACKPOT_RETRY_DELAY_MS))
    _COUNTED["replayed" if replayed else "applied"].inc()
    _SECONDS.observe(time.perf_counter() - started)
    if not replayed:
        for group, amount in contribution.amounts.items():
            _CONTRIBUTED[group].inc(amount)
    return ContributionResult(contribution, replayed, attempt)


# The labelled series of every bet, looked up once (`labels()` locks and builds a key).
_COUNTED = {
    outcome: metrics.OPERATIONS.labels("contribute", outcome) for outcome in ("applied", "replayed")
}
_SECONDS = metrics.SECONDS.labels("contribute")
_CONTRIBUTED = {group: metrics.CONTRIBUTED.labels(group) for group in GROUPS}


def _replay(existing: Contribution, player_id, bet: int) -> Contribution:
    if existing.player_id != player_id or existing.bet != bet:
        raise OperationReused()
    return existing


def _contribute_once(
    alias: str, player_id, bet: int, operation_id: str, *, wait: bool, exact: frozenset
) -> tuple[Contribution, bool]:
    """One attempt; the caller's `atomic()` rolls it back on any exception (or, for the first
    attempt's single statement outside a transaction, the statement wrote nothing)."""
    postgres = connections[alias].vendor == "postgresql"
    if _in_one_statement(connections[alias], wait, exact):
        return _contribute_in_one_statement(alias, player_id, bet, operation_id)
    if postgres:
        stripes, applied = _claim(alias, operation_id, bet, wait=wait, exact=exact)
    else:
        stripes, applied = _read_all(alias, operation_id)
        exact = frozenset(GROUPS)
    if applied:
        return _stored(alias, operation_id, player_id, bet), True
    held = defaultdict(list)
    for stripe in stripes:
        held[stripe.group].append(stripe)
    if set(held) != set(GROUPS):
        if wait or not postgres:  # every stripe was read or waited for: there are none
            raise PoolsMissing()
        toolkit_metrics.CONFLICTS.labels("jackpot.poolstripe").inc()
        raise _StripesHeld()
    split = split_bet(bet, {group: rows[0].rate_bp for group, rows in held.items()})

    credited, changes, escalate = {}, [], set()
    for group in GROUPS:
        part = split.parts[group]
        if group in exact:
            credited[group] = _credit_exactly(held[group], part, changes)
            continue
        stripe = held[group][0]
        room = None if stripe.ceiling is None else stripe.ceiling - stripe.amount
        credited[group] = part if room is None else min(part, room)
        if credited[group] < part and (stripe.room_elsewhere or 0) > 0:
            escalate.add(group)
        elif credited[group]:
            changes.append(
                (stripe, stripe.amount + credited[group], stripe.version + 1, stripe.ceiling)
            )
    if escalate:
        raise _NeedsExactCap(escalate)

    now = timezone.now()
    overflow = sum(split.parts.values()) - sum(credited.values())
    values = {
        "operation_id": operation_id,
        "player_id": player_id,
        "bet": bet,
        "minor_amount": credited["minor"],
        "major_amount": credited["major"],
        "mega_amount": credited["mega"],
        "house_amount": split.remainder + overflow,
        "overflow_amount": overflow,
        "created_at": now,
    }
    if postgres:
        params = [values[name] for name in statements.CONTRIBUTION_COLUMNS]
        for stripe, amount, version, ceiling in changes:
            params += [stripe.id, amount, version, ceiling, amount - stripe.amount]
        ((pk,),) = run(alias, statements.write_sql(len(changes)), params)
    else:
        pk = _write_with_orm(alias, values, changes)
    return _written(alias, pk, values), False


def _in_one_statement(connection, wait: bool, exact: frozenset) -> bool:
    """Whether an attempt is the one-statement kind: PostgreSQL, nothing to wait for, no pool
    on the exact path (a first attempt)."""
    return connection.vendor == "postgresql" and not wait and not exact


def _stored(alias: str, operation_id: str, player_id, bet: int) -> Contribution:
    """The contribution an applied operation id stored (refused if reused for another bet)."""
    existing = Contribution.objects.using(alias).get(operation_id=operation_id)
    return _replay(existing, player_id, bet)


def _written(alias: str, pk, values: dict) -> Contribution:
    """The contribution this attempt wrote, as loaded from the database."""
    contribution = Contribution(pk=pk, **values)
    contribution._state.adding, contribution._state.db = False, alias
    return contribution


def _contribute_in_one_statement(
    alias: str, player_id, bet: int, operation_id: str
) -> tuple[Contribution, bool]:
    """The common case, claim to write in `statements.CONTRIBUTE`; raises what the
    two-statement attempt would for the cases it leaves to that path (so the caller runs it)."""
    now = timezone.now()
    params = {
        "op": operation_id,
        "player": player_id,
        "bet": bet,
        "slot": random.randrange(STRIPES_PER_POOL),
        "now": now,
    }
    ((applied, claimed, rates_ok, exact, pk, *amounts),) = run(alias, statements.CONTRIBUTE, params)
    if applied:
        return _stored(alias, operation_id, player_id, bet), True
    if pk is None:
        if claimed < len(GROUPS):  # a pool without a free stripe (or without stripes)
            toolkit_metrics.CONFLICTS.labels("jackpot.poolstripe").inc()
            raise _StripesHeld()
        if exact:
            raise _NeedsExactCap(set(exact))
        if not rates_ok:
            raise ValueError("contribution rates add up to more than the whole bet")
        # Everything said write, and the insert did nothing: a concurrent request with the
        # same operation id committed it first (ON CONFLICT); this statement's next one sees it.
        return _stored(alias, operation_id, player_id, bet), True
    parts = ("minor_amount", "major_amount", "mega_amount", "house_amount", "overflow_amount")
    values = {"operation_id": operation_id, "player_id": player_id, "bet": bet, "created_at": now}
    return _written(alias, pk, {**values, **dict(zip(parts, amounts, strict=True))}), False


def _claim(alias: str, operation_id: str, bet: int, *, wait: bool, exact: frozenset):
    slot = random.randrange(STRIPES_PER_POOL)
    if wait:
        timeout = f"{int(settings.JACKPOT_LOCK_TIMEOUT_MS)}ms"
        rows = run(alias, statements.CLAIM_LOCKED, [operation_id, slot, sorted(exact), timeout])
    else:
        rows = run(alias, statements.CLAIM_FREE, [operation_id, bet, slot])
    return statements.parse_claim(rows)


def _credit_exactly(stripes: list, part: int, changes: list) -> int:
    """Credit `part` to a pool whose stripes are all locked: at most the room of the whole
    pool, the stripes with the most room first; then spread the room left evenly again."""
    if stripes[0].ceiling is None:
        credit = part
        amounts = [s.amount for s in stripes]
        amounts[0] += credit
        ceilings = [None] * len(stripes)
    else:
        ceiling_total = sum(s.ceiling for s in stripes)
        credit = min(part, ceiling_total - sum(s.amount for s in stripes))
        amounts, left = [s.amount for s in stripes], credit
        for i in sorted(range(len(stripes)), key=lambda i: stripes[i].amount - stripes[i].ceiling):
            take = min(left, stripes[i].ceiling - amounts[i])
            amounts[i], left = amounts[i] + take, left - take
        ceilings = spread_ceilings(amounts, ceiling_total)
    for stripe, amount, ceiling in zip(stripes, amounts, ceilings, strict=True):
        if amount != stripe.amount or ceiling != stripe.ceiling:
            version = stripe.version + (amount != stripe.amount)
            changes.append((stripe, amount, version, ceiling))
    return credit


def _read_all(alias: str, operation_id: str):
    """SQLite: every stripe (transactions are serialised there) and the replay probe."""
    rows = PoolStripe.objects.using(alias).filter(pool__deleted_at__isnull=True).order_by("pk")
    stripes = [
        statements.StripeState(
            s.pk, s.pool_id, s.slot, s.amount, s.version, s.rate_bp, s.ceiling, s.group, None
        )
        for s in rows.annotate(group=F("pool__group"))
    ]
    applied = Contribution.objects.using(alias).filter(operation_id=operation_id).exists()
    return stripes, applied


def _write_with_orm(alias: str, values: dict, changes: list) -> int:
    contribution = Contribution.objects.using(alias).create(**values)
    for stripe, amount, version, ceiling in changes:
        PoolStripe.objects.using(alias).filter(pk=stripe.id).update(
            amount=amount, version=version, ceiling=ceiling
        )
    LedgerEntry.objects.using(alias).bulk_create(
        LedgerEntry(
            pool_id=stripe.pool_id,
            slot=stripe.slot,
            kind=LedgerKind.CONTRIBUTION,
            amount=amount - stripe.amount,
            balance_after=amount,
            pool_version=version,
            operation_id=values["operation_id"],
            player_id=values["player_id"],
            created_at=values["created_at"],
        )
        for stripe, amount, version, _ in changes
        if amount != stripe.amount
    )
    return contribution.pk
