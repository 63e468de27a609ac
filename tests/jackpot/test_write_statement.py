"""The contribution's writes: one statement on PostgreSQL, all or nothing on every backend."""

import dataclasses
import re
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import Contribution, JackpotPool, LedgerEntry
from nightstorm.errors import ConcurrencyConflict


def pool_state():
    return {g: (a, v) for g, a, v in JackpotPool.objects.values_list("group", "amount", "version")}


def all_ok():
    return all(a.ok for a in audit_pools())


def test_a_conflict_on_the_last_pool_rolls_back_everything_the_attempt_wrote(
    pools, player, monkeypatch
):
    """The first two pools and both inserts were written before the last pool lost the race:
    nothing of it may survive."""
    real = services._read_pools

    def stale_last(operation_id, lock):
        rows, applied = real(operation_id, lock)
        rows[-1] = dataclasses.replace(rows[-1], version=rows[-1].version - 1)
        return rows, applied

    monkeypatch.setattr(services, "_read_pools", stale_last)
    before = pool_state()
    with pytest.raises(ConcurrencyConflict), transaction.atomic():
        services._contribute_once(player.pk, 50_000, "op-stale", lock=False)
    assert pool_state() == before
    assert not Contribution.objects.filter(operation_id="op-stale").exists()
    assert not LedgerEntry.objects.filter(operation_id="op-stale").exists()
    assert all_ok()


def test_a_bet_too_small_for_any_pool_still_moves_every_version(pools, player):
    """No ledger row (every part is 0), yet all three versions move: the version check covers
    the whole snapshot the split was computed from."""
    before = pool_state()
    result = services.contribute(player=player, bet=1, operation_id="op-tiny")
    assert result.contribution.amounts == {"minor": 0, "major": 0, "mega": 0}
    assert result.contribution.house_amount == 1
    assert pool_state() == {g: (a, v + 1) for g, (a, v) in before.items()}
    assert not LedgerEntry.objects.filter(operation_id="op-tiny").exists()
    assert all_ok()


def test_the_ledger_rows_carry_the_contribution_and_extend_each_chain(pools, player):
    before = pool_state()
    c = services.contribute(player=player, bet=123_456, operation_id="op-rows").contribution
    stored = Contribution.objects.get(operation_id="op-rows")
    assert (stored.pk, stored.created_at) == (c.pk, c.created_at)
    rows = {r.pool.group: r for r in LedgerEntry.objects.filter(operation_id="op-rows")}
    assert set(rows) == {"minor", "major", "mega"}
    for group, row in rows.items():
        amount, version = before[group]
        assert (row.kind, row.note, row.player_id) == ("contribution", "", player.pk)
        assert row.amount == c.amounts[group]
        assert (row.balance_after, row.pool_version) == (amount + row.amount, version + 1)
        assert row.created_at == c.created_at
    assert pool_state() == {g: (a + c.amounts[g], v + 1) for g, (a, v) in before.items()}
    assert all_ok()


def _statements(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("lock", [False, True], ids=["optimistic", "locked"])
def test_an_attempt_is_one_read_and_one_write(pools, player, settings, monkeypatch, lock):
    """Round trips are lock time under contention: the read (with the lock timeout folded in
    on the locked path) and one statement for every write."""
    settings.JACKPOT_OPTIMISTIC_ATTEMPTS = 0 if lock else 1
    monkeypatch.setattr(services._contention, "hot_until", 0.0)
    with CaptureQueriesContext(connection) as captured:
        result = services.contribute(player=player, bet=40_000, operation_id=f"op-rt-{lock}")
    statements = _statements(captured.captured_queries)
    assert len(statements) == 2, statements
    read, write = statements
    assert ("FOR UPDATE" in read) == lock and ("set_config" in read) == lock
    assert write.startswith("WITH") and write.count("UPDATE") == 3
    assert LedgerEntry.objects.filter(operation_id=f"op-rt-{lock}").count() == 3
    assert result.attempts == 1 and all_ok()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_locked_read_is_bounded_by_the_lock_timeout(pools, player, settings, monkeypatch):
    """A pool held locked elsewhere: the locked attempt gives up after JACKPOT_LOCK_TIMEOUT_MS
    (the timeout set inside the read statement) instead of waiting for the holder."""
    settings.JACKPOT_OPTIMISTIC_ATTEMPTS = 0
    settings.JACKPOT_MAX_RETRY_ATTEMPTS = 2
    settings.JACKPOT_RETRY_DELAY_MS = 0
    settings.JACKPOT_LOCK_TIMEOUT_MS = 100
    monkeypatch.setattr(services._contention, "hot_until", 0.0)
    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                JackpotPool.objects.select_for_update().get(group="mega")
                locked.set()
                # Without the timeout the contribution would wait this long, then succeed.
                release.wait(timeout=10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        before = pool_state()
        with pytest.raises(services.JackpotContended):
            services.contribute(player=player, bet=10_000, operation_id="op-held")
        assert pool_state() == before
        assert not Contribution.objects.filter(operation_id="op-held").exists()
    finally:
        release.set()
        holder.join()
    result = services.contribute(player=player, bet=10_000, operation_id="op-held")
    assert not result.replayed and all_ok()


@pytest.mark.postgres
def test_a_win_checks_for_a_replay_inside_its_locking_read(pools, player):
    """The operation-id guard costs no statement of its own: whether the win was paid and
    whether the player exists are answered by the locking read (lock timeout folded in), and
    then come only the writes."""
    with CaptureQueriesContext(connection) as captured:
        result = services.process_win(group="minor", player=player.pk, operation_id="win-rt")
    read, *rest = _statements(captured.captured_queries)
    assert read.startswith("SELECT") and "FOR UPDATE" in read and "set_config" in read
    assert '"jackpot_win"' in read and '"game_player"' in read  # the two probes
    writes = [re.match(r'(INSERT INTO|UPDATE) "(\w+)"', s) for s in rest]
    jackpot = [m.groups() for m in writes if m and m.group(2).startswith("jackpot_")]
    assert jackpot == [
        ("INSERT INTO", "jackpot_win"),
        ("UPDATE", "jackpot_pool"),
        ("INSERT INTO", "jackpot_ledger"),
    ], rest
    assert not any("jackpot_" in s and s.startswith("SELECT") for s in rest), rest
    assert not result.replayed and all_ok()
    with CaptureQueriesContext(connection) as captured:
        again = services.process_win(group="minor", player=player.pk, operation_id="win-rt")
    assert again.replayed and again.win.pk == result.win.pk
    assert not any(
        s.startswith(("INSERT", "UPDATE")) for s in _statements(captured.captured_queries)
    )
