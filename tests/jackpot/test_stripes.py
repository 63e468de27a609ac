"""A contribution changes one stripe per pool; caps hold over stripes; locks are bounded."""

import random
import re
import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from jackpot import services
from jackpot.ledger import audit_pools, split_bet
from jackpot.models import STRIPES_PER_POOL, Contribution, JackpotPool, LedgerEntry, PoolStripe


def stripes(group):
    return {s.slot: s for s in PoolStripe.objects.filter(pool__group=group)}


def all_ok():
    return all(a.ok for a in audit_pools())


def test_a_pool_is_the_sum_of_its_stripes(pools):
    for group, pool in pools.items():
        held = stripes(group)
        assert len(held) == STRIPES_PER_POOL
        assert pool.amount == sum(s.amount for s in held.values()) == pool.seed_amount
        assert held[0].amount == pool.seed_amount  # the seed lives in stripe 0
    assert all_ok()


def test_a_contribution_extends_one_stripe_chain_per_pool_and_no_pool_row(pools, player):
    before = {p.group: (p.version, p.amount) for p in JackpotPool.objects.all()}
    c = services.contribute(player=player, bet=123_456, operation_id="op-rows").contribution
    rows = {r.pool.group: r for r in LedgerEntry.objects.filter(operation_id="op-rows")}
    assert set(rows) == {"minor", "major", "mega"}
    for group, row in rows.items():
        stripe = PoolStripe.objects.get(pool__group=group, slot=row.slot)
        assert (row.kind, row.player_id, row.amount) == (
            "contribution",
            player.pk,
            c.amounts[group],
        )
        assert (row.balance_after, row.pool_version) == (stripe.amount, stripe.version)
        assert row.created_at == c.created_at
    after = {p.group: (p.version, p.amount) for p in JackpotPool.objects.all()}
    assert after == {g: (v, a + c.amounts[g]) for g, (v, a) in before.items()}
    assert all_ok()


def test_a_bet_too_small_for_any_pool_changes_no_stripe(pools, player):
    before = list(PoolStripe.objects.values_list("amount", "version"))
    result = services.contribute(player=player, bet=1, operation_id="op-tiny")
    assert result.contribution.amounts == {"minor": 0, "major": 0, "mega": 0}
    assert result.contribution.house_amount == 1
    assert list(PoolStripe.objects.values_list("amount", "version")) == before
    assert not LedgerEntry.objects.filter(operation_id="op-tiny").exists()
    assert all_ok()


def test_a_capped_pool_fills_exactly_to_its_cap_across_stripes(pools, player):
    """The cap's room is spread over 32 stripes (about 31 each here); a part larger than its
    stripe's room takes the exact path and still gets everything the pool can take."""
    minor = pools["minor"]
    cap = minor.amount + 1_000
    services.update_config(
        group="minor", changes={"max_amount": cap}, expected_version=minor.config_version
    )
    given = 0
    for i in range(12):  # parts of 100 each: 1,000 fits, the rest overflows
        c = services.contribute(player=player, bet=10_000, operation_id=f"cap-{i}").contribution
        given += c.minor_amount
        assert c.minor_amount + c.overflow_amount == 100
    assert given == 1_000
    assert JackpotPool.objects.get(group="minor").amount == cap
    assert all(s.amount <= s.ceiling for s in stripes("minor").values())
    assert all_ok()


def _statements(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]


@pytest.mark.postgres
def test_a_ledger_row_must_name_an_existing_stripe(pools):
    """The ledger references its stripe (pool, slot), not the pool row: checking that does
    not lock the pool row at every contribution's commit."""
    minor = pools["minor"]
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            pool=minor,
            slot=STRIPES_PER_POOL,
            kind="adjustment",
            amount=0,
            balance_after=0,
            pool_version=1,
            operation_id="no-such-stripe",
        )
        connection.check_constraints()  # the foreign key is deferred to the commit


@pytest.mark.postgres
def test_an_attempt_is_one_statement_from_claim_to_write(pools, player):
    """The common case claims, splits and writes in one statement (its own transaction outside
    a caller's): the stripes are held only for it and its commit."""
    with CaptureQueriesContext(connection) as captured:
        result = services.contribute(player=player, bet=40_000, operation_id="op-rt")
    statements = _statements(captured.captured_queries)
    assert len(statements) == 1, statements
    (statement,) = statements
    assert "SKIP LOCKED" in statement and "UPDATE jackpot_stripe" in statement
    assert LedgerEntry.objects.filter(operation_id="op-rt").count() == 3
    assert result.attempts == 1 and not result.replayed and all_ok()
    contribution = result.contribution
    stored = Contribution.objects.get(operation_id="op-rt")
    assert contribution.pk == stored.pk and contribution.amounts == stored.amounts
    assert (contribution.house_amount, contribution.overflow_amount) == (
        stored.house_amount,
        stored.overflow_amount,
    )
    again = services.contribute(player=player, bet=40_000, operation_id="op-rt")
    assert again.replayed and again.contribution.pk == stored.pk and all_ok()


@pytest.mark.postgres
def test_the_one_statement_credits_what_the_python_rules_give(pools, player):
    """Bets of every size until the capped pools are full: the statement's split and caps
    against `split_bet` and the room of the stripe it credited, bet by bet."""
    rng = random.Random(7)
    rates = {g: p.contribution_rate_bp for g, p in pools.items()}
    for i in range(150):
        bet = rng.choice([1, 99, 100, 101, 9_999, 10_001]) if i < 12 else rng.randint(1, 10**9)
        before = {g: {n: (s.amount, s.ceiling) for n, s in stripes(g).items()} for g in rates}
        result = services.contribute(player=player, bet=bet, operation_id=f"op-prop-{i}")
        c, parts = result.contribution, split_bet(bet, rates).parts
        for group, credited in c.amounts.items():
            assert 0 <= credited <= parts[group]
            rows = LedgerEntry.objects.filter(operation_id=f"op-prop-{i}", pool__group=group)
            if result.attempts == 1 and credited:
                (row,) = rows
                amount, ceiling = before[group][row.slot]
                room = parts[group] if ceiling is None else ceiling - amount
                assert credited == min(parts[group], room)
            assert sum(r.amount for r in rows) == credited
        assert c.overflow_amount == sum(parts.values()) - sum(c.amounts.values())
        assert c.house_amount == bet - sum(c.amounts.values())
        stored = Contribution.objects.get(pk=c.pk)
        assert (stored.amounts, stored.house_amount, stored.overflow_amount) == (
            c.amounts,
            c.house_amount,
            c.overflow_amount,
        )
    assert any(Contribution.objects.filter(overflow_amount__gt=0).values_list("pk", flat=True))
    assert all_ok()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retried_attempt_is_one_claim_and_one_write(pools, player, settings):
    """A first attempt that found every minor stripe held wrote nothing; the next one waits
    for a stripe and holds it from the claim to the commit: two statements."""
    settings.JACKPOT_LOCK_TIMEOUT_MS = 5000
    holder = Holder(pool__group="minor")
    with holder:
        threading.Timer(0.3, holder.release.set).start()
        with CaptureQueriesContext(connection) as captured:
            result = services.contribute(player=player, bet=40_000, operation_id="op-rt2")
    assert result.attempts == 2
    statements = [q for q in _statements(captured.captured_queries) if q not in ("BEGIN", "COMMIT")]
    first, claim, write = statements
    assert "SKIP LOCKED" in first and "UPDATE jackpot_stripe" in first
    assert "FOR UPDATE" in claim and "SKIP LOCKED" not in claim
    assert write.lstrip().startswith("WITH") and "UPDATE jackpot_stripe" in write
    assert LedgerEntry.objects.filter(operation_id="op-rt2").count() == 3 and all_ok()


class Holder:
    """Another transaction holding stripes locked until released (a real connection)."""

    def __init__(self, **filters):
        self.filters, self.locked, self.release = filters, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.hold)

    def hold(self):
        try:
            with transaction.atomic():
                list(PoolStripe.objects.select_for_update().filter(**self.filters))
                self.locked.set()
                self.release.wait(timeout=20)
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(timeout=10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join()
        return False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_contribution_skips_held_stripes_without_waiting(pools, player, settings):
    """All of minor's stripes but one are held elsewhere: the bet lands on the free one at the
    first attempt, without waiting for any lock."""
    settings.JACKPOT_LOCK_TIMEOUT_MS = 100
    with Holder(pool__group="minor", slot__gt=0):
        result = services.contribute(player=player, bet=10_000, operation_id="op-skip")
        assert result.attempts == 1
    row = LedgerEntry.objects.get(operation_id="op-skip", pool__group="minor")
    assert row.slot == 0 and all_ok()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_every_stripe_is_held_the_wait_is_bounded(pools, player, settings):
    """Every stripe of mega held (as a win holds them): the attempt finds none free, then
    waits at most JACKPOT_LOCK_TIMEOUT_MS per attempt and gives up, having applied nothing."""
    settings.JACKPOT_MAX_RETRY_ATTEMPTS = 2
    settings.JACKPOT_RETRY_DELAY_MS = 0
    settings.JACKPOT_LOCK_TIMEOUT_MS = 100
    before = dict(JackpotPool.objects.values_list("group", "amount"))
    with Holder(pool__group="mega"):
        with pytest.raises(services.JackpotContended):
            services.contribute(player=player, bet=10_000, operation_id="op-held")
        assert dict(JackpotPool.objects.values_list("group", "amount")) == before
        assert not Contribution.objects.filter(operation_id="op-held").exists()
    result = services.contribute(player=player, bet=10_000, operation_id="op-held")
    assert not result.replayed and all_ok()


@pytest.mark.postgres
def test_a_win_checks_for_a_replay_inside_its_locking_read(pools, player):
    """Whether the win was paid and whether the player exists are answered by the pool's
    locking read (lock timeout folded in); then the stripes are locked and written."""
    services.contribute(player=player, bet=100_000, operation_id="op-before-win")
    with CaptureQueriesContext(connection) as captured:
        result = services.process_win(group="minor", player=player.pk, operation_id="win-rt")
    read, lock, *rest = _statements(captured.captured_queries)
    assert read.startswith("SELECT") and "FOR NO KEY UPDATE" in read and "set_config" in read
    assert '"jackpot_win"' in read and '"game_player"' in read  # the two probes
    assert lock.startswith("SELECT") and '"jackpot_stripe"' in lock and "FOR UPDATE" in lock
    writes = [re.match(r'(INSERT INTO|UPDATE) "(\w+)"', s) for s in rest]
    jackpot = [m.groups() for m in writes if m and m.group(2).startswith("jackpot_")]
    assert jackpot == [
        ("INSERT INTO", "jackpot_win"),
        ("UPDATE", "jackpot_stripe"),
        ("UPDATE", "jackpot_pool"),
        ("INSERT INTO", "jackpot_ledger"),
    ], rest
    assert not result.replayed and all_ok()
    with CaptureQueriesContext(connection) as captured:
        again = services.process_win(group="minor", player=player.pk, operation_id="win-rt")
    assert again.replayed and again.win.pk == result.win.pk
    assert not any(
        s.startswith(("INSERT", "UPDATE")) for s in _statements(captured.captured_queries)
    )
