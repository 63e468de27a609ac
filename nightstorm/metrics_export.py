"""How a process's metrics leave it: the multiprocess directory's bookkeeping and a port of
its own (see `nightstorm.metrics`). Imports neither Django nor any metric at module level, so
gunicorn's master process (`deploy/gunicorn.conf.py`) can use it without creating files of its
own in the directory.
"""

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def multiprocess_module():
    """prometheus_client's multiprocess module. gunicorn's master imports it when it starts
    (`on_starting`): `child_exit` runs in its SIGCHLD handler, and a first import there can be
    interrupted by the next worker's exit, whose handler then finds the module half
    initialised (a shutdown that exits 1)."""
    from prometheus_client import multiprocess

    return multiprocess


def mark_dead(pid: int) -> None:
    """Forget process `pid`'s per-process gauges in the multiprocess directory (its counters
    and histograms stay: they are part of the totals)."""
    if multiprocess_dir():
        multiprocess_module().mark_process_dead(pid)


def sweep_dead_processes() -> list[int]:
    """Mark dead every process of this host whose live gauges are still in the directory
    (one SIGKILLed, or a worker the task cluster replaced). The directory is per host, so the
    pids are this host's."""
    path = multiprocess_dir()
    if not path:
        return []
    dead = set()
    for entry in Path(path).iterdir():
        match = _LIVE_FILE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_dead(pid)
    return sorted(dead)


def metrics_port(option: int | None) -> int:
    """The port a long-running command serves its metrics on: its option, else
    NIGHTSTORM_METRICS_PORT, else 0 (off)."""
    from django.core.management.base import CommandError

    if option is not None:
        return option
    raw = os.environ.get("NIGHTSTORM_METRICS_PORT", "") or "0"
    try:
        port = int(raw)
    except ValueError:
        raise CommandError(f"NIGHTSTORM_METRICS_PORT must be an integer, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise CommandError(f"NIGHTSTORM_METRICS_PORT must be a TCP port, got {port}")
    return port


def serve_process_metrics(port: int) -> None:
    """Serve this process's registry on NIGHTSTORM_METRICS_ADDR (default 127.0.0.1):`port`."""
    from prometheus_client import start_http_server

    addr = os.environ.get("NIGHTSTORM_METRICS_ADDR", "127.0.0.1")
    start_http_server(port, addr=addr)
    log.info("metrics served", extra={"addr": addr, "port": port})


def start_process_metrics(port: int) -> None:
    """What a long-running command calls first: serve its metrics on `port` (when not 0) and,
    with a multiprocess directory, forget dead processes now and this one at a clean exit."""
    import atexit

    if port:
        serve_process_metrics(port)
    if multiprocess_dir():
        sweep_dead_processes()
        atexit.register(mark_dead, os.getpid())
