"""Real platform processes for tests: gunicorn workers, the orchestrator, a task cluster and
the gateway, all on the test database and Redis, and a small HTTP client to talk to them."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
SERVICE_TOKEN = "processes-service-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database the running test uses (pytest-django's test database)."""
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("the platform processes share PostgreSQL in these tests")
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Platform:
    """Starts and stops the platform's processes; every one is a peer on the same stores."""

    def __init__(self, tmp_path: Path, **extra_env):
        self.tmp_path = tmp_path
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "DEBUG": "0",
            "SECRET_KEY": "processes-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
            "SECURE_SSL_REDIRECT": "0",
            "STATIC_MANIFEST": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CONNECTIONS_SERVICE_TOKEN": SERVICE_TOKEN,
            "JACKPOT_SERVICE_TOKEN": SERVICE_TOKEN,
            "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
            "THROTTLE_ANON": "100000/min",
            "THROTTLE_AUTH": "100000/min",
            "THROTTLE_USER": "100000/min",
            "THROTTLE_REGISTER": "100000/min",
            "DB_CONN_MAX_AGE": "60",
            "Q_WORKERS": "1",
            **{k: str(v) for k, v in extra_env.items()},
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.web_port = None

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (kept for the process)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def manage(self, name: str, *args: str) -> subprocess.Popen:
        return self._start(name, [sys.executable, str(ROOT / "manage.py"), *args])

    def web(self, workers: int = 4) -> int:
        self.web_port = free_port()
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self._start(
            "web",
            [
                str(gunicorn),
                "nightstorm.wsgi:application",
                "-b",
                f"127.0.0.1:{self.web_port}",
                "-w",
                str(workers),
                "--graceful-timeout",
                "5",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/api/v1/zones/")[0] == 200:
                    return self.web_port
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"web did not come up: {self.log('web')[-2000:]}")

    def wait_for_port(self, port: int, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.procs[name].poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"{name} is not listening on {port}: {self.log(name)[-2000:]}")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def request(self, method: str, path: str, body=None, *, token=None, service=False, **headers):
        """One request on a fresh connection (so gunicorn may hand it to any worker)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        if token:
            headers["Authorization"] = f"Token {token}"
        if service:
            headers["Authorization"] = f"Bearer {SERVICE_TOKEN}"
        headers["Connection"] = "close"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            data = json.loads(raw) if raw and raw[:1] in b"{[" else raw
            return response.status, data, dict(response.getheaders())
        finally:
            conn.close()

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        for name in self.procs:
            self.signal(name, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait(timeout=5)
        return codes
