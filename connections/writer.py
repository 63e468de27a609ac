"""The one background thread that carries non-critical writes (last signal, custom metadata)
to Redis in pipelined batches.

Pending writes are coalesced per (handle, key): a client sending a hundred lines while a batch
is in flight costs one HSET of the newest `last_signal`, not a hundred. The bound
(`CONNECTIONS_WRITE_QUEUE_SIZE`) counts those pending pairs; a new pair beyond it is refused,
logged and counted. A failed batch is logged entry by entry (handle, key, value) and counted —
never swallowed — and not retried: the in-process map still holds the value, and the next signal
of a live connection carries a newer one anyway. A write Redis drops because its connection is
gone (disconnected elsewhere a moment earlier) is counted and logged too.

Fork safety: a process forked from one that used a writer (a gunicorn worker forked from a
master that imported it) must not inherit a writer thread that does not exist in the child, a
condition some parent thread held at the fork, or the parent's pending writes (the parent still
sends those). `os.register_at_fork` resets all three in the child.
"""

import logging
import os
import threading
import time
import weakref
from itertools import islice

from connections import metrics
from nightstorm.metrics import BACKGROUND_WRITE_FAILURES

log = logging.getLogger(__name__)

LOGGED_FAILURES_PER_BATCH = 100


def _kind(key: str, is_meta: bool) -> str:
    return "metadata" if is_meta else key


_writers: "weakref.WeakSet[BackgroundWriter]" = weakref.WeakSet()


def _reset_writers_in_child() -> None:
    for writer in list(_writers):
        writer._reset_runtime()


os.register_at_fork(after_in_child=_reset_writers_in_child)


class BackgroundWriter:
    """Coalescing, bounded queue in front of `RedisConnectionStore.write_batch`."""

    def __init__(self, store, *, max_pending: int, batch_size: int = 1000):
        self.store = store
        self.max_pending = max_pending
        self.batch_size = batch_size
        self._reset_runtime()
        self.failures = 0
        self.refused = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        _writers.add(self)

    def _reset_runtime(self) -> None:
        """Fresh thread, condition and pending state: at construction and in a forked child."""
        self._pending: dict[int, tuple[dict, dict]] = {}
        self._size = 0
        self._in_flight = False
        self._idle = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return self._size

    def submit(self, handle: int, *, fields: dict | None = None, meta: dict | None = None) -> bool:
        """Queue writes for one connection; False (logged and counted) for what did not fit."""
        refused = []
        with self._cond:
            entry = self._pending.get(handle)
            if entry is None:
                entry = self._pending[handle] = ({}, {})
            for target, changes, is_meta in ((entry[0], fields, False), (entry[1], meta, True)):
                for key, value in (changes or {}).items():
                    if key not in target and self._size >= self.max_pending:
                        refused.append((key, value, is_meta))
                        continue
                    if key not in target:
                        self._size += 1
                    target[key] = value
            if not entry[0] and not entry[1]:
                del self._pending[handle]
            if self._thread is None:
                self._start_thread()
            elif self._idle:  # wake the writer only when it sleeps: submit is the hot path
                self._cond.notify()
        for key, value, is_meta in refused:
            self.refused += 1
            metrics.WRITE_QUEUE_FULL.labels(_kind(key, is_meta)).inc()
            BACKGROUND_WRITE_FAILURES.labels("connections").inc()
            log.warning(
                "connection write queue full (%s pending): dropped handle=%s key=%s value=%r",
                self.max_pending,
                handle,
                key,
                value,
            )
        return not refused

    def forget(self, handle: int) -> None:
        """Drop pending writes of a connection that is gone (the store would drop them too)."""
        with self._cond:
            entry = self._pending.pop(handle, None)
            if entry is not None:
                self._size -= len(entry[0]) + len(entry[1])

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far has been attempted. True if drained."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._pending and not self._in_flight, timeout=timeout
            )

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _start_thread(self) -> None:
        """Caller holds the condition."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="connections-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: self._pending or self._stopping)
                self._idle = False
                if not self._pending:
                    return
                taken = list(islice(self._pending, self.batch_size))
                batch = {h: self._pending.pop(h) for h in taken}
                self._size -= sum(len(f) + len(m) for f, m in batch.values())
                self._in_flight = True
            metrics.WRITE_QUEUE_DEPTH.set(self._size)
            started = time.perf_counter()
            try:
                dropped = self.store.write_batch(batch)
            except Exception as exc:  # every failure is logged and counted below
                self._report_failure(batch, exc)
            else:
                if dropped:
                    self._report_dropped(batch, dropped)
            finally:
                metrics.BACKGROUND_BATCH_SECONDS.observe(time.perf_counter() - started)
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()

    def _report_dropped(self, batch: dict, handles: list[int]) -> None:
        """Writes the store refused because their connection was gone: expected when a
        connection is disconnected while its last signal is in flight, but never silent."""
        for logged, handle in enumerate(handles):
            fields, meta = batch[handle]
            for changes, is_meta in ((fields, False), (meta, True)):
                for key in changes:
                    self.dropped += 1
                    metrics.WRITES_DROPPED.labels(_kind(key, is_meta)).inc()
            if logged < LOGGED_FAILURES_PER_BATCH:
                log.info(
                    "connection background write dropped (connection gone): handle=%s keys=%s",
                    handle,
                    ",".join([*fields, *meta]),
                )
        if len(handles) > LOGGED_FAILURES_PER_BATCH:
            log.info(
                "connection background write dropped for %s more connections in the same batch",
                len(handles) - LOGGED_FAILURES_PER_BATCH,
            )

    def _report_failure(self, batch: dict, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self.last_error, self.last_error_at = error, time.time()
        logged = 0
        for handle, (fields, meta) in batch.items():
            for changes, is_meta in ((fields, False), (meta, True)):
                for key, value in changes.items():
                    self.failures += 1
                    metrics.METADATA_UPDATE_FAILURES.labels(_kind(key, is_meta)).inc()
                    BACKGROUND_WRITE_FAILURES.labels("connections").inc()
                    if logged < LOGGED_FAILURES_PER_BATCH:
                        logged += 1
                        log.warning(
                            "connection background write failed: handle=%s key=%s value=%r (%s)",
                            handle,
                            key,
                            value,
                            error,
                        )
        total = sum(len(f) + len(m) for f, m in batch.values())
        if total > logged:
            log.warning(
                "connection background write failed: %s more entries in the same batch (%s)",
                total - logged,
                error,
            )
