"""The contribution's PostgreSQL statements, written by hand and run with `nightstorm.sql.run`.

A contribution is `BEGIN`, the claim, the write and `COMMIT`. The stripes it claims stay locked
from the claim to the commit, so that span is kept to two statements; but it is one stripe per
pool, not the pool, so other bets go on meanwhile on other stripes.

The claim (one of two shapes) also answers whether the operation id was applied already (an
EXISTS on the contribution's unique index) and, for each claimed stripe, how much room the
pool's other stripes have left under their ceilings (a snapshot, used only to decide whether a
capped part needs the exact path; not computed for a pool without a cap).

- `CLAIM_FREE`: for each pool, the first stripe nobody holds (`FOR UPDATE SKIP LOCKED` in a
  LATERAL subquery per pool; FOR UPDATE is not allowed under UNION). It never waits, so it is
  never part of a lock cycle. Stripes with room for the whole part come first, then the scan
  starts at a random slot so that concurrent bets do not all test the same stripes first.
  A pool whose stripes are all held yields no row: the attempt is retried with `CLAIM_LOCKED`.
- `CLAIM_LOCKED`: one stripe per pool (the given slot) plus every stripe of the pools named
  for the exact path, locked in primary-key order like every other writer, with the lock wait
  bounded (`set_config('lock_timeout', …, true)` as a row filter, the function form of
  SET LOCAL, evaluated in the scan before any lock is taken).

Both return the locked row versions (a row updated after the statement's snapshot is re-read
when it is locked), which is why everything a contribution needs from the configuration is on
the stripe row itself (`rate_bp`, `ceiling`).

`CONTRIBUTE` is the common case in one statement (and, outside a caller's transaction, one
transaction): the `CLAIM_FREE` claim, the split and the caps computed in SQL as
`jackpot.ledger.split_bet` and `contributions` compute them, and the write, made only when every
pool had a free stripe and no capped part needs the exact path. Otherwise it writes nothing
and its row says why (applied already, a pool without a free stripe, the groups to run
exactly), and the attempt goes on the two-statement way. A twin with the same operation id
that commits while this statement runs makes its insert do nothing (ON CONFLICT) rather than
fail: the stripes' update and the ledger rows join the inserted row, so nothing is written,
and the row's every reason to write with no id says so.

`write_sql(n)` is the write: one data-modifying CTE that inserts the contribution, updates the
`n` changed stripes (already locked: nothing to wait for, nothing to check) and inserts one
`contribution` ledger row per stripe that received money, its balance and version taken from
the updated row.
"""

import functools
from dataclasses import dataclass

from jackpot.models import BP_SCALE, GROUPS, Contribution, JackpotPool, LedgerEntry, PoolStripe

_STRIPE = PoolStripe._meta.db_table
_POOL = JackpotPool._meta.db_table
_CONTRIBUTION = Contribution._meta.db_table
_LEDGER = LedgerEntry._meta.db_table


@dataclass(frozen=True)
class StripeState:
    """A claimed (locked) stripe as the claim returned it."""

    id: int
    pool_id: object
    slot: int
    amount: int
    version: int
    rate_bp: int
    ceiling: int | None
    group: str
    room_elsewhere: int | None  # the pool's other stripes' room (snapshot); None: no cap


_APPLIED = f"SELECT EXISTS (SELECT 1 FROM {_CONTRIBUTION} WHERE operation_id = %s) AS applied"
_OUTER = f"""
SELECT a.applied, c.id, c.pool_id, c.slot, c.amount, c.version, c.rate_bp, c.ceiling, c."group",
       CASE WHEN c.ceiling IS NOT NULL THEN
           (SELECT SUM(o.ceiling - o.amount) FROM {_STRIPE} o
            WHERE o.pool_id = c.pool_id AND o.id <> c.id)
       END
FROM ({_APPLIED}) a LEFT JOIN ({{claimed}}) c ON true
"""
_COLUMNS = "s.id, s.pool_id, s.slot, s.amount, s.version, s.rate_bp, s.ceiling"
_GROUPS = ", ".join(f"('{group}')" for group in GROUPS)


def _free_stripes(bet: str, slot: str) -> str:
    """For each pool, the first stripe nobody holds, locked; `bet` and `slot` are the
    placeholders of the bet and of the slot the scan starts at."""
    return f"""
    SELECT g."group", {_COLUMNS} FROM (VALUES {_GROUPS}) AS g ("group")
    CROSS JOIN LATERAL (
        SELECT {_COLUMNS} FROM {_STRIPE} s
        WHERE s.pool_id = (SELECT p.id FROM {_POOL} p
                           WHERE p."group" = g."group" AND p.deleted_at IS NULL)
        ORDER BY s.ceiling IS NOT NULL
                 AND s.ceiling - s.amount < CAST({bet} AS bigint) * s.rate_bp / {BP_SCALE},
                 s.slot < {slot}, s.slot
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) s"""


# Parameters: operation id, bet, first slot.
CLAIM_FREE = _OUTER.format(claimed=_free_stripes("%s", "%s"))

# Parameters: operation id, slot, groups of the exact path (an array), lock timeout ('<n>ms').
CLAIM_LOCKED = _OUTER.format(
    claimed=f"""
    SELECT p."group", {_COLUMNS} FROM {_STRIPE} s JOIN {_POOL} p ON p.id = s.pool_id
    WHERE p.deleted_at IS NULL AND (s.slot = %s OR p."group" = ANY(%s))
          AND set_config('lock_timeout', %s, true) IS NOT NULL
    ORDER BY s.id
    FOR UPDATE OF s"""
)


def parse_claim(rows) -> tuple[list[StripeState], bool]:
    """The claimed stripes and whether the operation id was applied already."""
    applied = bool(rows and rows[0][0])
    return [StripeState(*row[1:]) for row in rows if row[1] is not None], applied


CONTRIBUTION_COLUMNS = (
    "operation_id",
    "player_id",
    "bet",
    "minor_amount",
    "major_amount",
    "mega_amount",
    "house_amount",
    "overflow_amount",
    "created_at",
)


# Parameters (named): op, player, bet, slot, now.
CONTRIBUTE = f"""
WITH applied AS ({_APPLIED.replace("%s", "CAST(%(op)s AS text)")}),
claimed AS ({_free_stripes("%(bet)s", "CAST(%(slot)s AS integer)")}
    WHERE NOT (SELECT applied FROM applied)
),
parts AS (
    SELECT c.*, CAST(%(bet)s AS bigint) * c.rate_bp / {BP_SCALE} AS part FROM claimed c
),
credits AS (
    SELECT p.*,
           CASE WHEN p.ceiling IS NULL THEN p.part ELSE least(p.part, p.ceiling - p.amount) END
               AS credit,
           CASE WHEN p.ceiling IS NOT NULL AND p.ceiling - p.amount < p.part THEN
               (SELECT SUM(o.ceiling - o.amount) FROM {_STRIPE} o
                 WHERE o.pool_id = p.pool_id AND o.id <> p.id)
           END AS room_elsewhere
      FROM parts p
),
decision AS (
    SELECT count(*) AS claimed,
           coalesce(sum(rate_bp), 0) <= {BP_SCALE} AS rates_ok,
           array_remove(array_agg(CASE WHEN credit < part AND room_elsewhere > 0
                                       THEN "group" END), NULL) AS exact
      FROM credits
),
c AS (
    INSERT INTO {_CONTRIBUTION} ({", ".join(CONTRIBUTION_COLUMNS)})
    SELECT CAST(%(op)s AS text), CAST(%(player)s AS uuid), CAST(%(bet)s AS bigint),
           sum(credit) FILTER (WHERE "group" = 'minor'),
           sum(credit) FILTER (WHERE "group" = 'major'),
           sum(credit) FILTER (WHERE "group" = 'mega'),
           CAST(%(bet)s AS bigint) - sum(credit), sum(part) - sum(credit),
           CAST(%(now)s AS timestamptz)
      FROM credits
    HAVING (SELECT claimed = {len(GROUPS)} AND rates_ok AND cardinality(exact) = 0
              FROM decision)
    ON CONFLICT (operation_id) DO NOTHING
    RETURNING id, operation_id, player_id, created_at, minor_amount, major_amount,
              mega_amount, house_amount, overflow_amount
),
s AS (
    UPDATE {_STRIPE} t SET amount = t.amount + k.credit, version = t.version + 1
      FROM credits k, c
     WHERE t.id = k.id AND k.credit <> 0
    RETURNING t.pool_id, t.slot, t.amount, t.version, k.credit
),
l AS (
    INSERT INTO {_LEDGER} (pool_id, slot, kind, amount, balance_after, pool_version,
                          operation_id, player_id, note, created_at)
    SELECT s.pool_id, s.slot, 'contribution', s.credit, s.amount, s.version,
           c.operation_id, c.player_id, '', c.created_at
      FROM s CROSS JOIN c
)
SELECT a.applied, d.claimed, d.rates_ok, d.exact, c.id, c.minor_amount, c.major_amount,
       c.mega_amount, c.house_amount, c.overflow_amount
  FROM applied a CROSS JOIN decision d LEFT JOIN c ON true
"""


@functools.lru_cache(maxsize=64)
def write_sql(changed_stripes: int) -> str:
    """The write of a contribution changing `changed_stripes` stripes.

    Parameters: the contribution's columns (`CONTRIBUTION_COLUMNS`), then per changed stripe
    its id, new amount, new version, new ceiling and the amount credited. Returns the
    contribution's id.
    """
    contribution = (
        f"c AS (INSERT INTO {_CONTRIBUTION} ({', '.join(CONTRIBUTION_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(CONTRIBUTION_COLUMNS))}) "
        "RETURNING id, operation_id, player_id, created_at)"
    )
    if not changed_stripes:
        return f"WITH {contribution} SELECT id FROM c"
    # Typed placeholders: a VALUES list gives PostgreSQL no column to infer them from.
    row = (
        "(CAST(%s AS bigint), CAST(%s AS bigint), CAST(%s AS integer), CAST(%s AS bigint), "
        "CAST(%s AS bigint))"
    )
    return f"""
WITH {contribution},
s AS (UPDATE {_STRIPE} t SET amount = v.amount, version = v.version, ceiling = v.ceiling
      FROM (VALUES {", ".join([row] * changed_stripes)}) AS v (id, amount, version, ceiling, credit)
      WHERE t.id = v.id
      RETURNING t.pool_id, t.slot, t.amount, t.version, v.credit),
l AS (INSERT INTO {_LEDGER} (pool_id, slot, kind, amount, balance_after, pool_version,
                            operation_id, player_id, note, created_at)
      SELECT s.pool_id, s.slot, 'contribution', s.credit, s.amount, s.version,
             c.operation_id, c.player_id, '', c.created_at
      FROM s CROSS JOIN c WHERE s.credit <> 0)
SELECT id FROM c"""
