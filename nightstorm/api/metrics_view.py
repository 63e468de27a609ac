"""`/metrics` in Prometheus text format (open unless METRICS_TOKEN is set).

With PROMETHEUS_MULTIPROC_DIR, the answer aggregates every process of this host that writes
there (gunicorn's workers, the task cluster, orchestrators, gateways); each scrape first forgets
the per-process gauges of processes that died (`nightstorm.metrics.sweep_dead_processes`).
"""

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from nightstorm.api.errors import json_403, json_methods
from nightstorm.api.permissions import bearer_token, tokens_match
from nightstorm.metrics_export import multiprocess_dir, sweep_dead_processes


def _registry():
    if multiprocess_dir():
        from prometheus_client import multiprocess

        sweep_dead_processes()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@json_methods("GET")
def metrics_view(request):
    if settings.METRICS_TOKEN and not tokens_match(bearer_token(request), settings.METRICS_TOKEN):
        return json_403(request)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
