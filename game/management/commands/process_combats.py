"""`manage.py process_combats [--loop] [--ticks N]`: run the combat orchestrator."""

import signal
import threading

from django.core.management.base import BaseCommand
from tqdm import tqdm

from game.combat_turns import process_active_combats, run_ticks
from game.nightstorms import start_due_events


class Command(BaseCommand):
    help = (
        "Advance every running combat whose turn is due by one turn (and start events whose "
        "registration closed). --loop keeps ticking every NIGHTSTORM_COMBAT_TICK_SECONDS until "
        "SIGTERM/SIGINT; --ticks N stops after N ticks. Safe beside other orchestrators."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="tick until stopped")
        parser.add_argument("--ticks", type=int, default=None, help="stop after N ticks")
        parser.add_argument("--parallelism", type=int, default=None, help="worker threads")

    def handle(self, *args, loop=False, ticks=None, parallelism=None, **options):
        if not loop and not ticks:
            start_due_events()
            report = process_active_combats(parallelism=parallelism)
            reports = [report]
        else:
            stop = threading.Event()

            def on_signal(signum, frame):
                stop.set()  # finish the tick in progress, then leave

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, on_signal)
            bar = tqdm(total=ticks, unit="tick", disable=not self.stdout.isatty())

            def on_tick(r):
                bar.update(1)
                bar.set_postfix(advanced=r.advanced, finished=r.finished, failed=r.failed)

            reports = run_ticks(ticks=ticks, stop=stop, on_tick=on_tick)
            bar.close()
        self.stdout.write(
            f"process_combats: {len(reports)} tick(s), "
            f"{sum(r.advanced for r in reports)} turn(s) advanced, "
            f"{sum(r.finished for r in reports)} combat(s) finished, "
            f"{sum(r.failed for r in reports)} failed"
        )
