"""`manage.py run_platform`: migrate, seed, then run the web server and the task cluster.

Both run as child processes in the foreground; Ctrl-C (or SIGTERM) stops both, and if either
exits on its own the other is stopped too.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, seed the world, then run the web server and the django-q2 cluster together."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--no-seed", action="store_true", help="skip seed_world")

    def handle(self, *args, addr, no_seed, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        commands = get_commands()
        if not no_seed and "seed_world" in commands:
            call_command("seed_world", demo=True, stdout=self.stdout)
        if "ensure_schedules" in commands:
            call_command("ensure_schedules", stdout=self.stdout)
        login = self._ensure_admin()

        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = [
            subprocess.Popen([*manage, "runserver", addr, "--noreload"]),
            subprocess.Popen([*manage, "qcluster"]),
        ]
        self.stdout.write(self.style.SUCCESS(f"\nNightstorm is running: http://{addr}/"))
        self.stdout.write(f"  admin:    http://{addr}/admin/  ({login})")
        self.stdout.write(f"  API docs: http://{addr}/api/docs/    health: http://{addr}/health/")
        self.stdout.write("  Ctrl-C stops the web server and the task cluster.\n")

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        codes = [child.returncode for child in children]
        self.stdout.write(f"stopped (web exit {codes[0]}, cluster exit {codes[1]})")
        if not stopping and any(codes):
            sys.exit(1)

    def _ensure_admin(self) -> str:
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return "log in with your superuser"
        if not settings.DEBUG:
            return "create a login with: manage.py createsuperuser"
        password = os.environ.get("NIGHTSTORM_ADMIN_PASSWORD", "admin")
        users.create_superuser("admin", "admin@localhost", password)
        return f"log in as admin / {password}"
