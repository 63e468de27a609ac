"""`manage.py drain_outbox`: run every due job of the retry queue now."""

from django.core.management.base import BaseCommand

from nightstorm import outbox


class Command(BaseCommand):
    help = "Run due retry-queue jobs now (the task cluster also does this every minute)."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=500)

    def handle(self, *args, limit, **options):
        counts = outbox.drain(limit=limit)
        self.stdout.write(
            f"outbox: {counts['done']} done, {counts['pending']} to retry, "
            f"{counts['dead']} dead, {counts['skipped']} skipped"
        )
