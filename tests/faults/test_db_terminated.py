"""The database session of a money-moving call is terminated (`pg_terminate_backend`) while
the call is under way: a jackpot contribution, a jackpot win, a reward payout.

How each is stopped at the chosen point: a second session (`Blocker`) holds a row lock that
the call's next statement needs, the call's session is found in `pg_stat_activity` waiting on
that lock (`wait_event_type = 'Lock'`), terminated, and the lock released. At that point each
call has written everything else: the contribution has inserted its row, credited its stripes,
written its ledger rows and stored its idempotent response, and waits in its COMMIT (the
deferred foreign-key check on the player); the win has written the `Win`, emptied the stripes
and ledgered it, and waits to credit the winner's gold; the payout has locked its job and its
reward and waits to credit the gold.

Each fails whole: the API answers 503 `database_unavailable` (the key released, so the same
key is retried at once) and the payout's job stays pending for the retry queue; nothing of it
is left in the database (`jackpot_audit` and `gold_audit` clean, no ledger row without its
pool change). The retry applies exactly once. The controls do the same work in two commits, as
a naive implementation would, and the same termination leaves it half applied.
"""

import pytest
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from game import gold
from game.models import GoldEntry, GoldKind, Player, Reward
from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import Contribution, JackpotPool, LedgerEntry, LedgerKind, PoolStripe, Win
from nightstorm import outbox
from nightstorm.models import IdempotencyRecord, OutboxJob
from nightstorm.transactions import is_connection_lost
from tests.game.test_rewards import _finished_combat_with_rewards
from tests.jackpot.factories import PlayerFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LOCK_PLAYER = "SELECT 1 FROM game_player WHERE id = %s FOR UPDATE"


def client_of(user) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def contribute(user, key: str, bet: int = 10_000):
    return client_of(user).post(
        "/api/v1/jackpots/contributions/", {"bet": bet}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )


def win(staff, group: str, player, key: str):
    return client_of(staff).post(
        f"/api/v1/jackpots/{group}/wins/",
        {"player": str(player.pk)},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def assert_refused_cleanly(response):
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == "1"


def assert_books_clean():
    assert all(pool.ok for pool in audit_pools()), audit_pools()
    assert gold.audit() == []


def pool_amounts() -> dict[str, int]:
    return dict(JackpotPool.objects.values_list("group", "amount"))


def terminate_the_blocked_call(blocker, future, *, waiting_in: str):
    """Terminate the one session waiting on the blocker's locks; release them; return what
    the call returned (or raised)."""
    ((pid, query),) = blocker.wait_for_blocked()
    assert query.lstrip().upper().startswith(waiting_in), query
    blocker.terminate(pid)
    blocker.release()
    try:
        return future.result(timeout=30)
    except Exception as exc:  # the retry-queue caller raises; it is the outcome under test
        return exc


def test_a_contribution_terminated_in_its_commit_applies_nothing_and_its_retry_applies_once(
    blocker, in_thread
):
    services.ensure_default_pools()
    player = PlayerFactory()
    before = pool_amounts()
    blocker.lock(LOCK_PLAYER, [player.pk])  # the contribution's deferred FK check waits here

    response = terminate_the_blocked_call(
        blocker, in_thread(contribute, player.user, "bet-1"), waiting_in="COMMIT"
    )

    assert_refused_cleanly(response)
    assert pool_amounts() == before
    assert not Contribution.objects.exists()
    assert not LedgerEntry.objects.filter(kind=LedgerKind.CONTRIBUTION).exists()
    assert not IdempotencyRecord.objects.exists()  # released: the retry needs no wait
    assert_books_clean()

    retried, again = contribute(player.user, "bet-1"), contribute(player.user, "bet-1")
    assert retried.status_code == again.status_code == 201, retried.content
    assert again["Idempotent-Replayed"] == "true" and again.json() == retried.json()
    (contribution,) = Contribution.objects.all()
    after = pool_amounts()
    assert {g: after[g] - before[g] for g in after} == contribution.amounts
    credited = LedgerEntry.objects.filter(kind=LedgerKind.CONTRIBUTION)
    assert sorted(credited.values_list("amount", flat=True)) == sorted(
        a for a in contribution.amounts.values() if a
    )
    assert_books_clean()


def test_a_win_terminated_before_crediting_the_winner_pays_nothing_and_its_retry_pays_once(
    blocker, in_thread, settings
):
    settings.JACKPOT_LOCK_TIMEOUT_MS = 60_000  # the win waits for the blocker, not a timeout
    services.ensure_default_pools()
    bettor, winner = PlayerFactory(), PlayerFactory()
    staff = UserFactory(is_staff=True)
    for n in range(3):
        assert contribute(bettor.user, f"bet-{n}").status_code == 201
    before = pool_amounts()
    ledger_rows = LedgerEntry.objects.count()
    blocker.lock(LOCK_PLAYER, [winner.pk])  # the gold credit's UPDATE waits here

    response = terminate_the_blocked_call(
        blocker, in_thread(win, staff, "major", winner, "win-1"), waiting_in="UPDATE"
    )

    assert_refused_cleanly(response)
    assert pool_amounts() == before
    assert LedgerEntry.objects.count() == ledger_rows
    assert not Win.objects.exists()
    assert Player.objects.get(pk=winner.pk).gold == 0
    assert not GoldEntry.objects.filter(player=winner).exists()
    assert not IdempotencyRecord.objects.filter(key="win-1").exists()
    assert_books_clean()

    paid, again = win(staff, "major", winner, "win-1"), win(staff, "major", winner, "win-1")
    assert paid.status_code == again.status_code == 201, paid.content
    assert paid.json()["amount"] == before["major"] and again.json() == paid.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Win.objects.count() == 1
    assert Player.objects.get(pk=winner.pk).gold == before["major"]
    assert GoldEntry.objects.filter(player=winner, kind=GoldKind.JACKPOT_WIN).count() == 1
    assert pool_amounts()["major"] == JackpotPool.objects.get(group="major").seed_amount
    assert_books_clean()


def test_a_reward_payout_terminated_before_the_credit_stays_pending_and_is_paid_once(
    blocker, in_thread
):
    _, (reward, other) = _finished_combat_with_rewards()
    blocker.lock(LOCK_PLAYER, [reward.player_id])  # the gold credit's UPDATE waits here

    raised = terminate_the_blocked_call(
        blocker, in_thread(outbox.run_job, reward.job_id), waiting_in="UPDATE"
    )

    # The task fails (django-q2 records it); the job is left as it was, pending and due.
    assert isinstance(raised, DatabaseError) and is_connection_lost(raised), raised
    job = OutboxJob.objects.get(pk=reward.job_id)
    assert (job.state, job.attempts) == (OutboxJob.State.PENDING, 0)
    assert job.run_after <= timezone.now()
    assert Reward.objects.get(pk=reward.pk).paid_at is None
    assert Player.objects.get(pk=reward.player_id).gold == 0
    assert not GoldEntry.objects.filter(player_id=reward.player_id).exists()
    assert_books_clean()

    # The retry queue's drain (every minute on the task cluster) pays both rewards, once.
    assert outbox.drain() == {"done": 2, "pending": 0, "dead": 0, "skipped": 0}
    assert outbox.run_job(reward.job_id) is None
    for paid in (reward, other):
        player = Player.objects.get(pk=paid.player_id)
        assert (player.gold, player.xp) == (paid.gold, paid.xp)
        assert GoldEntry.objects.filter(player=player, kind=GoldKind.REWARD).count() == 1
        assert Reward.objects.get(pk=paid.pk).paid_at is not None
    assert_books_clean()


# --- controls: the same work in two commits is left half applied ----------------------------


def naive_contribute(player, bet: int, operation_id: str) -> None:
    """The ledger row, then the stripe: two autocommitted statements."""
    stripe = PoolStripe.objects.select_related("pool").get(pool__group="minor", slot=0)
    part = bet * stripe.rate_bp // 10_000
    LedgerEntry.objects.create(
        pool=stripe.pool,
        slot=0,
        kind=LedgerKind.CONTRIBUTION,
        amount=part,
        balance_after=stripe.amount + part,
        pool_version=stripe.version + 1,
        operation_id=operation_id,
        player=player,
    )
    PoolStripe.objects.filter(pk=stripe.pk).update(
        amount=F("amount") + part, version=F("version") + 1
    )


def naive_pay_reward(reward_id) -> None:
    """Credit the gold (its own transaction), then mark the reward paid (another)."""
    reward = Reward.objects.get(pk=reward_id)
    if reward.paid_at is None:
        gold.credit(
            player_id=reward.player_id,
            amount=reward.gold,
            kind=GoldKind.REWARD,
            reference=f"reward:{reward.pk}",
        )
        Reward.objects.filter(pk=reward.pk).update(paid_at=timezone.now())


def naive_win(group: str, player, operation_id: str) -> None:
    """Pay the winner (its own transaction), then empty the pool and record the win."""
    pool = JackpotPool.objects.get(group=group)
    gold.credit(
        player_id=player.pk, amount=pool.amount, kind=GoldKind.JACKPOT_WIN, reference=operation_id
    )
    PoolStripe.objects.filter(pool=pool).update(amount=0, version=F("version") + 1)
    Win.objects.create(operation_id=operation_id, pool=pool, player=player, amount=pool.amount)


def test_control_a_naive_contribution_terminated_halfway_leaves_a_ledger_row_without_money(
    blocker, in_thread
):
    services.ensure_default_pools()
    player = PlayerFactory()
    blocker.lock(f"SELECT 1 FROM {PoolStripe._meta.db_table} WHERE slot = 0 FOR NO KEY UPDATE")

    raised = terminate_the_blocked_call(
        blocker, in_thread(naive_contribute, player, 10_000, "naive-1"), waiting_in="UPDATE"
    )

    assert isinstance(raised, DatabaseError) and is_connection_lost(raised)
    minor = next(pool for pool in audit_pools() if pool.group == "minor")
    assert not minor.ok and minor.ledger_sum - minor.amount == 100


def test_control_a_naive_payout_terminated_halfway_pays_a_reward_it_shows_unpaid(
    blocker, in_thread
):
    _, (reward, _) = _finished_combat_with_rewards()
    blocker.lock(
        f"SELECT 1 FROM {Reward._meta.db_table} WHERE id = %s FOR NO KEY UPDATE", [reward.pk]
    )

    raised = terminate_the_blocked_call(
        blocker, in_thread(naive_pay_reward, reward.pk), waiting_in="UPDATE"
    )

    assert isinstance(raised, DatabaseError) and is_connection_lost(raised)
    assert Player.objects.get(pk=reward.player_id).gold == reward.gold  # paid
    assert Reward.objects.get(pk=reward.pk).paid_at is None  # and due again


def test_control_a_naive_win_terminated_halfway_pays_the_winner_and_keeps_the_pool(
    blocker, in_thread
):
    services.ensure_default_pools()
    winner = PlayerFactory()
    held = pool_amounts()["major"]
    major = JackpotPool.objects.get(group="major")
    blocker.lock(
        f"SELECT 1 FROM {PoolStripe._meta.db_table} WHERE pool_id = %s AND slot = 0 "
        "FOR NO KEY UPDATE",
        [major.pk],
    )

    raised = terminate_the_blocked_call(
        blocker, in_thread(naive_win, "major", winner, "naive-win"), waiting_in="UPDATE"
    )

    assert isinstance(raised, DatabaseError) and is_connection_lost(raised)
    assert Player.objects.get(pk=winner.pk).gold == held  # paid
    assert pool_amounts()["major"] == held and not Win.objects.exists()  # and still there
