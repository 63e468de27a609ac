"""`manage.py process_combats`: one orchestrator tick now (`--loop`/`--ticks N`: the
orchestrator, as `manage.py run_orchestrator`)."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from game.storms.events import start_due_events
from game.storms.orchestrator import RunSummary, process_active_combats


class Command(BaseCommand):
    help = (
        "Start events whose registration closed and advance every running combat whose turn "
        "is due by one turn, once. --loop runs the orchestrator (manage.py run_orchestrator) "
        "until SIGTERM/SIGINT; --ticks N stops it after N ticks. Safe beside orchestrators."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="run_orchestrator")
        parser.add_argument("--ticks", type=int, default=None, help="run_orchestrator --ticks N")
        parser.add_argument("--parallelism", type=int, default=None, help="worker threads")

    def handle(self, *args, loop=False, ticks=None, parallelism=None, **options):
        if loop or ticks:
            call_command(
                "run_orchestrator",
                ticks=ticks,
                parallelism=parallelism,
                stdout=self.stdout,
                verbosity=options.get("verbosity", 1),
            )
            return
        summary = RunSummary(events_started=0)
        started = start_due_events()
        summary.add(process_active_combats(parallelism=parallelism))
        summary.events_started = started
        self.stdout.write(f"process_combats: {summary.line()}")
