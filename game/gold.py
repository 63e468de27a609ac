"""Player gold and its append-only ledger.

Every change of `Player.gold` goes through `credit`, which writes a `GoldEntry` in the same
transaction, so `gold == sum(entries)` holds at every commit (`manage.py gold_audit` checks
it). Rewards, jackpot wins and game masters' adjustments are the causes; each names itself
with a `reference` that is unique per (kind, player), so a cause credits a player once.
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from game.models import GoldEntry, GoldKind, Player
from nightstorm.errors import InvalidInput, NotFound
from nightstorm.operations import operation


class GoldPlayerNotFound(NotFound):
    code = "player_not_found"
    detail = "There is no such player."


class GoldBelowZero(InvalidInput):
    code = "gold_below_zero"
    detail = "A player's gold cannot go below zero."


@operation("game.gold_credit")
def credit(
    *, player_id, amount: int, kind: str, reference: str, note: str = "", xp: int = 0
) -> GoldEntry:
    """Add `amount` (signed, minor units) to a player's gold and ledger it.

    Joins the caller's transaction (a reward's job, a jackpot win), or opens one. The
    conditional UPDATE both takes the player's row lock and refuses a balance below zero, so
    `balance_after` is read under that lock. `xp` rides along for rewards, which pay both.
    """
    if kind not in GoldKind.values:
        raise ValueError(f"unknown gold entry kind {kind!r}")
    now = timezone.now()
    with transaction.atomic():
        players = Player.all_objects.filter(pk=player_id)
        changes = {"gold": F("gold") + amount, "version": F("version") + 1, "updated_at": now}
        if xp:
            changes["xp"] = F("xp") + xp
        target = players.filter(gold__gte=-amount) if amount < 0 else players
        if not target.update(**changes):
            if not players.exists():
                raise GoldPlayerNotFound()
            raise GoldBelowZero()
        balance = players.values_list("gold", flat=True).get()
        return GoldEntry.objects.create(
            player_id=player_id,
            kind=kind,
            amount=amount,
            balance_after=balance,
            reference=reference[:120],
            note=note[:200],
            created_at=now,
        )


@operation("game.gold_adjust")
def adjust(*, player_id, delta: int, actor: str, reference: str, note: str = "") -> GoldEntry:
    """A game master's signed correction, once per `reference` (an admin form's token)."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise InvalidInput("delta must be a non-zero integer.", code="invalid_delta")
    with transaction.atomic():
        done = GoldEntry.objects.filter(
            kind=GoldKind.ADJUSTMENT, reference=reference, player_id=player_id
        ).first()
        if done is not None:
            return done
        return credit(
            player_id=player_id,
            amount=delta,
            kind=GoldKind.ADJUSTMENT,
            reference=reference,
            note=f"{actor}: {note}".strip(": ")[:200],
        )


@dataclass(frozen=True)
class AuditRow:
    player_id: object
    name: str
    gold: int
    ledger_sum: int

    @property
    def ok(self) -> bool:
        return self.gold == self.ledger_sum


def audit() -> list[AuditRow]:
    """Every player whose gold differs from the sum of their ledger (empty when all match).

    One statement, so it reads one snapshot even while rewards are being paid.
    """
    rows = (
        Player.all_objects.annotate(ledger_sum=Sum("gold_entries__amount", default=0))
        .exclude(gold=F("ledger_sum"))
        .values_list("pk", "name", "gold", "ledger_sum")
    )
    return [AuditRow(*row) for row in rows]
