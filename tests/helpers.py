"""Helpers for tests that race real threads against a real database."""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection, connections


class RaceNeverStarted(AssertionError):
    """The calls of a race did not all reach its starting line: they did not overlap."""


def _closing(fn: Callable, barrier: threading.Barrier | None, first: int):
    def run(index, *args):
        try:
            if barrier is not None and index < first:
                try:
                    barrier.wait(timeout=60)
                except threading.BrokenBarrierError:
                    raise RaceNeverStarted(f"call {index} never met the others") from None
            return fn(*args)
        finally:
            # Each thread has its own connection; close it or the test database cannot be
            # dropped at teardown.
            connections.close_all()

    return run


def race(fn: Callable, args_list: list[tuple], *, max_workers: int | None = None) -> list:
    """Run `fn(*args)` for every args tuple at once on threads; return results or exceptions.

    The first calls (one per worker) start together behind a barrier, so the calls really
    overlap even when there are more calls than workers; the rest follow as workers free up.
    A barrier that broke (a worker never arrived) fails the race loudly instead of being
    counted among the refusals.
    """
    workers = min(max_workers or len(args_list), len(args_list))
    barrier = threading.Barrier(workers) if workers > 1 else None
    wrapped = _closing(fn, barrier, workers)
    outcomes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(wrapped, i, *args) for i, args in enumerate(args_list)]
        for future in futures:
            try:
                outcomes.append(future.result(timeout=120))
            except Exception as exc:  # the caller counts refusals by type
                outcomes.append(exc)
    never = [o for o in outcomes if isinstance(o, RaceNeverStarted)]
    if never:
        raise never[0]
    return outcomes


def wait_for_a_lock_waiter(timeout: float = 10, *, pid: int | None = None) -> str:
    """Block until some other session of this database (the backend `pid`, if given) waits
    for a lock; return its query. Works inside a transaction too (the activity snapshot is
    cleared before each look)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT query FROM pg_stat_activity, pg_stat_clear_snapshot() "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND (%s::int IS NULL OR pid = %s::int)",
                [pid, pid],
            )
            row = cursor.fetchone()
            if row:
                return row[0]
            time.sleep(0.01)
    raise AssertionError("nobody waited for a lock")


def while_held(hold: Callable, then: Callable, *, in_transaction: bool = False) -> dict:
    """`hold()` runs in a transaction that stays open; then `then()` runs on another thread
    (in a transaction of its own with `in_transaction`); once it waits for one of the held
    locks (`wait_for_a_lock_waiter`), the holder commits. What `then` got: `result` or
    `error`, and with `in_transaction`, `usable`: whether its transaction could still run a
    statement after."""
    from django.db import transaction

    held, release, seen = threading.Event(), threading.Event(), {}

    def holder():
        try:
            with transaction.atomic():
                hold()
                held.set()
                release.wait(timeout=20)
        finally:
            connections.close_all()

    def call():
        try:
            seen["result"] = then()
        except Exception as exc:
            seen["error"] = exc
        if in_transaction:
            try:
                connection.cursor().execute("SELECT 1")
                seen["usable"] = True
            except Exception:
                seen["usable"] = False

    def waiter():
        try:
            if not in_transaction:
                return call()
            with transaction.atomic():
                call()
        except Exception:
            pass  # an aborted transaction's rollback: what it saw is recorded
        finally:
            connections.close_all()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    try:
        assert held.wait(timeout=10), "the holder never took its locks"
        threads[1].start()
        wait_for_a_lock_waiter()  # the second call waits for one of the held locks
    finally:
        release.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(timeout=30)
    return seen
