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


class RedisServers:
    """redis-server processes on free ports under one temporary directory."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="ns-redis-"))
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, *args: str, sentinel: bool = False, port: int | None = None) -> int:
        port = port or free_port()
        workdir = self.directory / str(port)
        workdir.mkdir(exist_ok=True)
        if sentinel:
            conf = workdir / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n" + "".join(args))
            argv = [ensure_tool("redis-sentinel", "redis-sentinel"), str(conf)]
        else:
            argv = [
                ensure_tool("redis-server", "redis-server"),
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                "--save", "", "--appendonly", "no", *args,
            ]  # fmt: skip
        log = open(workdir / "log", "wb")  # noqa: SIM115 (kept for the process)
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for(port)
        return port

    def wait_for(self, port: int, timeout: float = 20) -> None:
        import time

        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        log = (self.directory / str(port) / "log").read_text(errors="replace")
        raise RuntimeError(f"redis on {port} did not start: {log[-1000:]}")

    def signal(self, port: int, sig: int) -> None:
        self.procs[port].send_signal(sig)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


SERVICE = "nsmaster"


@dataclass
class SentinelSet:
    servers: RedisServers
    sentinels: list[int]

    def sentinel_client(self, port: int | None = None):
        import redis

        return redis.Redis(port=port or self.sentinels[0], socket_timeout=2, decode_responses=True)

    def ask(self, subcommand: str, port: int | None = None) -> list:
        """A SENTINEL subcommand's raw reply (redis-py's parsers of these vary by version)."""
        return self.sentinel_client(port).execute_command("SENTINEL", subcommand, SERVICE)

    def _peers(self, subcommand: str, port: int | None = None) -> list[dict]:
        return [dict(zip(row[::2], row[1::2], strict=True)) for row in self.ask(subcommand, port)]

    def master_port(self) -> int:
        return int(self.ask("GET-MASTER-ADDR-BY-NAME")[1])

    def replica_ports(self) -> list[int]:
        replicas = self._peers("REPLICAS")
        return [int(r["port"]) for r in replicas if "s_down" not in r["flags"]]

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Every sentinel knows the others and sees a healthy replica: a failover can happen."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = (
                all(len(self._peers("SENTINELS", port)) == 2 for port in self.sentinels)
                and self.replica_ports()
            )
            if ready:
                return
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not discover each other")

    def wait_for_new_master(self, old: int, timeout: float = 30) -> int:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port != old:
                return port
            time.sleep(0.05)
        raise TimeoutError("no failover happened")

    @property
    def url(self) -> str:
        return f"redis://{SERVICE}/0"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinels]


@pytest.fixture
def sentinel_set():
    """A Redis primary and replica watched by three Sentinels (quorum 2, a primary is down after
    one second). Function scope: each test fails it over its own way."""
    servers = RedisServers()
    try:
        primary = servers.start()
        servers.start("--replicaof", "127.0.0.1", str(primary))
        config = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        sentinels = [servers.start(config, sentinel=True) for _ in range(3)]
        sentinel_set = SentinelSet(servers, sentinels)
        sentinel_set.wait_until_ready()
        yield sentinel_set
    finally:
        servers.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import socket

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="session")
def redis_cluster():
    """Three Redis masters in cluster mode (`redis-cli --cluster create`, no replicas), and a
    redis-py cluster client on them. Session scope: every cluster test shares it."""
    import time

    import redis
    from redis.cluster import RedisCluster

    servers = RedisServers()
    try:
        ports = [
            servers.start(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                port=cluster_port(),
            )
            for _ in range(3)
        ]  # fmt: skip
        subprocess.run(
            [ensure_tool("redis-cli", "redis-tools"), "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in ports), "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [redis.Redis(port=port).cluster("info")["cluster_state"] for port in ports]
            if states == ["ok"] * 3:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the cluster did not come up")
        client = RedisCluster(host="127.0.0.1", port=ports[0], socket_timeout=5)
        yield client
        client.close()
    finally:
        servers.stop()


@dataclass
class Bouncer:
    port: int
    directory: Path

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def pgbouncer():
    """PgBouncer in transaction mode on a free port, in front of the PostgreSQL the tests use
    (its own config in a temporary directory; the server's config is not touched)."""
    import signal
    import socket
    import time

    from django.db import connection

    binary = ensure_tool("pgbouncer", "pgbouncer")
    db = connection.settings_dict
    directory = Path(tempfile.mkdtemp(prefix="ns-pgbouncer-"))
    port = free_port()
    (directory / "userlist.txt").write_text(f'"{db["USER"] or "postgres"}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory}/userlist.txt\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 40\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits\n"
        f"logfile = {directory}/pgbouncer.log\n"
    )
    # -q: log to the logfile only; a stderr pipe nobody drains would stall PgBouncer.
    argv = [binary, "-q", str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        subprocess.run(["chown", "-R", "postgres:", str(directory)], check=True)
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(
        argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (directory / "pgbouncer.log").read_text(errors="replace")
                    raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}") from None
                time.sleep(0.05)
        yield Bouncer(port, directory)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
