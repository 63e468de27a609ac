"""`manage.py run_orchestrator`: the game loop, a long-running process.

A tick at every NIGHTSTORM_COMBAT_TICK_SECONDS boundary (aligned to the epoch): start the
events whose registration closed, advance every due running combat by one turn, beat. Run as
many as you like (on one host or several): SKIP LOCKED and the `next_turn_at` guard keep every
combat at one turn per tick. SIGTERM or SIGINT finishes the tick in progress, then exits 0
with a one-line summary.
"""

import signal
import threading

from django.core.management.base import BaseCommand
from tqdm import tqdm

from game.storms.orchestrator import Orchestrator


class Command(BaseCommand):
    help = (
        "Run the combat orchestrator: a tick at every NIGHTSTORM_COMBAT_TICK_SECONDS boundary "
        "(start due events, advance every due combat once) until SIGTERM/SIGINT, which "
        "finishes the tick in progress. Safe beside other orchestrators."
    )

    def add_arguments(self, parser):
        parser.add_argument("--ticks", type=int, default=None, help="stop after N ticks")
        parser.add_argument("--parallelism", type=int, default=None, help="worker threads per tick")
        parser.add_argument("--batch-size", type=int, default=None, help="combats per transaction")
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar even on a terminal (run_platform shares its terminal)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=0,
            help="serve this process's Prometheus metrics on 127.0.0.1:PORT (0: off; with "
            "PROMETHEUS_MULTIPROC_DIR the web's /metrics aggregates them instead)",
        )

    def handle(self, *args, ticks, parallelism, batch_size, no_progress, metrics_port, **options):
        if metrics_port:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1")
        stop = threading.Event()
        received = []

        def on_signal(signum, frame):
            received.append(signal.Signals(signum).name)
            stop.set()  # the tick in progress finishes; the loop then leaves

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        orchestrator = Orchestrator(parallelism=parallelism, batch_size=batch_size, stop=stop)
        verbose = options.get("verbosity", 1) >= 2
        bar = tqdm(total=ticks, unit="tick", disable=no_progress or not self.stdout.isatty())

        def on_tick(report):
            bar.update(1)
            if report is None:
                bar.set_postfix_str("tick failed (see log)")
                return
            bar.set_postfix(
                advanced=report.advanced, finished=report.finished, failed=report.failed
            )
            if verbose:
                self.stdout.write(
                    f"tick: {report.advanced} advanced of {report.due} due, "
                    f"{report.finished} finished, "
                    f"{report.failed} failed, lateness max {report.lateness_max:.3f} s, "
                    f"{report.seconds:.3f} s"
                )

        try:
            if verbose:
                self.stdout.write(f"{orchestrator.name} started")
            summary = orchestrator.run(ticks=ticks, on_tick=on_tick)
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        why = f"; stopped by {received[0]}" if received else ""
        self.stdout.write(f"run_orchestrator: {summary.line()}{why}")
