"""Money moves only with a key, and once per key (real threads, real PostgreSQL).

Over HTTP the Idempotency-Key is required for contributions and wins: without one the request
is 400 `idempotency_key_required` and nothing moves. With one, a retry replays the first
answer, a concurrent duplicate is told the first is still in progress (or replays it), and
either way the pool and the player's gold change once. Below the HTTP layer the service's
operation id is what makes a duplicate apply once (scripts, the admin, an expired record).
"""

import random
import time

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from game.models import GoldEntry, Player
from jackpot import services, statements
from jackpot.models import Contribution, JackpotPool, LedgerEntry, Win
from nightstorm import sql
from tests.helpers import race, while_held
from tests.jackpot.books import assert_books_balance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POOLS = "/api/v1/jackpots/"
CONTRIBUTIONS = f"{POOLS}contributions/"


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def pool_rows():
    return dict(JackpotPool.objects.values_list("group", "amount"))


def win(client, player, key=None, group="minor"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"{POOLS}{group}/wins/", {"player": str(player.pk)}, format="json", **headers
    )


def bet(client, amount, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(CONTRIBUTIONS, {"bet": amount}, format="json", **headers)


def test_a_win_retried_with_the_same_key_pays_once(pools, player, staff_user):
    staff = api_as(staff_user)
    services.adjust_pool(group="minor", delta=50_000, operation_id="fund-keys")
    held = JackpotPool.objects.get(group="minor").amount
    first = win(staff, player, key="win-once")
    assert first.status_code == 201 and first.json()["amount"] == held
    # The pool grows again before the retry: the retry must not pay it.
    services.contribute(player=player, bet=100_000, operation_id="between")
    after_bet = pool_rows()
    retry = win(staff, player, key="win-once")
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert pool_rows() == after_bet
    assert Win.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="win").count() == 1
    assert Player.objects.get(pk=player.pk).gold == held
    entries = GoldEntry.objects.filter(player=player)
    assert [(e.kind, e.amount) for e in entries] == [("jackpot_win", held)]
    assert_books_balance()


def test_a_contribution_retried_with_the_same_key_applies_once(pools, player):
    client = api_as(player.user)
    before = pool_rows()
    first = bet(client, 10_000, key="bet-once")
    retry = bet(client, 10_000, key="bet-once")
    assert first.status_code == retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    parts = first.json()["amounts"]
    assert pool_rows() == {g: a + parts[g] for g, a in before.items()}
    assert Contribution.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="contribution").count() == 3
    assert_books_balance()


def test_without_a_key_no_money_moves(pools, player, staff_user):
    before = pool_rows(), LedgerEntry.objects.count()
    refused = [win(api_as(staff_user), player), bet(api_as(player.user), 10_000)]
    for response in refused:
        assert response.status_code == 400
        assert response.json()["code"] == "idempotency_key_required"
    assert (pool_rows(), LedgerEntry.objects.count()) == before
    assert not Win.objects.exists() and not Contribution.objects.exists()
    assert not GoldEntry.objects.exists() and Player.objects.get(pk=player.pk).gold == 0
    assert_books_balance()


def _settle(responses, post):
    """Every duplicate told "in progress" retries (as a client would) until it gets the
    stored answer; returns all final responses."""
    final = []
    for response in responses:
        for _ in range(50):
            if response.status_code != 409:
                break
            assert response.json()["code"] == "idempotency_in_progress"
            assert response.has_header("Retry-After")
            time.sleep(0.05)
            response = post()
        final.append(response)
    return final


def test_concurrent_duplicate_wins_with_one_key_pay_once(pools, players, staff_user):
    player = players[0]
    services.adjust_pool(group="major", delta=77_000, operation_id="fund-dup")
    held = JackpotPool.objects.get(group="major").amount

    def post():
        return win(api_as(staff_user), player, key="dup-win", group="major")

    responses = _settle(race(lambda _: post(), [(i,) for i in range(6)]), post)
    assert all(r.status_code == 201 for r in responses), [r.status_code for r in responses]
    fresh = [r for r in responses if not r.has_header("Idempotent-Replayed")]
    assert len(fresh) == 1
    assert all(
        r.json() == {"amount": held, "group": "major", "player": str(player.pk)} for r in responses
    )
    assert Win.objects.count() == 1
    assert Player.objects.get(pk=player.pk).gold == held
    assert GoldEntry.objects.filter(player=player, kind="jackpot_win").count() == 1
    assert JackpotPool.objects.get(group="major").amount == pools["major"].seed_amount
    assert_books_balance()


def test_concurrent_duplicate_contributions_with_one_key_apply_once(pools, player):
    before = pool_rows()

    def post():
        return bet(api_as(player.user), 40_000, key="dup-bet")

    responses = _settle(race(lambda _: post(), [(i,) for i in range(6)]), post)
    assert all(r.status_code == 201 for r in responses), [r.status_code for r in responses]
    assert len([r for r in responses if not r.has_header("Idempotent-Replayed")]) == 1
    parts = responses[0].json()["amounts"]
    assert pool_rows() == {g: a + parts[g] for g, a in before.items()}
    assert Contribution.objects.count() == 1
    assert_books_balance()


def test_a_duplicate_win_that_waited_for_the_pool_lock_replays(pools, player):
    """Below HTTP (a script, a retried job): two calls with one operation id, the second
    blocked on the pool lock while the first commits. Its replay probe was read before the
    wait, so the unique index on the win's operation id catches it: it returns the first
    payout, and the pool and the gold move once."""
    services.adjust_pool(group="mega", delta=5_000, operation_id="fund-lock")
    held = JackpotPool.objects.get(group="mega").amount

    def pay():
        return services.process_win(group="mega", player=player.pk, operation_id="one-win")

    second = while_held(pay, pay)
    assert "error" not in second, second.get("error")
    result = second["result"]
    assert result.replayed and result.win.amount == held
    assert Win.objects.count() == 1
    assert LedgerEntry.objects.filter(operation_id="one-win").count() == 2  # win + reset
    assert Player.objects.get(pk=player.pk).gold == held
    assert GoldEntry.objects.filter(player=player).count() == 1
    assert_books_balance()


def _twin_bet(player):
    """A call applying operation "twin-bet" for `player`."""
    return lambda: services.contribute(player=player.pk, bet=40_000, operation_id="twin-bet")


def test_a_twin_in_a_callers_transaction_replays_without_a_savepoint(uncapped_pools, player):
    """The one-statement contribution runs in a caller's transaction without a savepoint. A
    twin with the same operation id that waited for the first's insert gets the first's
    contribution, the caller's transaction stays usable, and the money moves once."""
    before = pool_rows()
    twin = while_held(_twin_bet(player), _twin_bet(player), in_transaction=True)
    assert "error" not in twin, twin.get("error")
    assert twin["result"].replayed and twin["usable"]
    assert twin["result"].attempts == 1  # the one-statement attempt, not a retry
    stored = Contribution.objects.get(operation_id="twin-bet")
    assert twin["result"].contribution.pk == stored.pk
    assert pool_rows() == {g: a + stored.amounts[g] for g, a in before.items()}
    assert LedgerEntry.objects.filter(operation_id="twin-bet").count() == 3
    assert_books_balance()


def test_control_the_statement_without_on_conflict_aborts_the_callers_transaction(
    uncapped_pools, player
):
    """CONTROL: the same statement without its ON CONFLICT clause, run the same way: the twin's
    insert fails on the unique index, and the caller's transaction is lost with it."""
    plain = statements.CONTRIBUTE.replace("ON CONFLICT (operation_id) DO NOTHING", "")
    assert plain != statements.CONTRIBUTE
    params = {
        "op": "twin-bet",
        "player": player.pk,
        "bet": 40_000,
        "slot": random.randrange(2),
        "now": timezone.now(),
    }
    twin = while_held(
        _twin_bet(player), lambda: sql.run(connection.alias, plain, params), in_transaction=True
    )
    assert type(twin.get("error")).__name__ == "IntegrityError", twin
    assert twin["usable"] is False
    assert Contribution.objects.filter(operation_id="twin-bet").count() == 1
    assert_books_balance()
