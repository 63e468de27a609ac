"""`manage.py ensure_schedules`: one correct Nightstorm schedule per zone, no orphans; the
game's recurring schedules as declared, retired ones deleted."""

from django.core.management.base import BaseCommand, CommandError

from game.storms import schedules
from nightstorm.errors import LockUnavailable


class Command(BaseCommand):
    help = (
        "Create missing Nightstorm schedules, repair wrong ones, delete orphans; print what "
        "changed. Safe to run while the cluster runs, and from two places at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait", type=float, default=30.0, help="seconds to wait for a check running elsewhere"
        )

    def handle(self, *args, wait, **options):
        try:
            report = schedules.check_schedules(wait=wait)
        except LockUnavailable as exc:
            raise CommandError(str(exc)) from exc
        for line in report.changes:
            self.stdout.write(f"  {line}")
        self.stdout.write(report.summary())
        for problem in schedules.problems():
            self.stdout.write(self.style.WARNING(f"  still wrong: {problem}"))
