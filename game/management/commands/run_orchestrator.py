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

from game.metrics import ORCHESTRATOR_BEAT
from game.storms.orchestrator import Orchestrator
from nightstorm.metrics import DependencyProbe
from nightstorm.metrics_export import metrics_port as metrics_port_setting
from nightstorm.metrics_export import start_process_metrics


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
            default=None,
            help="serve this process's Prometheus metrics on NIGHTSTORM_METRICS_ADDR:PORT "
            "(default NIGHTSTORM_METRICS_PORT, else 0: off; with PROMETHEUS_MULTIPROC_DIR the "
            "web's /metrics aggregates them)",
        )

    def handle(self, *args, ticks, parallelism, batch_size, no_progress, metrics_port, **options):
        start_process_metrics(metrics_port_setting(metrics_port))
        probe = DependencyProbe()
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
            probe.maybe_run()  # the Redis and database gauges, from this host too
            bar.update(1)
            if report is None:
                bar.set_postfix_str("tick failed (see log)")
                return
            ORCHESTRATOR_BEAT.set_to_current_time()
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
