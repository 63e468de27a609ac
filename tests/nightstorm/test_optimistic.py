"""Optimistic updates: one conditional UPDATE, conflicts detected; soft delete, one behaviour."""

import threading

import pytest
from django.db.models import F

from nightstorm.errors import ConcurrencyConflict
from nightstorm.optimistic import update_versioned
from tests.helpers import race
from tests.nightstorm.factories import make_account
from tests.toolkit_app.models import Account


@pytest.mark.django_db
def test_update_bumps_the_version():
    account = make_account()
    assert update_versioned(Account, account.pk, account.version, gold=5) == account.version + 1
    account.refresh_from_db()
    assert (account.gold, account.version) == (5, 2)


@pytest.mark.django_db
def test_a_stale_version_is_a_conflict_and_changes_nothing():
    account = make_account()
    update_versioned(Account, account.pk, 1, gold=5)
    with pytest.raises(ConcurrencyConflict):
        update_versioned(Account, account.pk, 1, gold=99)
    account.refresh_from_db()
    assert (account.gold, account.version) == (5, 2)


def _delete_row(account):
    return account.delete()


def _delete_queryset(account):
    return Account.objects.filter(pk=account.pk).delete()


@pytest.mark.django_db
@pytest.mark.parametrize("delete", [_delete_row, _delete_queryset], ids=["model", "queryset"])
def test_delete_is_soft_and_versioned_whichever_way_it_is_asked(delete):
    account, other = make_account(), make_account()
    assert delete(account) == (1, {"toolkit_tests.Account": 1})
    assert not Account.objects.filter(pk=account.pk).exists()
    row = Account.all_objects.get(pk=account.pk)
    assert row.deleted_at is not None and row.updated_at == row.deleted_at
    assert row.version == 2
    # Deleting a deleted row changes nothing, however it is asked for.
    assert _delete_row(row) == _delete_queryset(row) == (0, {"toolkit_tests.Account": 0})
    assert Account.all_objects.get(pk=account.pk).version == 2
    assert Account.objects.get(pk=other.pk).version == 1


@pytest.mark.django_db
def test_a_deleted_instance_follows_its_row_and_hard_delete_removes_it():
    account = make_account()
    account.delete()
    assert (account.version, account.deleted_at) == (2, Account.all_objects.get().deleted_at)
    with pytest.raises(ConcurrencyConflict):  # a write from before the delete is stale
        update_versioned(Account, account.pk, 1, gold=1)
    account.hard_delete()
    assert not Account.all_objects.exists()


def _all_read_then_write(workers: int, write):
    """Every worker reads the row, waits until all have read, then writes: the lost-update
    window of a read-modify-write, held open for every worker."""
    account = make_account()
    everyone_read = threading.Barrier(workers, timeout=30)

    def work(pk):
        row = Account.objects.get(pk=pk)
        everyone_read.wait()
        write(row)

    return account, race(work, [(account.pk,)] * workers)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_read_modify_writes_conflict_instead_of_losing_updates():
    workers = 16

    def versioned(row):
        update_versioned(Account, row.pk, row.version, gold=row.gold + 1)

    account, outcomes = _all_read_then_write(workers, versioned)
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    assert len(conflicts) == workers - 1, outcomes
    account.refresh_from_db()
    assert (account.gold, account.version) == (1, 2)  # every write that landed counted


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_a_blind_write_without_the_version_check_loses_updates():
    """What the version check prevents: the same writes, unconditioned, all "succeed" and
    all but one are lost."""
    workers = 16

    def blind(row):
        Account.objects.filter(pk=row.pk).update(gold=row.gold + 1, version=F("version") + 1)

    account, outcomes = _all_read_then_write(workers, blind)
    assert outcomes == [None] * workers
    account.refresh_from_db()
    assert account.gold == 1 and account.version == 1 + workers
