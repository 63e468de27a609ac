"""`make run` (`manage.py run_platform`) as a real process on the embedded default (SQLite):
it starts the web server, the task cluster, the orchestrator (and the gateway with Redis), and
a SIGTERM or a Ctrl-C (SIGINT to run_platform alone, as the children live in sessions of their
own) stops every one of them: no process outlives it."""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(port: int) -> dict | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health/")
        return json.loads(conn.getresponse().read())
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def orchestrator_metrics(port: int) -> dict[str, float]:
    """The orchestrator's own series as the web server's /metrics shows them."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    wanted = ("nightstorm_orchestrator_last_beat_timestamp_seconds", "nightstorm_game_tick_seconds")
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in wanted or s.name == "nightstorm_game_tick_seconds_count"
    }


def alive_in_groups(pgids: set[int]) -> list[str]:
    """Processes (not zombies) whose process group is one of `pgids`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            found.append(f"{entry.name} {stat[:80]}")
    return found


class RunPlatform:
    def __init__(self, tmp_path: Path, *, redis_url: str = "", seed: bool = False, **env_vars):
        self.port = free_port()
        self.gateway_port = free_port()
        self.out = tmp_path / "run_platform.log"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'platform.sqlite3'}",
            "REDIS_URL": redis_url,
            "DEBUG": "0",
            "SECRET_KEY": "run-platform-test-secret-key-0123456789-abcdefghijklmnop",
            "SECURE_SSL_REDIRECT": "0",
            "STATIC_MANIFEST": "0",
            "Q_WORKERS": "1",
            "NIGHTSTORM_COMBAT_TICK_SECONDS": "1",
            "NIGHTSTORM_GATEWAY_PORT": str(self.gateway_port),
            "NIGHTSTORM_ENV_FILE": "",  # the checkout's .env is the developer's, not the test's
            **env_vars,
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "run_platform",
                "--addr",
                f"127.0.0.1:{self.port}",
                *([] if seed else ["--no-seed"]),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.out.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.out.read_text(errors="replace")

    def children(self) -> dict[str, int]:
        found = re.search(r"processes: (.+)", self.log())
        assert found, self.log()[-3000:]
        return {name: int(pid) for name, pid in (p.split() for p in found[1].split(", "))}

    def wait_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"run_platform exited: {self.log()[-3000:]}"
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}: {self.log()[-3000:]}")

    def kill_everything(self):
        found = re.search(r"processes: (.+)", self.log())
        pids = [int(p.split()[1]) for p in found[1].split(", ")] if found else []
        for pgid in [self.proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def run_platform(tmp_path):
    started = []

    def start(**kwargs) -> RunPlatform:
        started.append(RunPlatform(tmp_path, **kwargs))
        return started[-1]

    yield start
    for platform in started:
        if platform.proc.poll() is None:
            platform.kill_everything()
            platform.proc.wait(timeout=10)


def up_with_an_orchestrator(platform: RunPlatform) -> dict:
    def orchestrator_alive():
        body = health(platform.port)
        return body if body and body["checks"]["orchestrator"]["state"] == "ok" else None

    return platform.wait_until(orchestrator_alive, 90, "/health/ with a live orchestrator")


def assert_all_stopped(platform: RunPlatform, children: dict[str, int]) -> None:
    for name, pid in children.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by run_platform, not left running
        assert not os.path.exists(f"/proc/{pid}"), name
    assert alive_in_groups({platform.proc.pid, *children.values()}) == []


@pytest.mark.parametrize(
    ("redis", "sig"),
    [
        pytest.param(False, signal.SIGTERM, id="embedded-sigterm"),
        pytest.param(True, signal.SIGINT, id="redis-ctrl-c", marks=pytest.mark.redis),
    ],
)
def test_run_platform_starts_every_process_and_stops_them_all(run_platform, redis, sig):
    platform = run_platform(redis_url=settings.REDIS_URL if redis else "")
    body = up_with_an_orchestrator(platform)
    children = platform.children()
    expected = {"web", "cluster", "orchestrator"} | ({"gateway"} if redis else set())
    assert set(children) == expected
    assert body["checks"]["orchestrator"]["orchestrators"][0]["alive"]
    if redis:
        # The gateway starts beside the others: it may bind its port after the orchestrator's
        # first beat.
        platform.wait_until(lambda: listens(platform.gateway_port), 30, "the gateway's port")
    # The web's /metrics aggregates the other processes through the shared directory.
    seen = platform.wait_until(
        lambda: (
            (m := orchestrator_metrics(platform.port))
            and m.get("nightstorm_orchestrator_last_beat_timestamp_seconds", 0) > 0
            and m
        ),
        30,
        "the orchestrator's metrics at the web's /metrics",
    )
    assert seen["nightstorm_game_tick_seconds_count"] >= 1

    os.kill(platform.proc.pid, sig)  # to run_platform alone, as a terminal's Ctrl-C would be
    assert platform.proc.wait(timeout=40) == 0, platform.log()[-3000:]
    assert "stopped (" in platform.log()
    assert_all_stopped(platform, children)


def test_a_child_that_exits_on_its_own_stops_the_others(run_platform):
    platform = run_platform()
    up_with_an_orchestrator(platform)
    children = platform.children()
    os.kill(children["orchestrator"], signal.SIGKILL)
    assert platform.proc.wait(timeout=40) == 1, platform.log()[-3000:]
    assert "orchestrator SIGKILL" in platform.log()
    assert_all_stopped(platform, children)
