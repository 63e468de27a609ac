"""Reading the turn log (`CombatTurn`) back: is every combat's turn one tick after the last,
none lost, none doubled?"""

from dataclasses import dataclass, field
from statistics import median

from game.models import Combat, CombatTurn


@dataclass
class TurnLogCheck:
    period: float
    combats: int = 0
    turns: int = 0
    missing: list = field(default_factory=list)  # turn numbers not contiguous from 1
    doubled: list = field(default_factory=list)  # two turns of a combat in one tick period
    gaps: list = field(default_factory=list)  # consecutive turns more than max_gap apart
    mismatched: list = field(default_factory=list)  # Combat.turn differs from its log
    skipped_ticks: int = 0  # consecutive turns two periods apart (allowed, counted)
    spacing: list = field(default_factory=list)  # seconds between consecutive turns
    lateness: list = field(default_factory=list)  # ran_at - due_at of every turn after the 1st

    @property
    def problems(self) -> list:
        return self.missing + self.doubled + self.gaps + self.mismatched

    def stats(self) -> str:
        def pct(values, q):
            values = sorted(values)
            return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

        return (
            f"{self.combats} combats, {self.turns} turns; spacing median "
            f"{median(self.spacing) if self.spacing else 0:.3f} s, max "
            f"{max(self.spacing, default=0):.3f} s; lateness p50 {pct(self.lateness, 0.5):.3f} s,"
            f" p99 {pct(self.lateness, 0.99):.3f} s, max {max(self.lateness, default=0):.3f} s;"
            f" {self.skipped_ticks} skipped tick(s)"
        )


def check_turn_log(combat_ids, period: float, *, max_gap_ticks: float = 2) -> TurnLogCheck:
    """Every combat's turns: numbered 1..n, at most one per tick period (by ran_at), consecutive
    ones at most `max_gap_ticks` periods apart, and as many as the combat's `turn`."""
    result = TurnLogCheck(period=period)
    rows = (
        CombatTurn.objects.filter(combat_id__in=list(combat_ids))
        .order_by("combat_id", "turn")
        .values_list("combat_id", "turn", "due_at", "ran_at")
    )
    by_combat: dict = {}
    for combat_id, turn, due_at, ran_at in rows:
        by_combat.setdefault(combat_id, []).append((turn, due_at, ran_at))
    current = dict(Combat.objects.filter(pk__in=list(combat_ids)).values_list("pk", "turn"))
    result.combats = len(current)
    for combat_id, logged_turn in current.items():
        turns = by_combat.get(combat_id, [])
        result.turns += len(turns)
        numbers = [t for t, _, _ in turns]
        if numbers != list(range(1, len(numbers) + 1)):
            result.missing.append((combat_id, numbers))
        if logged_turn != len(numbers):
            result.mismatched.append((combat_id, logged_turn, len(numbers)))
        periods = [int(ran.timestamp() // period) for _, _, ran in turns]
        for (turn, _, ran), (next_turn, next_due, next_ran), p, next_p in zip(
            turns, turns[1:], periods, periods[1:], strict=False
        ):
            spacing = (next_ran - ran).total_seconds()
            result.spacing.append(spacing)
            result.lateness.append(max(0.0, (next_ran - next_due).total_seconds()))
            if next_p == p:
                result.doubled.append((combat_id, turn, next_turn, ran, next_ran))
            elif next_p - p >= 2:
                result.skipped_ticks += 1
            if spacing > max_gap_ticks * period:
                result.gaps.append((combat_id, turn, next_turn, round(spacing, 3)))
    return result
