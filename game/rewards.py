"""Rewards, paid exactly once per (combat, player).

1. `write_rewards` runs inside the transaction that finishes a combat: it writes one `Reward`
   row per participant and one retry-queue job per reward (`nightstorm.outbox`, dedupe key
   `game.reward:<combat>:<player>`). The finish and the promise to pay commit together, or not
   at all: a payout is never lost.
2. `pay_reward` is that job's handler. It runs inside the job's transaction (the outbox marks
   the job done in the same commit), locks the reward row, credits the player and stamps
   `paid_at`. A second delivery finds the job done (or, if the job were ever re-run, the reward
   already paid); a crash between crediting and stamping rolls both back. So a payout is never
   doubled either.
"""

from django.db import transaction
from django.utils import timezone

from game import fight, gold, metrics
from game.models import Combat, GoldKind, Registration, Reward
from nightstorm import outbox
from nightstorm.operations import operation

PAY_REWARD = "game.pay_reward"


def write_rewards(*, combat: Combat, registrations: list[Registration], outcome: str) -> list:
    """Create the rewards of a finishing combat and queue their payment.

    Joins the caller's transaction (the one that finishes the combat, with the combat row
    locked), so it runs once per combat.
    """
    damage = {r.player_id: r.damage_dealt for r in registrations}
    shares = fight.split_rewards(outcome=outcome, boss_max_hp=combat.boss_max_hp, damage=damage)
    rewards = [
        Reward(combat=combat, player_id=pid, gold=gold, xp=xp, damage_dealt=damage[pid])
        for pid, (gold, xp) in shares.items()
    ]
    Reward.objects.bulk_create(rewards)
    keys = {reward.pk: f"game.reward:{combat.pk}:{reward.player_id}" for reward in rewards}
    jobs = outbox.enqueue_many(PAY_REWARD, [({"reward": pk}, key) for pk, key in keys.items()])
    for reward in rewards:
        reward.job = jobs[keys[reward.pk]]
    Reward.objects.bulk_update(rewards, ["job"])
    return rewards


def _credit(reward: Reward) -> None:
    gold.credit(
        player_id=reward.player_id,
        amount=reward.gold,
        xp=reward.xp,
        kind=GoldKind.REWARD,
        reference=f"reward:{reward.pk}",
    )


def _mark_paid(reward: Reward) -> None:
    reward.paid_at = timezone.now()
    reward.save(update_fields=["paid_at"])


@operation("game.pay_reward")
@outbox.handler(PAY_REWARD)
def pay_reward(payload: dict) -> bool:
    """Credit one reward if it is not paid yet; return whether this call paid it.

    Runs inside the outbox job's transaction (or opens its own when called directly).
    """
    with transaction.atomic():
        reward = Reward.objects.select_for_update().filter(pk=payload["reward"]).first()
        if reward is None:
            raise LookupError(f"reward {payload['reward']} does not exist")
        if reward.paid_at is not None:
            return False  # paid by an earlier run: paying again would double it
        _credit(reward)
        _mark_paid(reward)
        metrics.REWARDS_PAID.inc()
        return True
