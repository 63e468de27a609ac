"""The arithmetic of a bet's split and the audit of the ledger invariant.

Rounding rule: each pool gets `floor(bet * rate_bp / 10000)` — integer division, per pool, of
the exact integer product. The house keeps `bet - sum(parts)`, which is never negative because
the rates of all pools add up to at most 10,000 bp (`update_config` refuses more). No cent is
created (parts never exceed their exact share) and none is lost (the remainder is recorded on
the `Contribution` row as `house_amount`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import connection

from jackpot.models import BP_SCALE, GROUPS, JackpotPool, LedgerEntry


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


@dataclass(frozen=True)
class PoolAudit:
    """The audit of one pool: its amount against the sum and the chain of its ledger."""

    group: str
    amount: int
    ledger_rows: int
    ledger_sum: int
    last_balance: int | None
    chain_breaks: int

    @property
    def ok(self) -> bool:
        return (
            self.ledger_rows > 0
            and self.ledger_sum == self.amount
            and self.last_balance == self.amount
            and self.chain_breaks == 0
        )


# One statement, so the pools and their ledgers are read from one snapshot even while
# contributions commit (READ COMMITTED gives each statement its own snapshot).
_AUDIT_SQL = f"""
WITH chain AS (
    SELECT pool_id, amount, balance_after,
           LAG(balance_after) OVER w AS previous,
           ROW_NUMBER() OVER (PARTITION BY pool_id ORDER BY pool_version DESC, id DESC) AS from_end
    FROM {LedgerEntry._meta.db_table}
    WINDOW w AS (PARTITION BY pool_id ORDER BY pool_version, id)
), totals AS (
    SELECT pool_id,
           COUNT(*) AS n,
           SUM(amount) AS total,
           SUM(CASE WHEN COALESCE(previous, 0) + amount <> balance_after THEN 1 ELSE 0 END)
               AS breaks,
           MAX(CASE WHEN from_end = 1 THEN balance_after END) AS last_balance
    FROM chain
    GROUP BY pool_id
)
SELECT p."group", p.amount, COALESCE(t.n, 0), COALESCE(t.total, 0), t.last_balance,
       COALESCE(t.breaks, 0)
FROM {JackpotPool._meta.db_table} p
LEFT JOIN totals t ON t.pool_id = p.id
WHERE p.deleted_at IS NULL
"""


def audit_pools() -> list[PoolAudit]:
    """Check every pool: amount == sum(ledger) == last balance, and an unbroken balance chain."""
    with connection.cursor() as cursor:
        cursor.execute(_AUDIT_SQL)
        rows = [PoolAudit(g, int(a), int(n), int(s), lb, int(b)) for g, a, n, s, lb, b in cursor]
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: order.get(r.group, len(order)))
