"""Real threads against real PostgreSQL: no cent lost or doubled under concurrency.

Each guarded race has a control beside it: the same race run against a naive variant written
here, in the test (a read-modify-write without the version condition, a win without the row
lock), which must break. The production services have no switch to turn their guards off.

The contribution race runs 32 workers x 200 bets (about 15 s here); on a slower machine
JACKPOT_RACE_OPS=60 runs 32 x 60.
"""

import contextlib
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.models import Sum
from django.utils import timezone

from game.models import Player
from jackpot import services
from jackpot.ledger import audit_pools, split_bet
from jackpot.models import GROUPS, Contribution, JackpotPool, LedgerEntry, PoolStripe, Win
from nightstorm.errors import Busy, PreconditionFailed
from tests.helpers import race
from tests.jackpot.books import assert_books_balance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 32
OPS_PER_WORKER = int(os.environ.get("JACKPOT_RACE_OPS", "200"))


def assert_audit_ok():
    results = audit_pools()
    assert all(r.ok for r in results), results
    call_command("jackpot_audit")  # raises CommandError on any mismatch


# --- the naive variants (controls only) -----------------------------------------------------


def naive_contribute(*, player, bet: int, operation_id: str) -> Contribution:
    """A contribution as a plain read-modify-write of a stripe: read it, write the new amount
    back without holding its lock. Two bets that read the same stripe: the last one wins."""
    with transaction.atomic():
        rows = list(PoolStripe.objects.filter(slot=random.randrange(2)).select_related("pool"))
        split = split_bet(bet, {s.pool.group: s.rate_bp for s in rows})
        time.sleep(0.001)  # the time a busy server spends between the read and the write
        for stripe in rows:
            PoolStripe.objects.filter(pk=stripe.pk).update(
                amount=stripe.amount + split.parts[stripe.pool.group], ceiling=None
            )
        return Contribution.objects.create(
            operation_id=operation_id,
            player_id=player,
            bet=bet,
            **{f"{g}_amount": part for g, part in split.parts.items()},
            house_amount=split.remainder,
        )


def naive_win(*, group: str, player, operation_id: str) -> Win:
    """A win that sums the stripes without locking them, then writes what it read back (with
    ledger rows that would be right had nobody else written meanwhile): concurrent winners
    all pay what they read, and bets that land between its read and its write are wiped."""
    with transaction.atomic():
        pool = JackpotPool.objects.get(group=group)
        held = list(PoolStripe.objects.filter(pool=pool).order_by("slot"))
        time.sleep(0.02)  # the time a busy server spends between the read and the write
        now, rows = timezone.now(), []
        for stripe in held:
            if not stripe.amount and stripe.slot:
                continue
            version = stripe.version + 1
            after = pool.seed_amount if stripe.slot == 0 else 0
            PoolStripe.objects.filter(pk=stripe.pk).update(
                amount=after, version=version, ceiling=None
            )
            if stripe.amount:
                rows.append(("win", -stripe.amount, 0, stripe.slot, version))
            if stripe.slot == 0 and after:
                rows.append(("reset", after, after, 0, version))
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                pool=pool,
                slot=slot,
                kind=kind,
                amount=amount,
                balance_after=balance,
                pool_version=version,
                operation_id=operation_id,
                player_id=player,
                created_at=now,
            )
            for kind, amount, balance, slot, version in rows
        )
        return Win.objects.create(
            operation_id=operation_id,
            pool=pool,
            player_id=player,
            amount=sum(s.amount for s in held),
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
    # Every payout has its ledger rows, each emptying a stripe of exactly what it held.
    for win in Win.objects.all():
        rows = LedgerEntry.objects.filter(operation_id=win.operation_id, kind="win")
        assert sum(r.amount for r in rows) == -win.amount
        assert all(r.balance_after == 0 for r in rows)
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


# --- stripes: bets racing wins, the audit at every moment, once per key across processes ----


class Auditor:
    """Runs the audit in a loop on its own connection while the race runs; every audit must
    pass (one statement, one snapshot) and no capped pool may be above its cap."""

    def __init__(self):
        self.done, self.results = threading.Event(), []
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            while not self.done.is_set():
                audits = audit_pools()
                caps = dict(JackpotPool.objects.values_list("group", "max_amount"))
                self.results.append(
                    all(a.ok for a in audits)
                    and all(caps[a.group] is None or a.amount <= caps[a.group] for a in audits)
                )
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


def _bets_racing_wins(pools, players, win):
    """12 bettors (services.contribute, capped pools, so the exact path runs too) racing a
    winner calling `win` on every pool in turn, with the audit running throughout."""
    player_ids = [p.pk for p in players]

    def bettor(w):
        rng = random.Random(w)
        for i in range(50):
            with contextlib.suppress(Busy):
                services.contribute(
                    player=rng.choice(player_ids),
                    bet=rng.randint(1, 300_000),
                    operation_id=f"rw-{w}-{i}",
                )

    def winner(_):
        for i in range(12):
            time.sleep(0.01)
            win(group=GROUPS[i % 3], player=player_ids[i % 8], operation_id=f"rw-win-{i}")

    with Auditor() as auditor:
        outcomes = race(
            lambda role, arg: role(arg), [(bettor, w) for w in range(12)] + [(winner, 0)]
        )
    return outcomes, auditor.results


def test_bets_racing_wins_keep_the_audit_clean_at_every_moment(pools, players):
    initial = {g: p.amount for g, p in pools.items()}
    outcomes, audits = _bets_racing_wins(pools, players, services.process_win)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert len(audits) > 5 and all(audits), audits.count(False)
    assert_books_balance()
    # Every bet is in its pool unless a win paid it out: amount = start + parts - payouts +
    # one seed per reset.
    for group, pool in pools.items():
        parts = Contribution.objects.aggregate(s=Sum(f"{group}_amount", default=0))["s"]
        wins = Win.objects.filter(pool__group=group)
        paid = wins.aggregate(s=Sum("amount", default=0))["s"]
        expected = initial[group] + parts - paid + wins.count() * pool.seed_amount
        assert JackpotPool.objects.get(group=group).amount == expected, group
    assert Win.objects.count() == 12


def test_control_naive_wins_racing_bets_break_the_audit(pools, players):
    """CONTROL: the same race with a win that does not lock the stripes: bets committed
    between its read and its write vanish, and the audit catches it."""
    outcomes, audits = _bets_racing_wins(pools, players, naive_win)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert not all(a.ok for a in audit_pools()) or not all(audits)


def _contribute_in_process(plan, naive, queue, barrier=None):
    """A forked process: contribute every (operation id, player, bet) of `plan`. The naive run
    meets the other processes at `barrier` between its check and its act, so the interleaving
    the race needs happens on every key however the machine schedules the processes."""
    try:
        done = []
        for op, player_id, bet in plan:
            if naive:
                applied = naive_once(
                    player=player_id, bet=bet, operation_id=op, between=barrier.wait
                )
                done.append((op, applied))
            else:
                result = services.contribute(player=player_id, bet=bet, operation_id=op)
                done.append((op, not result.replayed))
        queue.put(done)
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(repr(exc))
    finally:
        connections.close_all()


def naive_once(*, player, bet: int, operation_id: str, between=lambda: None) -> bool:
    """Once-only as a check then an act, with nothing unique behind it: look for the operation,
    and if it is not there, apply the bet (under a fresh internal id). Two processes that both
    look before either commits both apply."""
    seen = Contribution.objects.filter(operation_id__startswith=f"{operation_id}#").exists()
    between()  # every process has looked before any acts
    if seen:
        return False
    services.contribute(player=player, bet=bet, operation_id=f"{operation_id}#{uuid.uuid4().hex}")
    return True


def _race_keys_across_processes(players, naive: bool) -> list:
    """4 forked processes submit the same 60 operations: each in its own order, or, naive, all
    in one order meeting between check and act."""
    rng = random.Random(11)
    player_ids = [p.pk for p in players]
    ops = [(f"key-{i}", rng.choice(player_ids), rng.randint(1, 400_000)) for i in range(60)]
    connections.close_all()  # never share a connection with the forked children
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(4, timeout=60) if naive else None
    procs = []
    for n in range(4):
        plan = list(ops)
        if not naive:
            random.Random(n).shuffle(plan)
        procs.append(ctx.Process(target=_contribute_in_process, args=(plan, naive, queue, barrier)))
    for proc in procs:
        proc.start()
    reports = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert all(isinstance(r, list) for r in reports), reports
    return ops, [entry for report in reports for entry in report]


def test_each_key_applies_once_across_processes(pools, players):
    initial = {g: p.amount for g, p in pools.items()}
    ops, done = _race_keys_across_processes(players, naive=False)
    applied = Counter(op for op, fresh in done if fresh)
    assert len(done) == 4 * len(ops)
    assert applied == Counter({op: 1 for op, _, _ in ops})  # once each, whoever won
    assert Contribution.objects.count() == len(ops)
    for group in initial:
        parts = Contribution.objects.aggregate(s=Sum(f"{group}_amount"))["s"]
        assert JackpotPool.objects.get(group=group).amount == initial[group] + parts
    assert_books_balance()


def test_control_check_then_act_applies_a_key_more_than_once_across_processes(pools, players):
    """CONTROL: the same processes with once-only as a check before the act: keys apply twice."""
    ops, done = _race_keys_across_processes(players, naive=True)
    applied = Counter(op for op, fresh in done if fresh)
    assert Contribution.objects.count() == 4 * len(ops), applied
    assert set(applied.values()) == {4}
