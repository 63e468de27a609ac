"""Every change of a jackpot pool: contribute, pay a win, adjust, reconfigure.

Each function owns its transaction with a plain `transaction.atomic()` (not durable): the API's
idempotency decorator runs the view as the outermost (durable) transaction, which also stores
the response, so here a block is then a savepoint. Every change of `amount` writes its ledger
rows in the same transaction and bumps `version`, which keeps the invariant of
`jackpot.models` at every commit. A configuration change also bumps `config_version`, the
version a caller's precondition (`expected_version`, If-Match) names.

Once only: two layers, on purpose.
- HTTP (`nightstorm.idempotency`, `@idempotent(required=True)` on contributions and wins): an
  Idempotency-Key is required; the decorator stores the response with the work, replays it
  byte for byte, refuses the key with another body (422) and tells a concurrent duplicate to
  retry (409). It answers the client. It does not know what the money is.
- Here, `operation_id` (unique on `Contribution`, `Win`, and per pool and kind on the ledger):
  a second call with an operation id returns the first result (`replayed`) and never moves
  money again, whoever calls. Kept because the services are also called without HTTP (the
  admin's adjustments, keyed by a token rendered into the form; scripts; jobs), where this is
  the only guarantee; because the idempotency record expires (NIGHTSTORM_IDEMPOTENCY_TTL_HOURS)
  while the API derives the operation id from the caller and the key, so a late retry still
  reaches the stored contribution or win; and because a unique index holds whatever happens
  above it (a claim taken over after its lease expired, a bug). Its cost on the hot path is
  no extra statement: the contribution's replay probe is an EXISTS inside the pool read, the
  win's inside its locking read, and the unique index is the one the lookup needs anyway. A
  locking read's probe sees the snapshot from before its lock wait, so a duplicate that
  committed during the wait is caught by the unique index; the attempt then rolls back and
  returns the stored result.

Concurrency, per operation:
- `contribute` is optimistic: read the three pools, compute the split, then write everything
  with version checks (`WHERE version = <read>`, primary-key order). Any pool that moved
  meanwhile (another bet, a win, a configuration change) makes the whole attempt roll back and
  run again after a jittered backoff, at most JACKPOT_MAX_RETRY_ATTEMPTS times.
  On PostgreSQL the writes are ONE statement, a data-modifying CTE: insert the Contribution,
  update the three pools (each UPDATE gated on the previous one, so the rows are locked in
  primary-key order and a lost race stops at the first pool that moved), insert the ledger
  rows once all three matched, and return how many pools were updated; fewer than three
  raises ConcurrencyConflict, which rolls the attempt's transaction back, inserts included.
  Why: under contention throughput is bound by how long the three hot rows stay locked, and
  every round trip from the first lock to the COMMIT is lock time: with separate statements
  that was four (three UPDATEs, COMMIT) on the optimistic path and seven on the locked one
  (locked read, two inserts, three UPDATEs, COMMIT); now it is two and three. On SQLite the
  same writes run as separate statements (inserts, then one `update_versioned` per pool).
  Trade-off on hot rows: a conditional UPDATE that has to wait for another writer's row lock
  always loses once that writer commits, so under many concurrent bets pure optimism mostly
  spins (measured: a third of 6,400 bets from 32 threads gave up after 10 attempts). After
  JACKPOT_OPTIMISTIC_ATTEMPTS lost attempts (default 1) the retry therefore reads the three
  pools `FOR UPDATE` first, with `SET LOCAL lock_timeout` folded into that read (one round
  trip less before the locks are taken); its version-checked writes then cannot lose, and it
  waits its turn instead of spinning. Without contention no lock is taken before the write.
  For JACKPOT_HOT_WINDOW_MS (default 200) after a conflict in this process, new contributions
  start with the locked read, since their optimistic attempt would almost surely lose too.
- `process_win` and `adjust_pool` are pessimistic: `SELECT … FOR UPDATE` of the one pool,
  bounded by JACKPOT_LOCK_TIMEOUT_MS (a timeout is 503 `busy`), so the amount paid is exactly
  the amount held at that moment.
- `update_config` locks all pools, because the sum of the rates is a rule across rows, and
  compares the caller's `expected_version` with `config_version`: bets and wins do not make a
  configuration edit stale (they move `version` many times a second), another configuration
  edit does. `adjust_pool`'s `expected_version` names `config_version` too (a delta is
  relative; its bounds are checked against the amount under the lock).
"""

import functools
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import CharField, Exists, Func, Value
from django.utils import timezone

from game import gold
from game.models import GoldKind, Player
from jackpot import metrics
from jackpot.ledger import capped, split_bet
from jackpot.models import (
    BP_SCALE,
    GROUPS,
    Contribution,
    JackpotPool,
    LedgerEntry,
    LedgerKind,
    Win,
)
from nightstorm import metrics as toolkit_metrics
from nightstorm.errors import (
    Busy,
    ConcurrencyConflict,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from nightstorm.logs import audit
from nightstorm.operations import operation
from nightstorm.optimistic import update_versioned
from nightstorm.transactions import (
    backoff_delay,
    busy_on_lock_timeout,
    is_lock_timeout,
    is_transient,
)

DEFAULT_POOLS = (
    # group, seed_amount, contribution_rate_bp, max_amount (minor units); as migration 0002
    ("minor", 1_000, 100, 500_000),
    ("major", 10_000, 50, 5_000_000),
    ("mega", 100_000, 25, None),
)


class UnknownGroup(NotFound):
    code = "unknown_group"
    detail = "There is no jackpot pool with that group."


class PlayerNotFound(NotFound):
    code = "player_not_found"
    detail = "There is no such player."


class OperationReused(Conflict):
    code = "operation_id_reused"
    detail = "This operation id was already used for a different request."


class JackpotContended(Busy):
    code = "jackpot_contended"
    detail = "The jackpot pools are too busy right now; retry with the same key shortly."


@dataclass(frozen=True)
class ContributionResult:
    contribution: Contribution
    replayed: bool
    attempts: int


@dataclass(frozen=True)
class WinResult:
    win: Win
    replayed: bool


# --- input checks ---------------------------------------------------------------------------


# Amounts live in 64-bit integer columns.
MAX_STORABLE = 2**63 - 1


def _strict_int(value, *, field: str) -> int:
    # bool is an int subclass and JSON floats like 1000.0 or 1e3 are not integers of cents.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            f"{field} must be an integer number of minor units.", code=f"{field}_not_integer"
        )
    return value


def validate_bet(bet) -> int:
    """The bet as an int, or InvalidInput with a specific code (never coerces)."""
    if bet is None:
        raise InvalidInput("bet is required.", code="bet_required")
    bet = _strict_int(bet, field="bet")
    if bet <= 0:
        raise InvalidInput("bet must be positive.", code="bet_not_positive")
    if bet > settings.JACKPOT_MAX_BET:
        raise InvalidInput(f"bet must be at most {settings.JACKPOT_MAX_BET}.", code="bet_too_large")
    return bet


def _validate_operation_id(operation_id: str) -> str:
    if not isinstance(operation_id, str) or not 0 < len(operation_id) <= 100:
        raise InvalidInput("operation_id must be 1-100 characters.", code="invalid_operation_id")
    return operation_id


def _player_id(player) -> uuid.UUID:
    """A Player or its id (UUID or string) as a UUID; the player must exist (a foreign key)."""
    if isinstance(player, Player):
        return player.pk
    try:
        return player if isinstance(player, uuid.UUID) else uuid.UUID(str(player))
    except ValueError:
        raise InvalidInput("player must be a player id.", code="invalid_player") from None


def get_pool(group: str, queryset=None) -> JackpotPool:
    """The live pool of `group` (from `queryset`, e.g. a locking one), or 404 `unknown_group`."""
    queryset = JackpotPool.objects.all() if queryset is None else queryset
    pool = queryset.filter(group=group).first()
    if pool is None:
        raise UnknownGroup()
    return pool


# --- contributions --------------------------------------------------------------------------


@operation("jackpot.contribute")
def contribute(*, player, bet: int, operation_id: str) -> ContributionResult:
    """Add a bet's share to all three pools, once per `operation_id`; retry on conflicts.

    Replaying an operation id returns the stored contribution (`replayed=True`); reusing it for
    another player or bet is refused (409 `operation_id_reused`). After the last attempt loses
    to concurrent writers, nothing is applied and `JackpotContended` (503) is raised.
    """
    bet = validate_bet(bet)
    _validate_operation_id(operation_id)
    player_id = _player_id(player)
    limit = settings.JACKPOT_MAX_RETRY_ATTEMPTS
    optimistic_attempts = settings.JACKPOT_OPTIMISTIC_ATTEMPTS
    started = time.perf_counter()
    if time.monotonic() < _contention.hot_until:
        optimistic_attempts = 0  # a conflict just happened here: the pools are hot, queue up
    attempt = 0
    while True:
        attempt += 1
        try:
            with transaction.atomic():
                lock = attempt > optimistic_attempts
                contribution, replayed = _contribute_once(player_id, bet, operation_id, lock)
            break
        except IntegrityError:
            # A concurrent request with the same operation id committed first (unique index on
            # the contribution or its ledger rows); this attempt rolled back entirely and the
            # stored contribution is the answer.
            existing = Contribution.objects.filter(operation_id=operation_id).first()
            if existing is None:
                raise
            contribution, replayed = _replay(existing, player_id, bet), True
            break
        except (ConcurrencyConflict, DatabaseError) as exc:
            # A lock timeout (55P03) or a deadlock victim (40P01) is retried like a lost version
            # race (every writer takes the pools in primary-key order, so deadlocks should not
            # happen, but neither may be a 500).
            if not isinstance(exc, ConcurrencyConflict) and not (
                is_transient(exc) or is_lock_timeout(exc)
            ):
                raise
            metrics.CONFLICTS.labels("contribute").inc()
            _contention.hot_until = time.monotonic() + _hot_window_s()
            if attempt >= limit:
                metrics.OPERATIONS.labels("contribute", "contended").inc()
                raise JackpotContended() from None
            metrics.RETRIES.labels("contribute").inc()
            time.sleep(backoff_delay(attempt, settings.JACKPOT_RETRY_DELAY_MS))
    metrics.OPERATIONS.labels("contribute", "replayed" if replayed else "applied").inc()
    metrics.SECONDS.labels("contribute").observe(time.perf_counter() - started)
    if not replayed:
        for group, amount in contribution.amounts.items():
            metrics.CONTRIBUTED.labels(group).inc(amount)
    return ContributionResult(contribution, replayed, attempt)


class _Contention:
    """When this process last lost a contribution race (shared by its threads; a hint only)."""

    hot_until = 0.0


_contention = _Contention()


def _hot_window_s() -> float:
    return settings.JACKPOT_HOT_WINDOW_MS / 1000


def _replay(existing: Contribution, player_id, bet: int) -> Contribution:
    if existing.player_id != player_id or existing.bet != bet:
        raise OperationReused()
    return existing


def _contribute_once(
    player_id, bet: int, operation_id: str, lock: bool
) -> tuple[Contribution, bool]:
    """One attempt; the caller's `atomic()` rolls it back on any conflict.

    With `lock`, the pools are read `FOR UPDATE` (primary-key order, bounded wait) so the
    version-checked writes that follow cannot lose: a retry waits its turn instead of spinning.
    """
    connection = connections[router.db_for_write(JackpotPool)]
    postgres = connection.vendor == "postgresql"
    # One round trip reads the pools and whether this operation id was applied already.
    pools, applied = _read_pools(operation_id, lock)
    if applied:
        existing = Contribution.objects.get(operation_id=operation_id)
        return _replay(existing, player_id, bet), True
    if sorted(p.group for p in pools) != sorted(GROUPS):
        raise Conflict("The jackpot pools are not set up.", code="pools_missing")
    split = split_bet(bet, {p.group: p.contribution_rate_bp for p in pools})

    now = timezone.now()
    credited, entries = {}, []
    for pool in pools:
        part = split.parts[pool.group]
        credited[pool.group] = capped(pool.amount, part, pool.max_amount)
        if credited[pool.group]:
            entries.append(
                {
                    "pool": pool.pk,
                    "kind": LedgerKind.CONTRIBUTION,
                    "amount": credited[pool.group],
                    "balance_after": pool.amount + credited[pool.group],
                    "pool_version": pool.version + 1,
                    "operation_id": operation_id,
                    "player": player_id,
                    "note": "",
                    "created_at": now,
                }
            )
    overflow = sum(split.parts.values()) - sum(credited.values())
    values = {
        "operation_id": operation_id,
        "player": player_id,
        "bet": bet,
        "minor_amount": credited["minor"],
        "major_amount": credited["major"],
        "mega_amount": credited["mega"],
        "house_amount": split.remainder + overflow,
        "overflow_amount": overflow,
        "created_at": now,
    }
    # Every pool is updated, even with a zero part: the version check then covers the whole
    # snapshot the split was computed from (rates, caps, amounts of all three).
    writes = [(pool, pool.amount + credited[pool.group]) for pool in pools]
    if postgres:
        pk = _write_contribution(connection, values, entries, writes, now)
    else:
        pk = _insert(Contribution, [values], returning=True)
        if entries:
            _insert(LedgerEntry, entries)
        for pool, amount in writes:
            _write_pool(pool, amount=amount, last_modified_at=now)
    contribution = Contribution(
        pk=pk, player_id=player_id, **{k: v for k, v in values.items() if k != "player"}
    )
    contribution._state.adding = False
    return contribution, False


def _write_pool(pool: "PoolState", **changes) -> None:
    update_versioned(JackpotPool, pool.pk, pool.version, **changes)


# --- the contribution's hot statements ------------------------------------------------------
# Under contention the pools are held locked from the read to the commit, so the Python time
# between statements is lock time too. Like `nightstorm.optimistic.update_versioned`, these
# statements are built by the ORM once per shape and then executed with fresh values (the
# model fields still prepare every value); the ORM's per-call query building cost as much as
# the round trips.

_POOL_COLUMNS = ("pk", "group", "amount", "version", "contribution_rate_bp", "max_amount")
_PROBE = "\x00operation-id\x00"


@dataclass(frozen=True)
class PoolState:
    """The columns of a pool a contribution reads (a plain row, not a model instance)."""

    pk: object
    group: str
    amount: int
    version: int
    contribution_rate_bp: int
    max_amount: int | None


@functools.lru_cache(maxsize=8)
def _read_pools_sql(alias: str, lock: bool, lock_timeout_ms: int) -> tuple[str, tuple]:
    queryset = (
        JackpotPool.objects.using(alias)
        .order_by("pk")
        .annotate(applied=Exists(Contribution.objects.filter(operation_id=_PROBE)))
    )
    if lock:
        queryset = _bounded_lock(queryset, alias, lock_timeout_ms)
    query = queryset.values_list(*_POOL_COLUMNS, "applied").query
    sql, params = query.get_compiler(using=alias).as_sql()
    if list(params).count(_PROBE) != 1:
        raise RuntimeError("unexpected parameters in the pool read")
    return sql, tuple(params)


def _read_pools(operation_id: str, lock: bool) -> tuple[list[PoolState], bool]:
    """The live pools in primary-key order (locked with `lock`) and whether the op applied."""
    connection = connections[router.db_for_read(JackpotPool)]
    with transaction.mark_for_rollback_on_error(connection.alias), connection.cursor() as cursor:
        sql, template = _read_pools_sql(
            connection.alias, lock, settings.JACKPOT_LOCK_TIMEOUT_MS if lock else 0
        )
        cursor.execute(sql, [operation_id if p == _PROBE else p for p in template])
        rows = cursor.fetchall()
    return [PoolState(*row[:6]) for row in rows], bool(rows and rows[0][6])


@functools.lru_cache(maxsize=32)
def _insert_sql(model, fields: tuple[str, ...], count: int, alias: str, returning: bool):
    connection = connections[alias]
    quote = connection.ops.quote_name
    targets = tuple(model._meta.get_field(name) for name in fields)
    row = "(" + ", ".join(["%s"] * len(targets)) + ")"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in targets)}) VALUES {', '.join([row] * count)}"
    )
    if returning:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    return sql, targets


def _insert(model, rows: list[dict], *, returning: bool = False):
    """INSERT `rows` (dicts of field name to value) in one statement; the new pk if asked."""
    connection = connections[router.db_for_write(model)]
    sql, targets = _insert_sql(model, tuple(rows[0]), len(rows), connection.alias, returning)
    params = [f.get_db_prep_save(row[f.name], connection) for row in rows for f in targets]
    with transaction.mark_for_rollback_on_error(connection.alias), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0] if returning else None


# The contribution's writes as one statement (PostgreSQL). Under contention the pool rows stay
# locked from their UPDATE to the commit, so every round trip after the first UPDATE is lock
# time. One data-modifying CTE brings the locked span down to this statement and the COMMIT:
#
#   c      INSERT the Contribution (first: a duplicate operation id waits here, on the unique
#          index, before it holds any pool row, so two requests with one id cannot deadlock)
#   p1..p3 one version-checked UPDATE per pool in primary-key order, each gated on the one
#          before it (`EXISTS (SELECT 1 FROM p1)`): the gate makes the order of the row locks
#          the primary-key order every other writer uses (one UPDATE … FROM (VALUES …) would
#          lock in whatever order its join plan visits the rows), and a lost race stops
#          before waiting for the rest
#   l      INSERT the ledger rows, only once all three UPDATEs matched
#
# and it returns the contribution's id and how many pools were updated. Fewer than three is
# a lost race: ConcurrencyConflict rolls the attempt's transaction back, inserts included.


@functools.lru_cache(maxsize=16)
def _contribute_sql(alias: str, ledger_rows: int):
    connection = connections[alias]
    quote = connection.ops.quote_name

    def fields(model, names):
        return tuple(model._meta.get_field(name) for name in names)

    contribution_fields = fields(Contribution, _CONTRIBUTION_FIELDS)
    ledger_fields = fields(LedgerEntry, _LEDGER_FIELDS)
    pool = JackpotPool._meta
    shared_fields = fields(LedgerEntry, _LEDGER_SHARED_FIELDS)
    pool_fields = fields(JackpotPool, _POOL_WRITE_FIELDS)
    version, pk = quote(pool.get_field("version").column), quote(pool.pk.column)
    ctes = [
        f"c AS (INSERT INTO {quote(Contribution._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in contribution_fields)}) "
        f"VALUES ({', '.join(['%s'] * len(contribution_fields))}) "
        f"RETURNING {quote(Contribution._meta.pk.column)}, "
        f"{', '.join(quote(f.column) for f in _from_contribution())})"
    ]
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in pool_fields)
    condition = f"{pk} = %s AND {version} = %s"
    for n, gate in ((1, "c"), (2, "p1"), (3, "p2")):
        ctes.append(
            f"p{n} AS (UPDATE {quote(pool.db_table)} SET {assignments}, "
            f"{version} = {version} + 1 WHERE {condition} AND EXISTS (SELECT 1 FROM {gate}) "
            f"RETURNING {pk})"
        )
    if ledger_rows:
        # What differs per row comes from VALUES, with typed placeholders (with server-side
        # binding a VALUES list has no column to take the parameter types from); what the rows
        # share comes from the contribution row (`c`) or is sent once. Fewer parameters also
        # keep psycopg's per-query cache working (it skips queries with more than 50).
        row = ", ".join(f"CAST(%s AS {f.cast_db_type(connection)})" for f in ledger_fields)
        rows = ", ".join([f"({row})"] * ledger_rows)
        names = ", ".join(f"v{i}" for i in range(len(ledger_fields)))
        columns = [quote(f.column) for f in ledger_fields + shared_fields + _from_contribution()]
        select = (
            [f"v{i}" for i in range(len(ledger_fields))]
            + [f"CAST(%s AS {f.cast_db_type(connection)})" for f in shared_fields]
            + [f"c.{quote(f.column)}" for f in _from_contribution()]
        )
        ctes.append(
            f"l AS (INSERT INTO {quote(LedgerEntry._meta.db_table)} ({', '.join(columns)}) "
            f"SELECT {', '.join(select)} FROM (VALUES {rows}) AS v ({names}) CROSS JOIN c "
            "WHERE EXISTS (SELECT 1 FROM p3))"
        )
    sql = (
        f"WITH {', '.join(ctes)} SELECT (SELECT {quote(Contribution._meta.pk.column)} FROM c), "
        "(SELECT COUNT(*) FROM p1) + (SELECT COUNT(*) FROM p2) + (SELECT COUNT(*) FROM p3)"
    )
    return sql, contribution_fields, ledger_fields, shared_fields, pool_fields


_CONTRIBUTION_FIELDS = (
    "operation_id",
    "player",
    "bet",
    "minor_amount",
    "major_amount",
    "mega_amount",
    "house_amount",
    "overflow_amount",
    "created_at",
)
_LEDGER_FIELDS = ("pool", "amount", "balance_after", "pool_version")  # per row
_LEDGER_SHARED_FIELDS = ("kind", "note")  # one parameter each
# Ledger columns taken from the contribution row (the same values for every ledger row).
_FROM_CONTRIBUTION = ("operation_id", "player", "created_at")


def _from_contribution():
    return tuple(Contribution._meta.get_field(name) for name in _FROM_CONTRIBUTION)


_POOL_WRITE_FIELDS = ("amount", "last_modified_at", "updated_at")


def _write_contribution(connection, values: dict, entries: list[dict], writes, now) -> int:
    """The contribution, its ledger rows and the three pool updates in one statement.

    Returns the contribution's id; raises ConcurrencyConflict if any pool moved since it was
    read (the caller's transaction then rolls everything back).
    """
    sql, contribution_fields, ledger_fields, shared_fields, pool_fields = _contribute_sql(
        connection.alias, len(entries)
    )
    params = [f.get_db_prep_save(values[f.name], connection) for f in contribution_fields]
    changes = {"last_modified_at": now, "updated_at": now}
    pk_field = JackpotPool._meta.pk
    for pool, amount in writes:
        changes["amount"] = amount
        params += [f.get_db_prep_save(changes[f.name], connection) for f in pool_fields]
        params.append(pk_field.get_db_prep_value(pool.pk, connection))
        params.append(pool.version)
    if entries:  # the shared values come first in the statement's text
        params += [f.get_db_prep_save(entries[0][f.name], connection) for f in shared_fields]
        params += [
            f.get_db_prep_save(row[f.name], connection) for row in entries for f in ledger_fields
        ]
    with transaction.mark_for_rollback_on_error(connection.alias), connection.cursor() as cursor:
        cursor.execute(sql, params)
        pk, updated = cursor.fetchone()
    if updated < len(writes):
        toolkit_metrics.CONFLICTS.labels(JackpotPool._meta.label_lower).inc()
        raise ConcurrencyConflict()
    return pk


# --- wins -----------------------------------------------------------------------------------


@operation("jackpot.win")
def process_win(*, group: str, player, operation_id: str) -> WinResult:
    """Pay everything pool `group` holds to `player` and reset the pool to its seed; once.

    Under the pool's row lock: the payout is the amount held (never more, never negative), a
    `win` ledger row takes it out (balance 0) and a `reset` row puts `seed_amount` back in
    (funded by the house, so the ledger still sums to the amount). The player is credited
    through the gold ledger (`game.gold.credit`, kind `jackpot_win`, reference = the operation
    id). The gold, its entry, the pool, its ledger rows and the `Win` row commit together. A
    replayed operation id returns the first payout; one reused for another pool or player is
    refused (409).
    """
    _validate_operation_id(operation_id)
    player_id = _player_id(player)
    started = time.perf_counter()
    try:
        with busy_on_lock_timeout(), transaction.atomic():
            result = _win_once(group, player_id, operation_id, started)
    except IntegrityError:
        # The read's replay probe sees the snapshot taken before it waited for the pool lock,
        # so a concurrent request with this operation id that committed during the wait is
        # only caught by the unique index on `Win.operation_id`. This attempt has rolled back
        # entirely; the stored win is the answer.
        existing = Win.objects.select_related("pool").filter(operation_id=operation_id).first()
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


def _win_once(group: str, player_id, operation_id: str, started: float) -> WinResult:
    # One round trip takes the lock (bounded, see `_bounded_lock`) and answers whether this
    # operation was paid already and whether the player exists.
    alias = router.db_for_write(JackpotPool)
    queryset = _bounded_lock(
        JackpotPool.objects.using(alias), alias, settings.JACKPOT_LOCK_TIMEOUT_MS
    ).annotate(
        paid=Exists(Win.objects.filter(operation_id=operation_id)),
        player_known=Exists(Player.objects.filter(pk=player_id)),
    )
    pool = get_pool(group, queryset)
    metrics.LOCK_WAIT.labels("win").observe(time.perf_counter() - started)
    if pool.paid:
        return _win_replay(
            Win.objects.select_related("pool").get(operation_id=operation_id), group, player_id
        )
    if not pool.player_known:
        raise PlayerNotFound()

    payout, seed, now = pool.amount, pool.seed_amount, timezone.now()
    # The Win first: if a duplicate committed while this request waited for the lock, the
    # unique index refuses it here, before anything else was written.
    win = Win.objects.create(
        operation_id=operation_id, pool=pool, player_id=player_id, amount=payout, created_at=now
    )
    version = update_versioned(
        JackpotPool,
        pool.pk,
        pool.version,
        amount=seed,
        lock_holder=operation_id,
        last_modified_at=now,
    )
    rows = [(LedgerKind.WIN, -payout, 0), (LedgerKind.RESET, seed, seed)]
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            pool=pool,
            kind=kind,
            amount=amount,
            balance_after=balance,
            pool_version=version,
            operation_id=operation_id,
            player_id=player_id,
            created_at=now,
        )
        for kind, amount, balance in rows
        if amount
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


def _bounded_lock(queryset, alias: str, lock_timeout_ms: int):
    """`queryset` locked FOR UPDATE (its own rows), the wait bounded by `lock_timeout_ms`.

    On PostgreSQL `SET LOCAL lock_timeout` is folded into the locking read (one round trip
    less): `set_config(…, true)` is the function form of SET LOCAL, and as a row filter it runs
    in the scan, below the node that takes the row locks, so the bound is in force before the
    first lock is waited for. Other backends have no row locks to wait for.
    """
    queryset = queryset.select_for_update(of=("self",))
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


# --- adjustments and configuration ----------------------------------------------------------


@operation("jackpot.adjust")
def adjust_pool(
    *,
    group: str,
    delta: int,
    operation_id: str,
    note: str = "",
    expected_version: int | None = None,
) -> JackpotPool:
    """Add a signed correction to a pool with an `adjustment` ledger row; once per operation id.

    The result must stay within 0..max_amount, checked against the amount held under the row
    lock. A replayed operation id changes nothing and returns the pool; one reused for another
    delta is refused (409 `operation_id_reused`).

    `expected_version` names the pool's *configuration* version (`config_version`), like
    `update_config`'s: a pool whose seed, rate or cap changed since the caller decided on the
    correction is refused (412). It does not name the balance `version`: a delta is relative,
    so it stays meaningful however many bets landed meanwhile (and under live betting a
    balance precondition would refuse nearly every correction).
    """
    delta = _strict_int(delta, field="delta")
    _validate_operation_id(operation_id)
    with busy_on_lock_timeout(), transaction.atomic():
        alias = router.db_for_write(JackpotPool)
        queryset = _bounded_lock(
            JackpotPool.objects.using(alias), alias, settings.JACKPOT_LOCK_TIMEOUT_MS
        )
        pool = get_pool(group, queryset)
        done = (
            LedgerEntry.objects.filter(
                operation_id=operation_id, pool=pool, kind=LedgerKind.ADJUSTMENT
            )
            .values_list("amount", flat=True)
            .first()
        )
        if done is not None:
            if done != delta:
                raise OperationReused()
            return pool
        if expected_version is not None and pool.config_version != expected_version:
            raise PreconditionFailed()
        if delta == 0:
            return pool
        balance = pool.amount + delta
        if balance < 0:
            raise InvalidInput("The pool cannot go below zero.", code="adjustment_below_zero")
        if pool.max_amount is not None and delta > 0 and balance > pool.max_amount:
            raise InvalidInput("The pool cannot go above its maximum.", code="adjustment_above_max")
        now = timezone.now()
        pool.version = update_versioned(
            JackpotPool,
            pool.pk,
            pool.version,
            amount=balance,
            lock_holder=operation_id,
            last_modified_at=now,
        )
        LedgerEntry.objects.create(
            pool=pool,
            kind=LedgerKind.ADJUSTMENT,
            amount=delta,
            balance_after=balance,
            pool_version=pool.version,
            operation_id=operation_id,
            note=note[:200],
            created_at=now,
        )
        pool.amount, pool.lock_holder, pool.last_modified_at = balance, operation_id, now
    metrics.OPERATIONS.labels("adjust", "applied").inc()
    audit("jackpot.adjustment", group=group, delta=delta, balance=pool.amount, note=note[:200])
    return pool


CONFIG_FIELDS = ("seed_amount", "contribution_rate_bp", "max_amount")


def validate_config(changes: dict, pool: JackpotPool, others: list[JackpotPool]) -> dict:
    """The validated changes, or InvalidInput naming the rule broken."""
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise InvalidInput(f"Only {', '.join(CONFIG_FIELDS)} can be changed.", code="unknown_field")
    for name, value in changes.items():
        if not (name == "max_amount" and value is None):
            _strict_int(value, field=name)
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

    `expected_version` names `config_version` (what the pool's ETag carries), not the balance
    `version`: bets, wins and adjustments do not make a configuration edit stale, another
    configuration edit does (412). A change bumps both versions: `version` because every
    writer of the row bumps it (a contribution in flight, whose split used the old rate or
    cap, must lose its version check and recompute), `config_version` because the
    configuration changed.

    All pools are locked (primary-key order) because the rates must add up to at most one
    whole bet across pools. A new seed applies from the next reset; a lower cap does not take
    money out of a pool already above it (it only stops contributions). Changing nothing
    returns the pool as it is, without a new version.
    """
    with busy_on_lock_timeout(), transaction.atomic():
        alias = router.db_for_write(JackpotPool)
        queryset = _bounded_lock(
            JackpotPool.objects.using(alias), alias, settings.JACKPOT_LOCK_TIMEOUT_MS
        )
        pools = list(queryset.order_by("pk"))
        pool = next((p for p in pools if p.group == group), None)
        if pool is None:
            raise UnknownGroup()
        if pool.config_version != expected_version:
            raise PreconditionFailed()
        effective = validate_config(changes, pool, [p for p in pools if p is not pool])
        if not effective:
            return pool
        now = timezone.now()
        # Under the row lock: the version check cannot lose, and config_version is the value
        # just read.
        pool.version = update_versioned(
            JackpotPool,
            pool.pk,
            pool.version,
            config_version=pool.config_version + 1,
            lock_holder=actor[:120],
            last_modified_at=now,
            **effective,
        )
        pool.config_version += 1
        for name, value in effective.items():
            setattr(pool, name, value)
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


def ensure_default_pools() -> list[JackpotPool]:
    """Create any missing pool of DEFAULT_POOLS with its `seed` ledger row (idempotent)."""
    with transaction.atomic():
        for group, seed, rate, cap in DEFAULT_POOLS:
            pool, created = JackpotPool.objects.get_or_create(
                group=group,
                defaults={
                    "amount": seed,
                    "seed_amount": seed,
                    "contribution_rate_bp": rate,
                    "max_amount": cap,
                },
            )
            if created:
                LedgerEntry.objects.create(
                    pool=pool,
                    kind=LedgerKind.SEED,
                    amount=seed,
                    balance_after=seed,
                    pool_version=pool.version,
                    operation_id=f"seed:{group}",
                )
    return sorted(JackpotPool.objects.all(), key=lambda p: GROUPS.index(p.group))
