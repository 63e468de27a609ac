"""The race and API tests through PgBouncer in transaction mode, with the settings the README
gives for it: no server-side binding, no prepared statements and no named cursors (a server
connection changes between transactions), no persistent connections held by the app.

They run in a pytest subprocess whose `DATABASE_URL` points at PgBouncer; its test database is
its own (`<ours>_pgbouncer`), created through PgBouncer and dropped here afterwards.
"""

import os
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.processes import ROOT

pytestmark = [pytest.mark.scaleout, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# Row locks, SKIP LOCKED, optimistic retries, idempotency claims, the money paths' API.
SELECTED = [
    "tests/jackpot/test_races.py",
    "tests/nightstorm/test_idempotency.py",
    "tests/game/test_registration.py",
    "tests/game/test_travel_locking.py",
    "tests/jackpot/test_api.py",
]


def drop_database(name: str) -> None:
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_race_and_api_tests_pass_through_pgbouncer_in_transaction_mode(pgbouncer, tmp_path):
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[1] + "_pgbouncer"
    drop_database(f"test_{base}")
    env = {
        **os.environ,
        "DATABASE_URL": pgbouncer.url(base),
        "REDIS_URL": settings.REDIS_URL,
        "DB_SERVER_SIDE_BINDING": "0",
        "DB_PREPARE_THRESHOLD": "0",
        "DB_DISABLE_SERVER_SIDE_CURSORS": "1",
        "DB_CONN_MAX_AGE": "0",
    }
    try:
        # --reuse-db: Django would drop its test database at the end, which PgBouncer's idle
        # server connections to it forbid; it is dropped below, once PgBouncer lets go.
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reuse-db",
             "-m", "not scaleout", *SELECTED],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in result.stdout and " failed" not in result.stdout
        # The subprocess really went through PgBouncer: its log shows the logins.
        assert "login attempt" in (pgbouncer.directory / "pgbouncer.log").read_text()
    finally:
        drop_database(f"test_{base}")
