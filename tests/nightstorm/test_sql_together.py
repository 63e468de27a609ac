"""`nightstorm.sql.run_together`: several statements in one round trip, each with its own
snapshot, and the COMMIT with them when asked, on a real PostgreSQL with racing threads."""

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, connections, transaction

from nightstorm.sql import run, run_together
from tests.helpers import wait_for_a_lock_waiter

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LOCK = "SELECT 1 FROM auth_user WHERE id = %s FOR UPDATE"
NAME = "SELECT first_name FROM auth_user WHERE id = %s"
# The naive form: the lock and the read in one statement.
LOCK_AND_NAME = f"""
WITH locked AS ({LOCK.replace("%s", "%(locked)s")})
SELECT u.first_name FROM auth_user u, locked WHERE u.id = %(read)s
"""
INSERT = (
    "INSERT INTO auth_user (username, password, first_name, last_name, email, "
    "is_superuser, is_staff, is_active, date_joined) "
    "VALUES (%s, '', '', '', '', false, false, true, now()) RETURNING id"
)


def _users(*names):
    User = get_user_model()
    return [User.objects.create(username=name, first_name="before") for name in names]


def _while_held(locked, renamed, read):
    """Hold `locked`'s row in another thread, rename `renamed` in that transaction and commit
    it once `read()` waits for the row; what `read()` returned."""
    held, waited = threading.Event(), []
    connection.ensure_connection()
    reader = connection.connection.info.backend_pid

    def holder():
        try:
            with transaction.atomic():
                run("default", LOCK, [locked.pk])
                get_user_model().objects.filter(pk=renamed.pk).update(first_name="after")
                held.set()
                wait_for_a_lock_waiter(pid=reader)  # the reader is blocked on the row
                waited.append(reader)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with transaction.atomic():
            rows = read()
    finally:
        thread.join(10)
    assert waited, "the read did not wait for the row"
    return rows


def test_a_statement_after_a_lock_wait_reads_what_the_lock_holder_committed():
    locked, renamed = _users("locked", "renamed")
    rows = _while_held(
        locked,
        renamed,
        lambda: run_together("default", [(LOCK, [locked.pk]), (NAME, [renamed.pk])]),
    )
    assert rows == [[(1,)], [("after",)]]


def test_control_one_statement_that_waited_reads_as_of_its_start():
    # Why they are separate statements: folded into the locking one, the read misses the
    # change committed while it waited.
    locked, renamed = _users("locked", "renamed")
    rows = _while_held(
        locked,
        renamed,
        lambda: run("default", LOCK_AND_NAME, {"locked": locked.pk, "read": renamed.pk}),
    )
    assert rows == [("before",)]


def _exists_elsewhere(username: str) -> bool:
    """Whether another connection (another thread) sees the user committed."""
    found = {}

    def look():
        try:
            found["it"] = get_user_model().objects.filter(username=username).exists()
        finally:
            connections.close_all()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join(10)
    return found["it"]


def test_commit_ends_the_transaction_in_the_same_call():
    with transaction.atomic():
        ((row,), none) = run_together(
            "default", [(INSERT, ["committed"]), (NAME, [-1])], commit=True
        )
        assert none == []
        # Committed already: another connection sees it before the block ends.
        assert _exists_elsewhere("committed")
    assert get_user_model().objects.get(username="committed").pk == row[0]


def test_inside_a_savepoint_nothing_is_committed():
    with pytest.raises(RuntimeError), transaction.atomic():
        with transaction.atomic():
            run_together("default", [(INSERT, ["kept-in"])], commit=True)
        assert not _exists_elsewhere("kept-in")
        raise RuntimeError("the caller rolls back")
    assert not get_user_model().objects.filter(username="kept-in").exists()


def test_an_error_is_django_s_and_nothing_is_committed():
    with pytest.raises(IntegrityError), transaction.atomic():
        run_together("default", [(INSERT, ["twice"]), (INSERT, ["twice"])], commit=True)
    assert not get_user_model().objects.filter(username="twice").exists()
    # The connection is usable again.
    assert connection.in_atomic_block is False
    assert run("default", "SELECT 1", []) == [(1,)]
