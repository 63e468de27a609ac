"""Fixtures of the fault tests: a private Redis a test stops and starts (never the shared one),
and a second PostgreSQL session that stops another session at a chosen statement with a row
lock, then terminates it there (`pg_terminate_backend`)."""

import time
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
from django.db import connection, connections

from connections.web import reset_connections
from nightstorm import locks
from nightstorm.settings import redis_cache
from tests.connections.test_outage import PrivateRedis


@pytest.fixture
def private_redis():
    """A redis-server of the test's own on a free port, without persistence: `stop()` and
    `start()` it at will (a restart comes back empty, on the same port)."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def redis_url(server: PrivateRedis) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
def on_private_redis(private_redis, settings):
    """This process's cache (throttles), distributed locks and connection store on the private
    Redis."""
    url = redis_url(private_redis)
    settings.REDIS_URL = url
    settings.CACHES = {"default": redis_cache(url, [])}
    locks._backends.clear()
    reset_connections(None)
    yield private_redis
    locks._backends.clear()
    reset_connections(None)


def _connect(**options) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        **options,
    )


class Blocker:
    """A session of its own that holds row locks, so that another session's statement waits
    for them; then finds that session (waiting on a lock we hold) and terminates it."""

    def __init__(self):
        self.holder = _connect()  # a transaction, open while the locks are held
        self.watcher = _connect(autocommit=True)  # pg_stat_activity is read fresh here
        self.pid = self.holder.info.backend_pid

    def lock(self, sql: str, params=()) -> None:
        """Run a locking statement (`SELECT … FOR UPDATE`) in the holding transaction."""
        self.holder.execute(sql, params).fetchall()

    def blocked(self) -> list[tuple[int, str]]:
        """(pid, query) of every session waiting on one of our locks."""
        return self.watcher.execute(
            "SELECT pid, query FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))",
            [self.pid],
        ).fetchall()

    def wait_for_blocked(self, count: int = 1, timeout: float = 30) -> list[tuple[int, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = self.blocked()
            if len(waiting) >= count:
                return waiting
            time.sleep(0.01)
        raise AssertionError(f"no session waited on our locks within {timeout} s")

    def terminate(self, pid: int) -> None:
        """pg_terminate_backend, then wait until the session is gone."""
        assert self.watcher.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        deadline = time.monotonic() + 10
        while self.watcher.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone():
            assert time.monotonic() < deadline, f"session {pid} outlived its termination"
            time.sleep(0.01)

    def release(self) -> None:
        self.holder.rollback()

    def close(self) -> None:
        self.holder.close()
        self.watcher.close()


@pytest.fixture
def blocker(in_thread):
    """Closed (its locks released) before `in_thread` waits for its threads, so a failed test
    never leaves a thread waiting on a lock nobody will release."""
    held = Blocker()
    yield held
    held.close()


@pytest.fixture
def in_thread():
    """`in_thread(fn, *args)`: a Future of `fn` run on a thread of its own (its own database
    connection, closed when it returns)."""
    pool = ThreadPoolExecutor(max_workers=4)

    def submit(fn, *args, **kwargs) -> Future:
        def run():
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()

        return pool.submit(run)

    yield submit
    pool.shutdown(wait=True)
