"""`manage.py run_platform`: migrate, seed, then run every process of the platform in the
foreground: the web server, the task cluster, the combat orchestrator and, when REDIS_URL is
set, the connection gateway.

With DEBUG on and no local `.env` yet, it first writes one (a generated SECRET_KEY, DEBUG=1), so
every `manage.py` command run in the checkout afterwards finds the same settings. The cluster's
heartbeat is written before the children start, so `/health/` is not degraded while the
cluster's first scheduled beat is still a minute away.

Each child runs in a session of its own, so a Ctrl-C in the terminal reaches this process only:
it then sends SIGTERM to every child (each stops cleanly on it), waits up to --stop-timeout
seconds, and kills whatever is left of each child's process group. If any child exits on its
own, the others are stopped the same way and the command exits 1.

Unless PROMETHEUS_MULTIPROC_DIR is set already, the children share a temporary one (removed at
the end), so the web server's /metrics shows the task cluster's and the orchestrator's metrics
too, as in production.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError
from django.core.management.utils import get_random_secret_key

from nightstorm.tasks import heartbeat


def gateway_port_default() -> int:
    raw = os.environ.get("NIGHTSTORM_GATEWAY_PORT", "4000")
    try:
        port = int(raw)
    except ValueError:
        raise CommandError(f"NIGHTSTORM_GATEWAY_PORT must be an integer, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise CommandError(f"NIGHTSTORM_GATEWAY_PORT must be a TCP port, got {port}")
    return port


def write_env_file(path: Path) -> bool:
    """Write the embedded set-up's `.env` at `path` unless one exists; True if written.

    Created with O_EXCL and mode 0600: two starts at once cannot both write it, and the secret
    is readable by its owner only.
    """
    lines = [
        "# Written by `make run` (manage.py run_platform) for this checkout only; git-ignored.",
        "# The environment wins over these values. Delete the file to get a new secret.",
        "DEBUG=1",
        f"SECRET_KEY={get_random_secret_key()}",
    ]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return True


def describe(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        return signal.Signals(-code).name
    return f"exit {code}"


class Command(BaseCommand):
    help = (
        "Migrate, seed the world, then run the web server, the django-q2 cluster, the combat "
        "orchestrator and (with REDIS_URL) the gateway together; Ctrl-C or SIGTERM stops all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--no-seed", action="store_true", help="skip seed_world")
        parser.add_argument(
            "--gateway-port",
            type=int,
            default=None,
            help="gateway TCP port (default NIGHTSTORM_GATEWAY_PORT, else 4000); needs REDIS_URL",
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds the children get to stop after SIGTERM before they are killed",
        )

    def handle(self, *args, addr, no_seed, gateway_port, stop_timeout, **options):
        host = addr.rpartition(":")[0] or "127.0.0.1"
        if gateway_port is None:
            gateway_port = gateway_port_default()
        if settings.DEBUG and settings.ENV_FILE and write_env_file(Path(settings.ENV_FILE)):
            self.stdout.write(f"wrote {settings.ENV_FILE} (DEBUG on, a generated SECRET_KEY)")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        commands = get_commands()
        if not no_seed and "seed_world" in commands:
            call_command("seed_world", demo=True, stdout=self.stdout)
        if "ensure_schedules" in commands:
            call_command("ensure_schedules", stdout=self.stdout)
        login = self._ensure_admin()
        heartbeat()  # the cluster's own first beat is up to a minute away

        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        wanted = {
            "web": [*manage, "runserver", addr, "--noreload"],
            "cluster": [*manage, "qcluster"],
            "orchestrator": [*manage, "run_orchestrator", "--no-progress"],
        }
        if settings.REDIS_URL:
            wanted["gateway"] = [
                *manage,
                "run_gateway",
                "--port",
                str(gateway_port),
                "--host",
                host,
            ]

        signals: list[int] = []

        def on_signal(signum, frame):
            signals.append(signum)

        env, metrics_dir = dict(os.environ), None
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = tempfile.mkdtemp(prefix="nightstorm-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        children: dict[str, subprocess.Popen] = {}
        try:
            for name, argv in wanted.items():
                # A session of its own: the terminal's Ctrl-C reaches us, not the child.
                children[name] = subprocess.Popen(argv, start_new_session=True, env=env)
            self._announce(addr, host, gateway_port, login, children)
            while not signals and all(child.poll() is None for child in children.values()):
                time.sleep(0.2)
        finally:
            self._stop(children, stop_timeout, signals)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        ended = ", ".join(f"{name} {describe(c.returncode)}" for name, c in children.items())
        self.stdout.write(f"stopped ({ended})")
        if not signals:
            self.stderr.write("a process exited on its own; the others were stopped")
            sys.exit(1)

    def _announce(self, addr, host, gateway_port, login, children) -> None:
        self.stdout.write(self.style.SUCCESS(f"\nNightstorm is running: http://{addr}/"))
        self.stdout.write(f"  admin:    http://{addr}/admin/  ({login})")
        self.stdout.write(f"  API docs: http://{addr}/api/docs/    health: http://{addr}/health/")
        if "gateway" in children:
            self.stdout.write(f"  gateway:  {host}:{gateway_port} (telnet)")
        pids = ", ".join(f"{name} {child.pid}" for name, child in children.items())
        self.stdout.write(f"  processes: {pids}")
        self.stdout.write("  Ctrl-C stops them all.\n")
        self.stdout.flush()

    def _stop(self, children: dict, timeout: float, signals: list) -> None:
        """SIGTERM every child still running, wait, then kill what is left of each group.
        A second Ctrl-C while waiting kills at once."""
        seen = len(signals)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(signals) <= seen:
            if all(child.poll() is not None for child in children.values()):
                break
            time.sleep(0.1)
        for name, child in children.items():
            if child.poll() is None:
                self.stderr.write(f"{name} did not stop in time; killing it")
            # The child's group: the child if it is still there, and anything it left behind
            # (e.g. a worker of the cluster).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def _ensure_admin(self) -> str:
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return "log in with your superuser"
        if not settings.DEBUG:
            return "create a login with: manage.py createsuperuser"
        password = os.environ.get("NIGHTSTORM_ADMIN_PASSWORD", "admin")
        users.create_superuser("admin", "admin@localhost", password)
        return f"log in as admin / {password}"
