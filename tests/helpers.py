"""Helpers for tests that race real threads against a real database."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connections


def _closing(fn: Callable, barrier: threading.Barrier | None):
    def run(*args):
        try:
            if barrier is not None:
                barrier.wait(timeout=30)
            return fn(*args)
        finally:
            # Each thread has its own connection; close it or the test database cannot be
            # dropped at teardown.
            connections.close_all()

    return run


def race(fn: Callable, args_list: list[tuple], *, max_workers: int | None = None) -> list:
    """Run `fn(*args)` for every args tuple at once on threads; return results or exceptions.

    All threads start together behind a barrier (when they fit in the pool) so the calls
    really overlap.
    """
    workers = max_workers or len(args_list)
    barrier = threading.Barrier(len(args_list)) if workers >= len(args_list) else None
    wrapped = _closing(fn, barrier)
    outcomes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(wrapped, *args) for args in args_list]
        for future in futures:
            try:
                outcomes.append(future.result(timeout=120))
            except Exception as exc:  # the caller counts refusals by type
                outcomes.append(exc)
    return outcomes
