"""`manage.py run_gateway --port N [--host 127.0.0.1]`: the telnet-style connection gateway.

The gateway process is the one that keeps connections in memory (`get_service()`); the players'
logins are checked by `connections.players.authenticate_player`, handed to the gateway here so
the gateway code knows nothing of the game.
"""

import asyncio
import contextlib
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connections.gateway import Gateway
from connections.players import authenticate_player
from connections.service import get_service
from connections.state import StoreUnavailable
from nightstorm.metrics import DEPENDENCY_PROBE_SECONDS, DependencyProbe
from nightstorm.metrics_export import metrics_port as metrics_port_setting
from nightstorm.metrics_export import start_process_metrics


class Command(BaseCommand):
    help = (
        "Serve game clients over a line-oriented TCP protocol (connect/who/quit). Loads the "
        "connection store from Redis first (reconciliation, pruning idle connections); stops "
        "cleanly on SIGTERM/SIGINT, disconnecting its clients from the store."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, required=True, help="TCP port (0 = any free).")
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
        parser.add_argument("--max-clients", type=int, default=settings.CONNECTIONS_MAX_CLIENTS)
        parser.add_argument(
            "--idle-timeout",
            type=float,
            default=settings.CONNECTIONS_IDLE_TIMEOUT_SECONDS,
            help="Seconds of silence before a client is closed.",
        )
        parser.add_argument("--workers", type=int, default=8, help="Store/auth thread pool size.")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve this process's Prometheus metrics on NIGHTSTORM_METRICS_ADDR:PORT "
            "(default NIGHTSTORM_METRICS_PORT, else 0: off)",
        )

    def handle(
        self, *args, port, host, max_clients, idle_timeout, workers, metrics_port, **options
    ):
        start_process_metrics(metrics_port_setting(metrics_port))
        service = get_service()
        try:
            report = service.reconcile(idle_timeout=idle_timeout)
        except StoreUnavailable as exc:
            raise CommandError(f"cannot load the connection store: {exc.__cause__}") from exc
        self.stdout.write(str(report))
        gateway = Gateway(
            service,
            authenticate=authenticate_player,
            host=host,
            port=port,
            max_clients=max_clients,
            idle_timeout=idle_timeout,
            workers=workers,
        )
        asyncio.run(self._serve(gateway))
        service.close()
        self.stdout.write(f"gateway on {host}:{gateway.port} stopped")

    async def _serve(self, gateway: Gateway) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await gateway.start()
        self.stdout.write(f"gateway listening on {gateway.host}:{gateway.port}")
        self.stdout.flush()
        probes = asyncio.create_task(self._probe(stop))
        await stop.wait()
        await probes
        await gateway.shutdown()

    async def _probe(self, stop: asyncio.Event) -> None:
        """Refresh the Redis and database gauges (in a thread: the ORM is synchronous)."""
        probe = DependencyProbe(interval=0)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await loop.run_in_executor(None, probe.maybe_run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DEPENDENCY_PROBE_SECONDS)
