"""The jackpot services one call at a time (PostgreSQL and SQLite)."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, transaction

from game.models import Player
from jackpot import contributions, services
from jackpot.ledger import audit_pools, split_bet
from jackpot.models import Contribution, JackpotPool, LedgerEntry, PoolStripe, Win
from nightstorm.errors import ConcurrencyConflict, InvalidInput, PreconditionFailed
from nightstorm.models import LedgerIsAppendOnly


def amounts():
    return dict(JackpotPool.objects.values_list("group", "amount"))


def all_ok():
    return all(a.ok for a in audit_pools())


def test_seeded_pools_pass_the_audit(pools):
    assert set(pools) == {"minor", "major", "mega"}
    assert all_ok()
    for pool in pools.values():
        assert pool.amount == pool.seed_amount
        assert pool.ledger.get().kind == "seed"


def test_contribution_splits_floor_per_pool_and_house_keeps_the_rest(pools, player):
    before = amounts()
    result = services.contribute(player=player, bet=12_345, operation_id="op-1")
    c = result.contribution
    rates = {g: p.contribution_rate_bp for g, p in pools.items()}
    assert c.amounts == split_bet(12_345, rates).parts == {"minor": 123, "major": 61, "mega": 30}
    assert c.house_amount == 12_345 - 123 - 61 - 30 and c.overflow_amount == 0
    assert amounts() == {g: before[g] + c.amounts[g] for g in before}
    assert LedgerEntry.objects.filter(operation_id="op-1").count() == 3
    assert not result.replayed and result.attempts == 1
    assert all_ok()


def test_replay_returns_the_stored_contribution_and_changes_nothing(pools, player):
    first = services.contribute(player=player, bet=5_000, operation_id="op-r")
    before = amounts()
    again = services.contribute(player=player, bet=5_000, operation_id="op-r")
    assert again.replayed and again.contribution.pk == first.contribution.pk
    assert amounts() == before
    assert Contribution.objects.count() == 1


def test_operation_id_reused_for_another_bet_is_refused(pools, player):
    services.contribute(player=player, bet=5_000, operation_id="op-x")
    with pytest.raises(services.OperationReused):
        services.contribute(player=player, bet=5_001, operation_id="op-x")


@pytest.mark.parametrize(
    ("bet", "code"),
    [
        (0, "bet_not_positive"),
        (-1, "bet_not_positive"),
        (1.5, "bet_not_integer"),
        (100.0, "bet_not_integer"),
        ("1e3", "bet_not_integer"),
        ("100", "bet_not_integer"),
        (True, "bet_not_integer"),
        (None, "bet_required"),
        (10**30, "bet_too_large"),
    ],
)
def test_bad_bets_are_refused_and_change_nothing(pools, player, bet, code):
    before = amounts()
    with pytest.raises(InvalidInput) as info:
        services.contribute(player=player, bet=bet, operation_id="op-bad")
    assert info.value.code == code
    assert amounts() == before and not Contribution.objects.exists()


def test_capped_pool_sends_the_overflow_to_the_house(pools, player):
    minor = pools["minor"]
    services.update_config(
        group="minor",
        changes={"max_amount": minor.amount + 50},
        expected_version=minor.config_version,
    )
    c = services.contribute(player=player, bet=10_000, operation_id="op-cap").contribution
    assert c.minor_amount == 50 and c.overflow_amount == 50  # part was 100
    assert c.minor_amount + c.major_amount + c.mega_amount + c.house_amount == 10_000
    assert JackpotPool.objects.get(group="minor").amount == minor.amount + 50
    c2 = services.contribute(player=player, bet=10_000, operation_id="op-cap2").contribution
    assert c2.minor_amount == 0 and c2.overflow_amount == 100
    assert all_ok()


def test_win_pays_the_pool_resets_it_and_credits_the_player(pools, player):
    services.contribute(player=player, bet=100_000, operation_id="op-w")
    held = JackpotPool.objects.get(group="major").amount
    result = services.process_win(group="major", player=player, operation_id="win-1")
    assert result.win.amount == held
    pool = JackpotPool.objects.get(group="major")
    assert pool.amount == pool.seed_amount and pool.lock_holder == "win-1"
    assert Player.objects.get(pk=player.pk).gold == held
    rows = LedgerEntry.objects.filter(operation_id="win-1")
    # One `win` row per stripe that held money (the seed's and the bet's), then the reset.
    assert sum(r.amount for r in rows if r.kind == "win") == -held
    assert all(r.balance_after == 0 for r in rows if r.kind == "win")
    assert [(r.slot, r.amount) for r in rows if r.kind == "reset"] == [(0, pool.seed_amount)]
    assert all_ok()
    # replay: same payout, nothing paid twice
    again = services.process_win(group="major", player=player, operation_id="win-1")
    assert again.replayed and again.win.amount == held
    assert Player.objects.get(pk=player.pk).gold == held
    with pytest.raises(services.OperationReused):
        services.process_win(group="minor", player=player, operation_id="win-1")
    assert all_ok()


def test_win_on_unknown_group_or_player_is_refused(pools, player):
    with pytest.raises(services.UnknownGroup):
        services.process_win(group="giga", player=player, operation_id="w-404")
    with pytest.raises(services.PlayerNotFound):
        services.process_win(
            group="minor", player="00000000-0000-0000-0000-000000000000", operation_id="w-p"
        )
    assert not Win.objects.exists() and all_ok()


def test_update_config_checks_the_configuration_version_and_rules(pools):
    minor = pools["minor"]
    with pytest.raises(PreconditionFailed):
        services.update_config(
            group="minor", changes={"seed_amount": 5}, expected_version=minor.config_version + 1
        )
    for changes, code in [
        ({"contribution_rate_bp": 10_001}, "rate_out_of_range"),
        ({"contribution_rate_bp": -1}, "rate_out_of_range"),
        ({"seed_amount": -1}, "seed_negative"),
        ({"max_amount": minor.seed_amount - 1}, "max_below_seed"),
        ({"contribution_rate_bp": 9_990}, "rates_exceed_bet"),
        ({"contribution_rate_bp": 1.5}, "contribution_rate_bp_not_integer"),
        ({"amount": 5}, "unknown_field"),
    ]:
        with pytest.raises(InvalidInput) as info:
            services.update_config(
                group="minor", changes=changes, expected_version=minor.config_version
            )
        assert info.value.code == code
    pool = services.update_config(
        group="minor", changes={"contribution_rate_bp": 200}, expected_version=minor.config_version
    )
    assert (pool.version, pool.config_version) == (minor.version + 1, minor.config_version + 1)
    stored = JackpotPool.objects.get(group="minor")
    assert (stored.contribution_rate_bp, stored.version, stored.config_version) == (
        200,
        pool.version,
        pool.config_version,
    )
    # Changing nothing is no new version of either kind.
    same = services.update_config(
        group="minor", changes={"contribution_rate_bp": 200}, expected_version=pool.config_version
    )
    assert (same.version, same.config_version) == (pool.version, pool.config_version)


def test_wins_and_adjustments_move_version_bets_neither_and_none_config_version(pools, player):
    minor = pools["minor"]
    services.contribute(player=player, bet=100_000, operation_id="op-cv")
    assert JackpotPool.objects.get(group="minor").version == minor.version  # a stripe moved
    services.adjust_pool(group="minor", delta=5, operation_id="adj-cv")
    services.process_win(group="minor", player=player, operation_id="win-cv")
    pool = JackpotPool.objects.get(group="minor")
    assert pool.version == minor.version + 2
    assert pool.config_version == minor.config_version == 1
    # So a configuration edit made against the configuration it saw still applies.
    services.update_config(
        group="minor", changes={"seed_amount": 1_500}, expected_version=minor.config_version
    )
    assert JackpotPool.objects.get(group="minor").config_version == 2


def test_adjustment_precondition_names_the_configuration_version(pools, player):
    minor = pools["minor"]
    services.contribute(player=player, bet=100_000, operation_id="op-adj-pre")
    # The balance moved; the configuration did not: the correction applies.
    pool = services.adjust_pool(
        group="minor", delta=7, operation_id="adj-pre-1", expected_version=minor.config_version
    )
    assert pool.config_version == minor.config_version
    services.update_config(
        group="minor", changes={"seed_amount": 1_500}, expected_version=minor.config_version
    )
    with pytest.raises(PreconditionFailed):
        services.adjust_pool(
            group="minor", delta=7, operation_id="adj-pre-2", expected_version=minor.config_version
        )
    assert not LedgerEntry.objects.filter(operation_id="adj-pre-2").exists()
    assert all_ok()


def test_adjustment_is_ledgered_and_bounded(pools):
    minor = pools["minor"]
    pool = services.adjust_pool(group="minor", delta=500, operation_id="adj-1", note="promo")
    assert pool.amount == minor.amount + 500
    assert LedgerEntry.objects.get(operation_id="adj-1").kind == "adjustment"
    services.adjust_pool(group="minor", delta=500, operation_id="adj-1")  # once per operation
    assert JackpotPool.objects.get(group="minor").amount == minor.amount + 500
    with pytest.raises(services.OperationReused):  # the same id for another correction
        services.adjust_pool(group="minor", delta=501, operation_id="adj-1")
    with pytest.raises(InvalidInput):
        services.adjust_pool(group="minor", delta=-(10**9), operation_id="adj-2")
    assert all_ok()


def test_ledger_refuses_updates_and_deletes_in_the_orm(pools):
    entry = LedgerEntry.objects.first()
    with pytest.raises(LedgerIsAppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=0)
    with pytest.raises(LedgerIsAppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(LedgerIsAppendOnly):
        entry.delete()
    entry.amount = 0
    with pytest.raises(LedgerIsAppendOnly):
        entry.save()


def test_database_refuses_ledger_updates(pools):
    from django.db import connection

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE jackpot_ledger SET amount = amount + 1")
    assert all_ok()


@pytest.mark.postgres
def test_database_refuses_ledger_deletes(pools):
    from django.db import connection

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM jackpot_ledger")
    assert all_ok()


def test_audit_command_passes_and_fails(pools, capsys):
    call_command("jackpot_audit")
    out = capsys.readouterr().out
    assert "3 pools ok" in out and "minor" in out
    PoolStripe.objects.filter(pool__group="mega", slot=3).update(amount=1)  # no ledger row
    with pytest.raises(CommandError, match="mega"):
        call_command("jackpot_audit")


def test_audit_detects_a_broken_balance_chain(pools):
    stripe = PoolStripe.objects.get(pool__group="minor", slot=0)
    LedgerEntry.objects.create(
        pool_id=stripe.pool_id,
        slot=0,
        kind="adjustment",
        amount=5,
        balance_after=stripe.amount + 6,
        pool_version=stripe.version + 1,
        operation_id="bad",
    )
    PoolStripe.objects.filter(pk=stripe.pk).update(amount=stripe.amount + 6, ceiling=None)
    result = {a.group: a for a in audit_pools()}["minor"]
    assert result.chain_breaks == 1 and result.ledger_sum != result.amount and not result.ok


def _losing_attempts(monkeypatch, times):
    """The next `times` attempts lose (as when every stripe of a pool is held elsewhere)."""
    real = contributions._contribute_once
    calls = {"n": 0, "wait": []}

    def attempt(*args, **kwargs):
        calls["n"] += 1
        calls["wait"].append(kwargs["wait"])
        if calls["n"] <= times:
            raise ConcurrencyConflict()
        return real(*args, **kwargs)

    monkeypatch.setattr(contributions, "_contribute_once", attempt)
    return calls


def test_a_lost_attempt_is_retried_waiting_for_a_stripe(pools, player, monkeypatch):
    calls = _losing_attempts(monkeypatch, times=1)
    before = amounts()
    result = services.contribute(player=player, bet=10_000, operation_id="op-retry")
    assert result.attempts == 2 and calls["wait"] == [False, True]
    assert amounts() == {g: before[g] + result.contribution.amounts[g] for g in before}
    assert Contribution.objects.count() == 1 and all_ok()


def test_contribution_gives_up_after_the_last_attempt_and_applies_nothing(
    pools, player, monkeypatch, settings
):
    settings.JACKPOT_MAX_RETRY_ATTEMPTS = 3
    settings.JACKPOT_RETRY_DELAY_MS = 0
    _losing_attempts(monkeypatch, times=3)
    before = amounts()
    with pytest.raises(services.JackpotContended) as info:
        services.contribute(player=player, bet=10_000, operation_id="op-busy")
    assert info.value.status == 503 and info.value.code == "jackpot_contended"
    assert amounts() == before
    assert (
        not Contribution.objects.exists()
        and not LedgerEntry.objects.filter(operation_id="op-busy").exists()
    )
