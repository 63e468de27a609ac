"""Event counts over the last few minutes, shared by every process, for health checks.

Prometheus answers "how often" for dashboards and alerts, but its counters live in each
process; a health check answered by one web worker must see the whole platform's rate (every
process is a peer). So `record()` also counts events (`jackpot.contribute:ok`,
`jackpot.contribute:conflict`, …) into per-minute buckets in the shared cache (Redis in
production; the local-memory cache in the embedded mode, where a check then sees its own
process only) and `totals()` sums the last minutes.

Cost on hot paths: counts are buffered in the process and flushed at most once a second (one
pipelined round trip), so a count can reach the others up to a second late, and the last
second of a process that dies is lost: it is OK to be a little inexact here.
"""

import logging
import threading
import time
from collections import Counter

from django.conf import settings
from django.core.cache import cache

FLUSH_SECONDS = 1.0
BUCKET_SECONDS = 60
KEEP_BUCKETS = 16  # minutes a bucket lives: longer than any window read

log = logging.getLogger(__name__)


def _key(event: str, bucket: int) -> str:
    return f"rates:{event}:{bucket}"


class _Buffer:
    def __init__(self):
        self.lock = threading.Lock()
        self.pending: Counter = Counter()
        self.flushed_at = time.monotonic()


_buffer = _Buffer()


def record(event: str, count: int = 1) -> None:
    with _buffer.lock:
        _buffer.pending[event] += count
        due = time.monotonic() - _buffer.flushed_at >= FLUSH_SECONDS
    if due:
        flush()


def flush() -> None:
    with _buffer.lock:
        pending, _buffer.pending = _buffer.pending, Counter()
        _buffer.flushed_at = time.monotonic()
    if not pending:
        return
    bucket = int(time.time() // BUCKET_SECONDS)
    ttl = BUCKET_SECONDS * KEEP_BUCKETS
    try:
        if settings.REDIS_URL:
            from django_redis import get_redis_connection

            pipe = get_redis_connection("default").pipeline(transaction=False)
            for event, count in pending.items():
                key = cache.make_key(_key(event, bucket))
                pipe.incrby(key, count)
                pipe.expire(key, ttl)
            pipe.execute()
        else:
            for event, count in pending.items():
                key = _key(event, bucket)
                cache.add(key, 0, ttl)
                cache.incr(key, count)
    except Exception:  # a health signal: never fail the operation that counted it
        log.warning("event counts not flushed", exc_info=True, extra={"events": dict(pending)})


def totals(events: list[str], minutes: int = 5) -> dict[str, int]:
    """Each event's count over the current minute and the `minutes - 1` before it, all
    processes together (this one's unflushed counts included)."""
    flush()
    minutes = min(minutes, KEEP_BUCKETS)
    now = int(time.time() // BUCKET_SECONDS)
    keys = {_key(e, b): e for e in events for b in range(now - minutes + 1, now + 1)}
    found = cache.get_many(list(keys))
    result = dict.fromkeys(events, 0)
    for key, value in found.items():
        result[keys[key]] += int(value)
    return result
