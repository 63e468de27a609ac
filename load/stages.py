"""One stage of the ramp: locust, headless, in its own process (gevent), for a fixed time."""

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")


@dataclass
class Stage:
    index: int
    users: int
    seconds: float
    p99_ms: float
    html: Path
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None
    log: str = ""
    loadavg: float = 0.0
    cpu: dict = field(default_factory=dict)

    @property
    def total(self) -> dict:
        return self.summary.get("total", {})

    @property
    def server_errors(self) -> int:
        """Responses with a 5xx status in the measured window."""
        return sum(
            n
            for statuses in self.summary.get("statuses", {}).values()
            for status, n in statuses.items()
            if status.startswith("5")
        )

    @property
    def failures(self) -> int:
        return self.total.get("failures", 0)

    @property
    def measured(self) -> bool:
        return bool(self.summary) and self.total.get("requests", 0) > 0

    @property
    def passed(self) -> bool:
        return (
            self.measured
            and self.failures == 0
            and self.server_errors == 0
            and self.total["p99"] <= self.p99_ms
        )


def run_stage(
    *,
    index: int,
    users: int,
    seconds: float,
    host: str,
    plan: Path,
    out: Path,
    p99_ms: float,
    cpu_seconds=dict,
) -> Stage:
    name = f"stage-{index}-{users}u"
    stage = Stage(index, users, seconds, p99_ms, html=out / f"{name}.html")
    summary = out / f"{name}.json"
    spawn_rate = max(4.0, users / 3)
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{round(seconds)}s",
        "--host",
        host,
        "--reset-stats",
        "--only-summary",
        "--csv",
        str(out / name),
        "--html",
        str(stage.html),
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "LOAD_PLAN": str(plan),
        "LOAD_SUMMARY": str(summary),
    }
    log_path = out / "logs" / f"{name}-locust.log"
    before, children = cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120, check=False
        )
    wall = time.monotonic() - started
    stage.loadavg = os.getloadavg()[0]  # the machine's 1-minute load at the stage's end
    after = cpu_seconds()
    # Cores each kind of process kept busy over the stage (spawning included): per process,
    # what it used since the first reading (all of it if it started since; a process that
    # exited during the stage takes its last share with it); locust's from the resources of
    # the child just waited for.
    cpu: dict[str, float] = {}
    for (kind, pid), seconds_used in after.items():
        cpu[kind] = cpu.get(kind, 0.0) + (seconds_used - before.get((kind, pid), 0.0)) / wall
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["locust"] = (done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime) / wall
    machine = cpu.pop("machine", None)
    if machine is not None:
        # Everything else on the machine: other work sharing its cores.
        cpu["others"] = max(0.0, machine - sum(cpu.values()))
    stage.cpu = cpu
    stage.exit_code = proc.returncode
    stage.log = log_path.read_text(errors="replace")[-3000:]
    if summary.exists():
        stage.summary = json.loads(summary.read_text())
    return stage
