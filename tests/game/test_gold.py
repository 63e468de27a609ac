"""The gold ledger: every change of a player's gold writes an entry; gold = sum of entries."""

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

from game import gold, rewards
from game.models import GoldEntry, GoldKind, Player
from nightstorm import outbox
from nightstorm.models import LedgerIsAppendOnly
from tests.game.factories import make_players
from tests.game.test_rewards import _finished_combat_with_rewards
from tests.helpers import race


def _entries(player):
    return list(
        GoldEntry.objects.filter(player=player).order_by("id").values_list("kind", "amount")
    )


@pytest.mark.django_db
def test_credit_moves_gold_and_writes_one_entry_with_the_balance():
    (player,) = make_players(1)
    entry = gold.credit(player_id=player.pk, amount=250, kind=GoldKind.REWARD, reference="r:1")
    player.refresh_from_db()
    assert (player.gold, entry.balance_after, entry.amount) == (250, 250, 250)
    assert player.version == 2
    assert gold.audit() == []


@pytest.mark.django_db
def test_gold_never_goes_below_zero_and_a_refusal_writes_nothing():
    (player,) = make_players(1)
    gold.credit(player_id=player.pk, amount=10, kind=GoldKind.ADJUSTMENT, reference="a:1")
    with pytest.raises(gold.GoldBelowZero):
        gold.credit(player_id=player.pk, amount=-11, kind=GoldKind.ADJUSTMENT, reference="a:2")
    assert Player.objects.get(pk=player.pk).gold == 10
    assert _entries(player) == [("adjustment", 10)]


@pytest.mark.django_db
def test_a_cause_credits_a_player_once():
    (player,) = make_players(1)
    first = gold.adjust(player_id=player.pk, delta=5, actor="gm", reference="admin:x")
    again = gold.adjust(player_id=player.pk, delta=5, actor="gm", reference="admin:x")
    assert again.pk == first.pk
    assert Player.objects.get(pk=player.pk).gold == 5


@pytest.mark.django_db
def test_rewards_are_ledgered_and_the_audit_is_clean():
    _, paid = _finished_combat_with_rewards()
    for reward in paid:
        outbox.run_job(reward.job_id)
        assert rewards.pay_reward({"reward": reward.pk}) is False
    for reward in paid:
        assert _entries(reward.player_id) == [("reward", reward.gold)]
    call_command("gold_audit")


@pytest.mark.django_db
def test_the_ledger_is_append_only_in_the_orm():
    (player,) = make_players(1)
    entry = gold.credit(player_id=player.pk, amount=1, kind=GoldKind.REWARD, reference="r:1")
    with pytest.raises(LedgerIsAppendOnly):
        entry.save()
    with pytest.raises(LedgerIsAppendOnly):
        GoldEntry.objects.filter(pk=entry.pk).delete()


@pytest.mark.django_db
def test_gold_audit_reports_gold_changed_outside_the_ledger():
    """The control: a direct write of `gold` (what every credit did before the ledger) is
    exactly what the audit catches."""
    (player,) = make_players(1)
    Player.objects.filter(pk=player.pk).update(gold=F("gold") + 7)
    assert [row.name for row in gold.audit()] == [player.name]
    with pytest.raises(CommandError, match="1 of 1 players do not match"):
        call_command("gold_audit")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_credits_keep_gold_equal_to_the_ledger():
    (player,) = make_players(1)
    outcomes = race(
        lambda n: gold.credit(
            player_id=player.pk, amount=3, kind=GoldKind.REWARD, reference=f"r:{n}"
        ),
        [(n,) for n in range(16)],
    )
    assert not [o for o in outcomes if isinstance(o, Exception)]
    assert Player.objects.get(pk=player.pk).gold == 48
    balances = sorted(
        GoldEntry.objects.filter(player=player).values_list("balance_after", flat=True)
    )
    assert balances == [3 * n for n in range(1, 17)]  # each read under the row lock
    assert gold.audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_credits_that_read_the_balance_before_writing_lose_gold():
    """The control: the same sixteen credits as a read, then a write of read + amount (no
    row lock between them) lose all but one, and the audit sees gold off its ledger."""
    import contextlib
    import threading

    (player,) = make_players(1)
    everyone_read = threading.Barrier(16, timeout=10)

    def read_then_write(n):
        balance = Player.objects.get(pk=player.pk).gold + 3
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_read.wait()
        Player.objects.filter(pk=player.pk).update(gold=balance)
        GoldEntry.objects.create(
            player=player, kind=GoldKind.REWARD, amount=3, balance_after=balance, reference=f"r:{n}"
        )

    assert race(read_then_write, [(n,) for n in range(16)]) == [None] * 16
    assert Player.objects.get(pk=player.pk).gold == 3
    assert [row.name for row in gold.audit()] == [player.name]
