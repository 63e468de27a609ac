"""`/metrics` in Prometheus text format (open unless METRICS_TOKEN is set)."""

import os

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from nightstorm.api.errors import json_403, json_methods
from nightstorm.api.permissions import bearer_token, tokens_match


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@json_methods("GET")
def metrics_view(request):
    if settings.METRICS_TOKEN and not tokens_match(bearer_token(request), settings.METRICS_TOKEN):
        return json_403(request)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
