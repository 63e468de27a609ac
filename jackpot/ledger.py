"""The arithmetic of a bet's split, of caps over stripes, and the audit of the ledger invariant.

Rounding rule: each pool gets `floor(bet * rate_bp / 10000)` — integer division, per pool, of
the exact integer product. The house keeps `bet - sum(parts)`, which is never negative because
the rates of all pools add up to at most 10,000 bp (`update_config` refuses more). No cent is
created (parts never exceed their exact share) and none is lost (the remainder is recorded on
the `Contribution` row as `house_amount`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import connection

from jackpot.models import BP_SCALE, GROUPS, JackpotPool, LedgerEntry, PoolStripe


@dataclass(frozen=True)
class Split:
    """A bet cut into per-pool parts (floor each) and the house's remainder."""

    parts: dict[str, int]
    remainder: int


def split_bet(bet: int, rates_bp: Mapping[str, int]) -> Split:
    """Split `bet` by basis-point rates: floor per pool; the remainder goes to the house."""
    if sum(rates_bp.values()) > BP_SCALE:
        raise ValueError("contribution rates add up to more than the whole bet")
    parts = {group: bet * rate // BP_SCALE for group, rate in rates_bp.items()}
    return Split(parts=parts, remainder=bet - sum(parts.values()))


def capped(amount: int, part: int, max_amount: int | None) -> int:
    """How much of `part` a pool holding `amount` accepts under its cap (the rest overflows).

    A pool already above its cap (the cap was lowered after it grew) accepts nothing and keeps
    what it holds; it shrinks back only through a win or an adjustment.
    """
    if max_amount is None:
        return part
    return max(0, min(part, max_amount - amount))


def spread_ceilings(amounts: list[int], total_ceiling: int | None) -> list[int | None]:
    """Each stripe's ceiling: its amount plus an even share of the room left under the cap.

    `total_ceiling` is what the stripes may hold together (`max(max_amount, amount)`, or the
    sum of their current ceilings when room is moved between them); None means no cap. The
    ceilings add up to `max(total_ceiling, sum(amounts))`, so stripes that stay under their
    own ceilings keep the pool under its cap, and a pool already above a lowered cap gets no
    room at all.
    """
    if total_ceiling is None:
        return [None] * len(amounts)
    share, extra = divmod(max(0, total_ceiling - sum(amounts)), len(amounts))
    return [amount + share + (i < extra) for i, amount in enumerate(amounts)]


def total_ceiling(amounts: list[int], max_amount: int | None) -> int | None:
    """What a pool's stripes may hold together under `max_amount` (never less than they hold)."""
    return None if max_amount is None else max(max_amount, sum(amounts))


@dataclass(frozen=True)
class PoolAudit:
    """The audit of one pool: its amount (the sum of its stripes) against its ledger, and the
    chain of every stripe."""

    group: str
    amount: int
    ledger_rows: int
    ledger_sum: int
    stripes_off: int  # stripes whose last ledger balance is not their amount
    chain_breaks: int

    @property
    def ok(self) -> bool:
        return (
            self.ledger_rows > 0
            and self.ledger_sum == self.amount
            and self.stripes_off == 0
            and self.chain_breaks == 0
        )


# One statement, so the stripes and their ledgers are read from one snapshot even while
# contributions commit (READ COMMITTED gives each statement its own snapshot).
_AUDIT_SQL = f"""
WITH chain AS (
    SELECT pool_id, slot, amount, balance_after,
           LAG(balance_after) OVER w AS previous,
           ROW_NUMBER() OVER (PARTITION BY pool_id, slot ORDER BY pool_version DESC, id DESC)
               AS from_end
    FROM {LedgerEntry._meta.db_table}
    WINDOW w AS (PARTITION BY pool_id, slot ORDER BY pool_version, id)
), per_stripe AS (
    SELECT pool_id, slot,
           COUNT(*) AS n,
           SUM(amount) AS total,
           SUM(CASE WHEN COALESCE(previous, 0) + amount <> balance_after THEN 1 ELSE 0 END)
               AS breaks,
           MAX(CASE WHEN from_end = 1 THEN balance_after END) AS last_balance
    FROM chain
    GROUP BY pool_id, slot
), joined AS (
    SELECT COALESCE(s.pool_id, l.pool_id) AS pool_id,
           COALESCE(s.amount, 0) AS amount,
           COALESCE(l.n, 0) AS n,
           COALESCE(l.total, 0) AS total,
           COALESCE(l.breaks, 0) AS breaks,
           CASE WHEN COALESCE(l.last_balance, 0) <> COALESCE(s.amount, -1) THEN 1 ELSE 0 END
               AS off
    FROM {PoolStripe._meta.db_table} s
    FULL JOIN per_stripe l ON l.pool_id = s.pool_id AND l.slot = s.slot
), totals AS (
    SELECT pool_id, SUM(amount) AS amount, SUM(n) AS n, SUM(total) AS total,
           SUM(off) AS off, SUM(breaks) AS breaks
    FROM joined
    GROUP BY pool_id
)
SELECT p."group", COALESCE(t.amount, 0), COALESCE(t.n, 0), COALESCE(t.total, 0),
       COALESCE(t.off, 0), COALESCE(t.breaks, 0)
FROM {JackpotPool._meta.db_table} p
LEFT JOIN totals t ON t.pool_id = p.id
WHERE p.deleted_at IS NULL
"""


def audit_pools() -> list[PoolAudit]:
    """Check every pool: the sum of its stripes == the sum of its ledger, and every stripe's
    chain is unbroken and ends at the stripe's amount."""
    with connection.cursor() as cursor:
        cursor.execute(_AUDIT_SQL)
        rows = [
            PoolAudit(g, int(a), int(n), int(s), int(off), int(b)) for g, a, n, s, off, b in cursor
        ]
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: order.get(r.group, len(order)))
