"""The platform's processes as a deployment runs them (README's "Serving in production"):
gunicorn with `deploy/gunicorn.conf.py`, the task cluster, the orchestrator and the gateway,
each in a session of its own with its log in the run's directory, stopped with SIGTERM."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    def __init__(self, env: dict[str, str], logs: Path, *, web_workers: int, web_threads: int):
        self.env = env
        self.database = env["DATABASE_URL"].rsplit("/", 1)[-1].split("?")[0]
        self.logs = logs
        self.web_workers, self.web_threads = web_workers, web_threads
        self.procs: dict[str, subprocess.Popen] = {}
        self.web_port = free_port()
        self.gateway_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"

    def _start(self, name: str, argv: list[str], **extra_env) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (kept for the process)
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 90) -> None:
        """The background processes first, then the web; returns when the web is ready and
        the gateway listens."""
        manage = [sys.executable, str(ROOT / "manage.py")]
        self._start("qcluster", [*manage, "qcluster"])
        self._start("orchestrator", [*manage, "run_orchestrator", "--no-progress"])
        self._start(
            "gateway",
            [*manage, "run_gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port)],
        )
        self._start(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"),
                "--threads",
                str(self.web_threads),
                "nightstorm.wsgi:application",
            ],
            GUNICORN_BIND=f"127.0.0.1:{self.web_port}",
            WEB_CONCURRENCY=str(self.web_workers),
        )
        deadline = time.monotonic() + timeout
        self._wait(deadline, "web", self._web_ready)
        self._wait(deadline, "gateway", self._gateway_listens)

    def _web_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.web_url}/health/ready/", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def _gateway_listens(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.gateway_port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait(self, deadline: float, name: str, ready) -> None:
        while time.monotonic() < deadline:
            if ready():
                return
            for other, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{other} exited at start:\n{self.tail(other)}")
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not come up:\n{self.tail(name)}")

    def cpu_seconds(self) -> dict[tuple[str, int], float]:
        """CPU time (user + system) used so far by each live process, keyed (kind, pid): the
        process groups we started (gunicorn's workers with their master, the cluster's workers,
        …), the PostgreSQL backends of the run's database (`postgres`), and the whole machine
        (`machine`, from /proc/stat). Linux only; empty elsewhere."""
        if not Path("/proc/stat").exists():
            return {}
        tick = os.sysconf("SC_CLK_TCK")
        groups = {proc.pid: name for name, proc in self.procs.items()}
        used: dict[tuple[str, int], float] = {}
        backend = f" {self.database} ".encode()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
                name = groups.get(int(fields[2]))  # the process group
                if name is None and stat.read_text().startswith(f"{stat.parent.name} (postgres)"):
                    title = (stat.parent / "cmdline").read_bytes()
                    name = "postgres" if backend in title else None
            except OSError:
                continue  # gone meanwhile
            if name is not None:
                used[name, int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
        busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        # user nice system idle iowait irq softirq steal: all but idle and iowait
        used["machine", 0] = sum(int(busy[i]) for i in (0, 1, 2, 5, 6, 7)) / tick
        return used

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def tracebacks(self) -> dict[str, int]:
        """Tracebacks each process logged (a JSON log line carries one in its `exc_info`)."""
        found = {}
        for name in self.procs:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            found[name] = text.count("Traceback (most recent call last)")
        return found

    def stop(self, name: str | None = None, timeout: float = 30) -> dict[str, int | None]:
        """SIGTERM to each process (as a supervisor does; each stops its own children), then
        SIGKILL to what is left of its process group after `timeout`."""
        names = [name] if name else list(self.procs)
        for n in names:
            if self.procs[n].poll() is None:
                self.procs[n].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for n in names:
            proc = self.procs[n]
            try:
                codes[n] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[n] = None  # did not stop in time
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        return codes
