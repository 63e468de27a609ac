"""gunicorn settings of the web process:

    gunicorn -c deploy/gunicorn.conf.py nightstorm.wsgi:application

Environment: GUNICORN_BIND (default 0.0.0.0:8000), WEB_CONCURRENCY (workers, default 4),
GUNICORN_TIMEOUT (seconds, default 30), PROMETHEUS_MULTIPROC_DIR (see below), LOG_FORMAT.

With PROMETHEUS_MULTIPROC_DIR (an empty directory per host, e.g. on tmpfs, shared with the
task cluster, orchestrators and gateways of the host), every worker writes its metrics there
and `/metrics` aggregates them. A worker that exits (recycled, crashed, killed by the timeout)
has its per-process gauges removed by `child_exit`; the master sweeps what dead processes left
when it starts.

No `preload_app`: each worker imports the application after the fork, so its database
connections, Redis pool and the OpenTelemetry exporter's thread are its own.
"""

import os

from nightstorm.metrics_export import (
    mark_dead,
    multiprocess_dir,
    multiprocess_module,
    sweep_dead_processes,
)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
preload_app = False
# Our own request log (`nightstorm.request`, JSON with the request id) replaces the access log.
accesslog = None
errorlog = "-"

# gunicorn's own lines (boot, worker timeouts, signals) in the platform's format: JSON unless
# LOG_FORMAT=plain or DEBUG is on, as in nightstorm/settings.py.
_debug = os.environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
if os.environ.get("LOG_FORMAT", "plain" if _debug else "json") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "nightstorm.logs.json_formatter"}},
        "handlers": {
            "json_stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        # Replaces gunicorn's defaults key by key: its root and loggers name its handlers.
        "root": {"level": "INFO", "handlers": ["json_stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["json_stderr"], "propagate": False}
        },
    }


def on_starting(server):
    path = multiprocess_dir()
    if path:
        multiprocess_module()  # imported now, not first in child_exit's signal handler
        os.makedirs(path, exist_ok=True)
        dead = sweep_dead_processes()
        server.log.info("metrics directory %s (forgot %d dead processes)", path, len(dead))


def child_exit(server, worker):
    mark_dead(worker.pid)
