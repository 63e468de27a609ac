"""Real threads against real PostgreSQL: no cent lost or doubled under concurrency.

Each guarded race has a control beside it: the same race run against a naive variant written
here, in the test (a read-modify-write without the version condition, a win without the row
lock), which must break. The production services have no switch to turn their guards off.

The contribution race runs 32 workers x 200 bets (about 15 s here); on a slower machine
JACKPOT_RACE_OPS=60 runs 32 x 60.
"""

import contextlib
import os
import random
import time
from collections import defaultdict

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from game.models import Player
from jackpot import services
from jackpot.ledger import audit_pools, split_bet
from jackpot.models import Contribution, JackpotPool, LedgerEntry, Win
from nightstorm.errors import Busy, PreconditionFailed
from tests.helpers import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 32
OPS_PER_WORKER = int(os.environ.get("JACKPOT_RACE_OPS", "200"))


def assert_audit_ok():
    results = audit_pools()
    assert all(r.ok for r in results), results
    call_command("jackpot_audit")  # raises CommandError on any mismatch


# --- the naive variants (controls only) -----------------------------------------------------


def naive_contribute(*, player, bet: int, operation_id: str) -> Contribution:
    """A contribution as a plain read-modify-write: read the pools, write the new amounts back
    without `WHERE version = <read>`. The last writer wins, so concurrent bets are lost."""
    with transaction.atomic():
        pools = list(JackpotPool.objects.order_by("pk"))
        split = split_bet(bet, {p.group: p.contribution_rate_bp for p in pools})
        time.sleep(0.001)  # the time a busy server spends between the read and the write
        for pool in pools:
            JackpotPool.objects.filter(pk=pool.pk).update(
                amount=pool.amount + split.parts[pool.group], version=F("version") + 1
            )
        return Contribution.objects.create(
            operation_id=operation_id,
            player_id=player,
            bet=bet,
            **{f"{g}_amount": part for g, part in split.parts.items()},
            house_amount=split.remainder,
        )


def naive_win(*, group: str, player, operation_id: str) -> Win:
    """A win without the row lock: every concurrent winner pays what it read."""
    with transaction.atomic():
        pool = JackpotPool.objects.get(group=group)
        time.sleep(0.02)  # the time a busy server spends between the read and the write
        JackpotPool.objects.filter(pk=pool.pk).update(
            amount=pool.seed_amount, version=F("version") + 1, last_modified_at=timezone.now()
        )
        return Win.objects.create(
            operation_id=operation_id, pool=pool, player_id=player, amount=pool.amount
        )


def test_contributions_race_counts_every_accepted_bet_once(uncapped_pools, players):
    """32 workers x N bets, a fifth of them replays of an operation id (own or another's)."""
    rng = random.Random(20261123)
    rates = {g: p.contribution_rate_bp for g, p in uncapped_pools.items()}
    initial = {g: p.amount for g, p in uncapped_pools.items()}
    player_ids = [p.pk for p in players]
    fresh = [
        [
            (f"bet-{w}-{i}", rng.choice(player_ids), rng.randint(1, 500_000))
            for i in range(OPS_PER_WORKER * 4 // 5)
        ]
        for w in range(WORKERS)
    ]
    plans = []
    for w in range(WORKERS):
        replays = [
            rng.choice(fresh[w if i % 2 else (w + 1 + i) % WORKERS])
            for i in range(OPS_PER_WORKER - len(fresh[w]))
        ]
        plan = fresh[w] + replays
        rng.shuffle(plan)
        plans.append((plan,))

    def worker(plan):
        done = []
        for op, player_id, bet in plan:
            try:
                r = services.contribute(player=player_id, bet=bet, operation_id=op)
                done.append((op, bet, r.contribution.amounts, r.replayed, r.attempts))
            except Busy:
                done.append((op, bet, None, None, None))
        return done

    outcomes = race(worker, plans)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes

    calls = [call for outcome in outcomes for call in outcome]
    accepted, applied_calls = {}, defaultdict(int)
    for op, bet, amounts, replayed, _ in calls:
        if amounts is None:
            continue
        assert amounts == split_bet(bet, rates).parts  # what this call was told it added
        assert accepted.setdefault(op, (bet, amounts)) == (bet, amounts)  # replays agree
        applied_calls[op] += not replayed
    contended = sum(1 for c in calls if c[2] is None)
    assert len(calls) == WORKERS * OPS_PER_WORKER
    assert contended <= len(calls) // 20, f"{contended} calls gave up after all retries"
    # No operation applied twice, in the calls' answers and in the database.
    assert all(applied_calls[op] == 1 for op in accepted)
    assert Contribution.objects.count() == len(accepted)
    assert set(Contribution.objects.values_list("operation_id", flat=True)) == set(accepted)
    # Every pool is exactly its seed plus the floor parts of the accepted bets.
    expected = {
        g: initial[g] + sum(amounts[g] for _, amounts in accepted.values()) for g in initial
    }
    assert dict(JackpotPool.objects.values_list("group", "amount")) == expected
    for group in initial:
        ledgered = LedgerEntry.objects.filter(pool__group=group, kind="contribution").aggregate(
            s=Sum("amount")
        )["s"]
        assert initial[group] + ledgered == expected[group]
    assert_audit_ok()
    replays = len(calls) - sum(applied_calls.values()) - contended
    print(
        f"\n{len(calls)} calls: {len(accepted)} applied, {replays} replays, "
        f"{contended} contended, {sum(c[4] or 0 for c in calls) - len(calls) + contended} retries"
    )


def test_concurrent_wins_never_pay_more_than_the_pool_held(pools, players):
    """8 wins at once on one pool: the first pays what it held, the others pay the reset seed."""
    services.adjust_pool(group="minor", delta=123_456, operation_id="fund")
    pool = JackpotPool.objects.get(group="minor")
    held, seed = pool.amount, pool.seed_amount
    winners = players[:4]
    gold_before = dict(Player.objects.values_list("pk", "gold"))

    outcomes = race(
        lambda i: services.process_win(
            group="minor", player=winners[i % 4].pk, operation_id=f"win-{i}"
        ),
        [(i,) for i in range(8)],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    payouts = sorted(o.win.amount for o in outcomes)
    # The pool held `held` once and `seed` after each of the 7 earlier resets: never more.
    assert sum(payouts) == held + 7 * seed
    assert payouts == [seed] * 7 + [held]
    # Every payout has its ledger row, paid out of exactly the balance before it.
    for win in Win.objects.all():
        row = LedgerEntry.objects.get(operation_id=win.operation_id, kind="win")
        assert row.amount == -win.amount and row.balance_after == 0
    gold_after = dict(Player.objects.values_list("pk", "gold"))
    paid = defaultdict(int)
    for win in Win.objects.all():
        paid[win.player_id] += win.amount
    assert all(gold_after[p.pk] - gold_before[p.pk] == paid[p.pk] for p in players)
    assert JackpotPool.objects.get(group="minor").amount == seed
    assert_audit_ok()


def test_contributions_racing_config_changes_and_wins_keep_the_ledger_exact(pools, players):
    player_ids = [p.pk for p in players]

    def bettor(w):
        rng = random.Random(w)
        for i in range(40):
            with contextlib.suppress(Busy):  # gave up after all retries: applied nothing
                services.contribute(
                    player=rng.choice(player_ids),
                    bet=rng.randint(1, 200_000),
                    operation_id=f"mix-{w}-{i}",
                )
        return "bettor"

    def configurer(_):
        rng = random.Random(99)
        changed = 0
        while changed < 15:
            group = rng.choice(["minor", "major", "mega"])
            pool = JackpotPool.objects.get(group=group)
            try:
                services.update_config(
                    group=group,
                    changes={"contribution_rate_bp": rng.randint(0, 3000)},
                    expected_version=pool.config_version,
                )
                changed += 1
            except PreconditionFailed:  # the only configurer: bets and wins never make it stale
                raise AssertionError("a configuration edit was refused under betting") from None
        return "configurer"

    def winner(_):
        for i in range(10):
            services.process_win(
                group=["minor", "major", "mega"][i % 3],
                player=player_ids[i % 8],
                operation_id=f"mix-win-{i}",
            )
        return "winner"

    outcomes = race(
        lambda role, arg: role(arg),
        [(bettor, w) for w in range(10)] + [(configurer, 0), (winner, 0)],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert_audit_ok()
    # Each pool's contribution rows add up to what the contributions say they gave it.
    for group in ("minor", "major", "mega"):
        from_ledger = (
            LedgerEntry.objects.filter(pool__group=group, kind="contribution").aggregate(
                s=Sum("amount")
            )["s"]
            or 0
        )
        from_contributions = Contribution.objects.aggregate(s=Sum(f"{group}_amount"))["s"] or 0
        assert from_ledger == from_contributions
    paid = Win.objects.aggregate(s=Sum("amount"))["s"]
    assert paid == sum(Player.objects.values_list("gold", flat=True))


def test_control_naive_contributions_lose_bets(uncapped_pools, players):
    """CONTROL: without the version check, concurrent bets overwrite each other's amounts."""
    initial = {g: p.amount for g, p in uncapped_pools.items()}
    player_ids = [p.pk for p in players]

    def worker(w):
        for i in range(25):
            naive_contribute(player=player_ids[w % 8], bet=100_000, operation_id=f"nv-{w}-{i}")

    outcomes = race(worker, [(w,) for w in range(16)])
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    accepted = Contribution.objects.count()
    assert accepted == 16 * 25
    expected = {
        g: initial[g] + (Contribution.objects.aggregate(s=Sum(f"{g}_amount"))["s"] or 0)
        for g in initial
    }
    actual = dict(JackpotPool.objects.values_list("group", "amount"))
    assert any(actual[g] < expected[g] for g in initial), (actual, expected)


def test_control_naive_wins_pay_more_than_the_pool_held(pools, players):
    """CONTROL: without the row lock, concurrent winners all pay what they read."""
    services.adjust_pool(group="minor", delta=123_456, operation_id="fund-naive")
    pool = JackpotPool.objects.get(group="minor")
    held, seed = pool.amount, pool.seed_amount

    outcomes = race(
        lambda i: naive_win(group="minor", player=players[i % 4].pk, operation_id=f"nw-{i}"),
        [(i,) for i in range(8)],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    paid = sum(o.amount for o in outcomes)
    assert paid > held + 7 * seed  # more than the pool ever held
