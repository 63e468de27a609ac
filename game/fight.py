"""The fight rules: one turn of a combat against a storm boss, as a pure function.

Randomness comes from a generator seeded by (combat id, turn), so resolving the same turn from
the same state always gives the same result: a turn replayed after a crash, or recomputed in a
test, is identical. No database access here; `game.storms.orchestrator` loads and saves the
state.
"""

import random
from dataclasses import dataclass

VICTORY, DEFEAT, TIMEOUT = "victory", "defeat", "timeout"


@dataclass(frozen=True)
class Fighter:
    key: int  # the registration's id: a stable order for the RNG draws
    hp: int
    level: int
    damage_dealt: int = 0


@dataclass(frozen=True)
class TurnResult:
    turn: int
    boss_hp: int
    fighters: tuple[Fighter, ...]
    outcome: str  # "" while the fight goes on


def rng_for(combat_id, turn: int) -> random.Random:
    return random.Random(f"{combat_id}:{turn}")


def resolve_turn(
    *,
    combat_id,
    turn: int,
    boss_hp: int,
    boss_attack: int,
    fighters: list[Fighter],
    max_turns: int,
) -> TurnResult:
    """Resolve turn number `turn` (1-based): every living fighter strikes, then the boss strikes
    one living fighter. Returns the new state and the outcome if the fight is over.

    Runs for every combat on every tick: new Fighter values are built directly (not with
    `dataclasses.replace`, several times slower)."""
    rng = rng_for(combat_id, turn)
    ordered = sorted(fighters, key=lambda f: f.key)
    after: list[Fighter] = []
    for f in ordered:
        if f.hp > 0 and boss_hp > 0:
            hit = min(boss_hp, rng.randint(8, 16) + 2 * f.level)
            boss_hp -= hit
            f = Fighter(f.key, f.hp, f.level, f.damage_dealt + hit)
        after.append(f)
    if boss_hp > 0:
        living = [i for i, f in enumerate(after) if f.hp > 0]
        if living:
            target = living[rng.randrange(len(living))]
            strike = rng.randint(boss_attack, boss_attack * 2)
            struck = after[target]
            after[target] = Fighter(
                struck.key, max(0, struck.hp - strike), struck.level, struck.damage_dealt
            )
    outcome = ""
    if boss_hp <= 0:
        outcome = VICTORY
    elif all(f.hp == 0 for f in after):
        outcome = DEFEAT
    elif turn >= max_turns:
        outcome = TIMEOUT
    return TurnResult(turn=turn, boss_hp=boss_hp, fighters=tuple(after), outcome=outcome)


def split_rewards(
    *, outcome: str, boss_max_hp: int, damage: dict[int, int]
) -> dict[int, tuple[int, int]]:
    """(gold, xp) per fighter key. XP = damage dealt; gold = a pool of the boss's max hp, shared
    by damage dealt, on victory only. Integer arithmetic: the remainder goes to nobody."""
    total = sum(damage.values())
    pool = boss_max_hp if outcome == VICTORY else 0
    return {key: ((pool * dealt // total) if total else 0, dealt) for key, dealt in damage.items()}
