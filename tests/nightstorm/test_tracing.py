"""OpenTelemetry: off by default, on with the standard variables; a contribution's trace holds
the request, its SQL and its Redis calls (in-memory exporter)."""

import pytest
from django.db import connections

from nightstorm import tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_switched_by_the_standard_variables(monkeypatch, env, on):
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.enabled() is on


def test_the_default_provider_exports_over_otlp(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightstorm-web")
    provider = tracing._default_provider()
    try:
        processor = provider._active_span_processor._span_processors[0]
        assert isinstance(processor.span_exporter, OTLPSpanExporter)
        assert provider.resource.attributes["service.name"] == "nightstorm-web"
    finally:
        provider.shutdown()


@pytest.fixture
def spans(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from nightstorm import rates

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Operation counts go to Redis on every call here (not once a second), so the
    # contribution's own request makes a Redis call to trace.
    monkeypatch.setattr(rates, "FLUSH_SECONDS", 0)
    connections.close_all()  # psycopg connections opened from now on are traced
    assert tracing.configure(provider)
    yield exporter
    tracing.unconfigure()
    connections.close_all()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_contributions_trace_spans_the_request_its_sql_and_its_redis_calls(spans, api_client):
    from opentelemetry.trace import SpanKind

    from jackpot import services
    from tests.jackpot.factories import PlayerFactory

    services.ensure_default_pools()
    player = PlayerFactory()
    api_client.force_authenticate(player.user)
    spans.clear()
    response = api_client.post(
        "/api/v1/jackpots/contributions/",
        {"bet": 5000},
        format="json",
        HTTP_IDEMPOTENCY_KEY="traced",
    )
    assert response.status_code == 201
    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.kind == SpanKind.SERVER]
    assert (
        request.attributes[
            "http.method" if "http.method" in request.attributes else "http.request.method"
        ]
        == "POST"
    )
    trace_id = request.context.trace_id
    by_id = {s.context.span_id: s for s in finished}

    def under_request(span) -> bool:
        while span.parent is not None:
            if span.parent.span_id == request.context.span_id:
                return True
            span = by_id.get(span.parent.span_id)
            if span is None:
                return False
        return False

    sql = [s for s in finished if s.attributes.get("db.system") == "postgresql"]
    redis = [s for s in finished if s.attributes.get("db.system") == "redis"]
    assert sql and redis, [s.name for s in finished]
    for span in sql + redis:
        assert span.context.trace_id == trace_id
        assert under_request(span), span.name
    statements = " ".join(str(s.attributes.get("db.statement", "")) for s in sql)
    assert "jackpot_contribution" in statements
