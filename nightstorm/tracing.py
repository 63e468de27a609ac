"""OpenTelemetry tracing of requests, SQL (psycopg) and Redis calls; off unless asked for.

Switched on by the standard variables, read here and by the SDK itself:
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, or
  `OTEL_TRACES_EXPORTER` set to `otlp` or `console`, turns it on (`none` keeps it off);
- `OTEL_SDK_DISABLED=true` keeps it off whatever else is set;
- the rest (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
  `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, …) is the SDK's, unchanged. Spans go out over OTLP/HTTP
  (protobuf), batched in a background thread.

`configure()` runs from `NightstormConfig.ready()`, so in every process: gunicorn workers
(after the fork: no `preload_app`), the task cluster, orchestrators, gateways. Log lines carry
the current `trace_id`/`span_id` (`nightstorm.logs`).
"""

import logging
import os

log = logging.getLogger(__name__)

_state = {"instrumented": False}


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _default_provider():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "nightstorm")})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure(tracer_provider=None) -> bool:
    """Instrument Django, psycopg and Redis once, sending spans to `tracer_provider` (default:
    the SDK's provider with the exporter the environment names). Returns whether it did."""
    if _state["instrumented"]:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    provider = tracer_provider or _default_provider()
    if tracer_provider is None:
        trace.set_tracer_provider(provider)
    # Django's middleware list gains the request span; it must run before the first request.
    DjangoInstrumentor().instrument(tracer_provider=provider)
    # New psycopg connections (and pools) get traced cursors; open ones stay as they are.
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _state["instrumented"] = True
    log.info("tracing on", extra={"provider": type(provider).__name__})
    return True


def unconfigure() -> None:
    """Undo `configure()` (tests)."""
    if not _state["instrumented"]:
        return
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    DjangoInstrumentor().uninstrument()
    PsycopgInstrumentor().uninstrument()
    RedisInstrumentor().uninstrument()
    _state["instrumented"] = False
