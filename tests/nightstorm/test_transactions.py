"""Transient-error retry (deadlocks) and bounded row-lock waits, on real PostgreSQL."""

import threading

import pytest
from django.db import OperationalError, transaction
from django.db.models import F

from nightstorm.errors import Busy
from nightstorm.transactions import (
    busy_on_lock_timeout,
    is_transient,
    set_lock_timeout,
    transient_retry,
)
from tests.helpers import race
from tests.nightstorm.factories import make_account
from tests.toolkit_app.models import Account

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _opposite_order_transfers(a, b, *, retry: bool):
    """Two transactions lock rows a and b in opposite orders, meeting in the middle."""
    both_hold_first = threading.Barrier(2)
    attempts = {"ab": 0, "ba": 0}

    def transfer(name, first, second):
        attempts[name] += 1
        Account.objects.select_for_update().get(pk=first)
        if attempts[name] == 1:
            both_hold_first.wait(timeout=10)  # only the first attempt meets the other
        Account.objects.filter(pk=second).update(gold=F("gold") + 1)
        return name

    def run(name, first, second):
        if retry:
            return transient_retry(transfer)(name, first, second)
        with transaction.atomic():
            return transfer(name, first, second)

    return race(run, [("ab", a, b), ("ba", b, a)])


def test_a_deadlock_is_retried_and_both_transactions_succeed():
    a, b = make_account(), make_account()
    outcomes = _opposite_order_transfers(a.pk, b.pk, retry=True)
    assert sorted(outcomes) == ["ab", "ba"]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.gold, b.gold) == (1, 1)


def test_without_the_retry_the_deadlock_fails_one_side():
    """Shows the deadlock above is real: unretried, PostgreSQL aborts one transaction."""
    a, b = make_account(), make_account()
    outcomes = _opposite_order_transfers(a.pk, b.pk, retry=False)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 1
    assert is_transient(failures[0])


def test_a_row_lock_timeout_is_busy_not_a_crash():
    account = make_account()
    holding, done = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            Account.objects.select_for_update().get(pk=account.pk)
            holding.set()
            done.wait(timeout=10)

    def wait_for_it():
        holding.wait(timeout=10)
        try:
            with busy_on_lock_timeout(), transaction.atomic():
                set_lock_timeout(100)
                Account.objects.select_for_update().get(pk=account.pk)
        finally:
            done.set()

    outcomes = race(lambda f: f(), [(hold,), (wait_for_it,)])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], Busy)


def test_transient_retry_joins_an_open_transaction_instead_of_retrying():
    account = make_account()

    @transient_retry
    def credit():
        Account.objects.filter(pk=account.pk).update(gold=F("gold") + 1)

    with transaction.atomic():
        credit()
        transaction.set_rollback(True)
    account.refresh_from_db()
    assert account.gold == 0


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
