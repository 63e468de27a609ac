"""Prometheus metrics of the connection store and the gateway."""

from prometheus_client import Counter, Gauge, Histogram

METADATA_UPDATE_FAILURES = Counter(
    "nightstorm_connections_metadata_update_failures_total",
    "Background (non-critical) connection writes that failed; each is logged with its payload.",
    ["kind"],  # last_signal or metadata; the key itself goes to the log, not a label
)
WRITES_DROPPED = Counter(
    "nightstorm_connections_writes_dropped_total",
    "Background writes Redis dropped because their connection was gone (logged).",
    ["kind"],
)
WRITE_QUEUE_FULL = Counter(
    "nightstorm_connections_write_queue_full_total",
    "Non-critical writes refused because the background queue was full (logged).",
    ["kind"],
)
# Per-process gauges: `livesum` adds up the live processes and drops a dead one's value.
WRITE_QUEUE_DEPTH = Gauge(
    "nightstorm_connections_write_queue_depth",
    "Pending entries in the background writer (after coalescing).",
    multiprocess_mode="livesum",
)
BACKGROUND_BATCH_SECONDS = Histogram(
    "nightstorm_connections_background_batch_seconds",
    "Duration of one pipelined batch of non-critical writes.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5),
)
CRITICAL_WRITE_FAILURES = Counter(
    "nightstorm_connections_critical_write_failures_total",
    "Synchronous writes (register, bind, state, metadata, disconnect) refused because Redis "
    "failed.",
    ["operation"],
)
RECONCILE_SECONDS = Histogram(
    "nightstorm_connections_reconcile_seconds",
    "Time to load the connection store from Redis at start (and prune idle connections).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
)
RECONCILED = Counter(
    "nightstorm_connections_reconciled_total",
    "Connections seen by reconciliation, by outcome (loaded, pruned, stray).",
    ["outcome"],
)
GATEWAY_CLIENTS = Gauge(
    "nightstorm_gateway_clients", "Clients connected to gateways.", multiprocess_mode="livesum"
)
GATEWAY_DROPPED = Counter(
    "nightstorm_gateway_dropped_total",
    "Gateway clients closed by the server, by reason.",
    ["reason"],  # full, line_too_long, idle, slow_reader, store_unavailable, shutdown
)
