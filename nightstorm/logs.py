"""Structured logs: the context every line carries, the two formats, audit events.

Every record gets `request_id` (set by `nightstorm.middleware.RequestIdMiddleware`, `-`
outside a request) and, inside a service call wrapped by `nightstorm.operations.operation`,
`operation`, `operation_id` and `player`; with tracing on, `trace_id` and `span_id` too. The
context lives in `contextvars`, so threads and asyncio tasks keep their own.

Formats (LOG_FORMAT): `json` (one object per line, python-json-logger; the default when DEBUG
is off) for collectors, `plain` (`make run`, DEBUG on) for people: the message then the
structured fields as `key=value`.

Audit events (`audit(...)`) go to the `nightstorm.audit` logger at INFO whatever an app's own
log level is: wins, adjustments and configuration changes are recorded even when
JACKPOT_LOG_LEVEL quiets the jackpot app.
"""

import logging
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
operation_context: ContextVar[dict | None] = ContextVar("operation_context", default=None)

audit_log = logging.getLogger("nightstorm.audit")

# Attributes of every LogRecord: what is not among them was passed with `extra=` (or added by
# the filter below) and is a structured field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _trace_ids() -> dict:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover (a dependency; kept optional for log setup)
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class ContextFilter(logging.Filter):
    """Adds the request id, the current operation and the trace to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        for key, value in (operation_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        for key, value in _trace_ids().items():
            setattr(record, key, value)
        return True


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message key=value …` for a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        line = super().format(record)
        fields = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and key not in ("request_id", "span_id")
        }
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
        return line


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}{request_id}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    )


def audit(event: str, **fields) -> None:
    """Record an audit event (`jackpot.win`, `jackpot.adjustment`, `jackpot.config`): who,
    what, how much, under which operation id. Logged when the current transaction commits (at
    once outside one): a change rolled back by an enclosing transaction is never audited."""
    from django.db import transaction

    extra = {"event": event, "audit": True, **fields}
    for key, value in (operation_context.get() or {}).items():
        extra.setdefault(key, value)  # on_commit runs outside the operation
    transaction.on_commit(lambda: audit_log.info(event, extra=extra))
