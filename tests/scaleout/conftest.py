"""Throwaway servers for the scale-out tests: a PostgreSQL primary with a streaming replica,
PgBouncer, a Redis primary/replica watched by three Sentinels, a three-master Redis Cluster.

Each listens on free ports chosen now, keeps its files in a temporary directory, and is torn
down after the tests that use it (module scope: a module pays for the set-up once). The
scripts they run live in `scripts/`; missing Debian packages are installed with apt-get when
the tests run as root, otherwise the tests are skipped saying which tool is missing.
"""

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.processes import ROOT, free_port

SCRIPTS = ROOT / "scripts"


def ensure_tool(command: str, package: str) -> str:
    """The path of `command`, installing `package` with apt-get first when root and missing."""
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin")
    if path is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
        path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{command} (Debian package {package}) is not installed and we are not root")
    return path


@dataclass
class PostgresPair:
    primary_url: str
    replica_url: str
    directory: Path

    def sql(self, url: str, query: str, params=None) -> list:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def on_primary(self, query: str, params=None) -> list:
        return self.sql(self.primary_url, query, params)

    def on_replica(self, query: str, params=None) -> list:
        return self.sql(self.replica_url, query, params)

    def pause_replay(self) -> None:
        self.on_replica("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.on_replica("SELECT pg_wal_replay_resume()")

    def wait_for_replica(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        import time

        (target,) = self.on_primary("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (done,) = self.on_replica("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])[0]
            if done:
                return
            time.sleep(0.05)
        raise TimeoutError("the replica did not catch up")


@pytest.fixture(scope="module")
def pg_replica():
    """A fresh primary + streaming replica (`scripts/pg_replica.sh`) with a `nightstorm`
    database, migrated by the caller."""
    ensure_tool("pg_basebackup", "postgresql")
    directory = Path(tempfile.mkdtemp(prefix="ns-pg-"))
    primary, replica = free_port(), free_port()
    script = str(SCRIPTS / "pg_replica.sh")
    subprocess.run([script, "start", str(directory), str(primary), str(replica)], check=True)
    try:
        base = "postgres://postgres@127.0.0.1:{}/{}"
        pair = PostgresPair(
            base.format(primary, "nightstorm"), base.format(replica, "nightstorm"), directory
        )
        pair.sql(base.format(primary, "postgres"), "CREATE DATABASE nightstorm")
        yield pair
    finally:
        subprocess.run([script, "stop", str(directory)], check=False)
