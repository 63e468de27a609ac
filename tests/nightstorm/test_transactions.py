"""Transient-error retry (deadlocks) and bounded row-lock waits, on real PostgreSQL."""

import threading

import pytest
from django.db import OperationalError, transaction
from django.db.models import F

from game.models import Player
from nightstorm.errors import Busy
from nightstorm.transactions import (
    busy_on_lock_timeout,
    is_transient,
    set_lock_timeout,
    transient_retry,
)
from tests.helpers import race
from tests.nightstorm.factories import make_player

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _opposite_order_transfers(a, b, *, retry: bool):
    """Two transactions lock rows a and b in opposite orders, meeting in the middle."""
    both_hold_first = threading.Barrier(2)
    attempts = {"ab": 0, "ba": 0}

    def transfer(name, first, second):
        attempts[name] += 1
        Player.objects.select_for_update().get(pk=first)
        if attempts[name] == 1:
            both_hold_first.wait(timeout=10)  # only the first attempt meets the other
        Player.objects.filter(pk=second).update(gold=F("gold") + 1)
        return name

    def run(name, first, second):
        if retry:
            return transient_retry(transfer)(name, first, second)
        with transaction.atomic():
            return transfer(name, first, second)

    return race(run, [("ab", a, b), ("ba", b, a)])


def test_a_deadlock_is_retried_and_both_transactions_succeed():
    a, b = make_player(), make_player()
    outcomes = _opposite_order_transfers(a.pk, b.pk, retry=True)
    assert sorted(outcomes) == ["ab", "ba"]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.gold, b.gold) == (1, 1)


def test_without_the_retry_the_deadlock_fails_one_side():
    """Shows the deadlock above is real: unretried, PostgreSQL aborts one transaction."""
    a, b = make_player(), make_player()
    outcomes = _opposite_order_transfers(a.pk, b.pk, retry=False)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 1
    assert is_transient(failures[0])


def test_a_row_lock_timeout_is_busy_not_a_crash():
    player = make_player()
    holding, done = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            Player.objects.select_for_update().get(pk=player.pk)
            holding.set()
            done.wait(timeout=10)

    def wait_for_it():
        holding.wait(timeout=10)
        try:
            with busy_on_lock_timeout(), transaction.atomic():
                set_lock_timeout(100)
                Player.objects.select_for_update().get(pk=player.pk)
        finally:
            done.set()

    outcomes = race(lambda f: f(), [(hold,), (wait_for_it,)])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], Busy)


def test_transient_retry_joins_an_open_transaction_instead_of_retrying():
    player = make_player()

    @transient_retry
    def credit():
        Player.objects.filter(pk=player.pk).update(gold=F("gold") + 1)

    with transaction.atomic():
        credit()
        transaction.set_rollback(True)
    player.refresh_from_db()
    assert player.gold == 0


def test_set_lock_timeout_needs_a_transaction():
    with pytest.raises(RuntimeError):
        set_lock_timeout(100)


def test_non_transient_errors_are_not_retried():
    calls = []

    @transient_retry
    def broken():
        calls.append(1)
        raise OperationalError("not transient")

    with pytest.raises(OperationalError):
        broken()
    assert calls == [1]


def test_locking_in_key_order_lets_opposite_requests_pass_without_deadlock():
    """The same two-row transfers as above, but both sides lock through lock_in_order."""
    from nightstorm.transactions import lock_in_order

    a, b = make_player(), make_player()
    both = Player.objects.filter(pk__in=[a.pk, b.pk])
    barrier = threading.Barrier(2)

    def transfer(target):
        with transaction.atomic():
            barrier.wait(timeout=10)
            lock_in_order(both)
            Player.objects.filter(pk=target).update(gold=F("gold") + 1)

    outcomes = race(transfer, [(a.pk,), (b.pk,)])
    assert outcomes == [None, None]
