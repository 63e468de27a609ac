"""`/metrics` in Prometheus text format (open unless METRICS_TOKEN is set)."""

import hmac
import os

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from nightstorm.api.errors import json_403
from nightstorm.api.permissions import bearer_token


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@require_GET
def metrics_view(request):
    if settings.METRICS_TOKEN:
        token = bearer_token(request) or ""
        if not hmac.compare_digest(token, settings.METRICS_TOKEN):
            return json_403(request)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
