"""The gateway's connection service: an in-process map of the connections whose sockets this
process holds, written through to Redis.

WHO HOLDS IT

Only the process that owns the sockets — the gateway (`run_gateway`) — keeps this map. Web
workers hold no connection state: the REST views, the admin and the health check read and write
Redis directly through `connections.web.SharedConnections` (a map per web worker answered from
its own copy after another worker had deleted the connection). Without `REDIS_URL` (embedded
mode, one process) the web tier uses this service, the only copy there is.

AUTHORITY MODEL

- The gateway is the authority on a connection's existence and its socket state: it registers
  a connection when a socket opens and disconnects it when the socket closes. REST callers
  (gateways that speak HTTP, tools) may also register/bind/disconnect through the same atomic
  store operations.
- Binding to a player (`player`, `player_name`, `state=logged_in`) is decided where the login
  happens (the gateway after authentication, or a trusted service through the REST bind); the
  store's atomic bind refuses a second, different player for the same connection.
- Last signal and custom metadata belong to whichever process sees the activity; they are
  advisory (idle time, client hints) and last-write-wins per key.
- Redis is the shared persistence layer and the authority after a restart (reconciliation);
  this map is the authority for the gateway's hot-path reads of its own sockets.

CONSISTENCY MODEL

- Critical writes — register, bind, state change, disconnect — go to Redis synchronously, in one
  atomic round trip, before the call returns. If Redis cannot be reached the call raises
  `StoreUnavailable` (503, code `store_unavailable`) and the map is left unchanged (disconnect
  is the exception: the socket is gone, so the local entry goes too, and the Redis entry is
  pruned later by idle time). A login is therefore never acknowledged without being shared.
- Non-critical writes — last signal, custom metadata — update the map at once and reach Redis
  through one background writer thread (coalesced, pipelined). They are eventually consistent:
  Redis may lag by one batch (normally milliseconds). A failed batch is logged with handle, key
  and value and counted; a write dropped because the connection was gone is logged and counted
  (`nightstorm_connections_writes_dropped_total`); a full queue is counted too.
- Reads on the hot path (`get`, `online()`) never touch Redis. `lookup()` falls back to Redis
  for a handle not in the map, and `online(shared=True)` reads every connection from Redis.
- Without `REDIS_URL` the service runs in-process only: same API, nothing shared, nothing
  survives a restart.
"""

import itertools
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from connections import metrics
from connections.state import (
    LOGGED_IN,
    STATES,
    AlreadyBound,
    Connection,
    ConnectionNotFound,
    MetadataTooLarge,
    clean_metadata,
    idempotency_ttl_seconds,
    max_metadata_keys,
)
from connections.store import RedisConnectionStore, encode_time
from connections.writer import BackgroundWriter
from nightstorm.errors import IdempotencyKeyReused, InvalidInput
from nightstorm.operations import operation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    loaded: int
    pruned: int
    strays: int
    seconds: float

    def __str__(self):
        return (
            f"reconciled {self.loaded} connections ({self.pruned} idle pruned, "
            f"{self.strays} stray entries removed) in {self.seconds * 1000:.1f} ms"
        )


class ConnectionService:
    """The connections one process holds (the gateway's, or every one in embedded mode).
    Thread-safe: the gateway's event loop and its executor threads share one instance."""

    def __init__(self, *, store: RedisConnectionStore | None = None, queue_size: int | None = None):
        self.store = store
        self.writer = (
            BackgroundWriter(store, max_pending=queue_size or settings.CONNECTIONS_WRITE_QUEUE_SIZE)
            if store is not None
            else None
        )
        self._conns: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self._local_handles = itertools.count(1)
        # Embedded mode's stand-in for the Redis idempotency keys: token -> (handle, request
        # digest, expiry). One TTL for all, so insertion order is expiry order.
        self._idempotent: dict[str, tuple[int, str, float]] = {}

    @classmethod
    def from_settings(cls) -> "ConnectionService":
        if not settings.REDIS_URL:
            return cls()
        from django_redis import get_redis_connection

        return cls(store=RedisConnectionStore(get_redis_connection("default")))

    # --- critical writes ---------------------------------------------------------------------

    @operation("connections.register", ok_level=logging.DEBUG)
    def register(
        self,
        *,
        protocol: str,
        remote_addr: str,
        now: float | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> Connection:
        """Register a new connection. `idempotency=(token, request digest)`: a repeat with the
        same token gets the same handle (re-registered if it is gone, else as it is now); the
        same token with another digest raises `IdempotencyKeyReused`."""
        now = time.time() if now is None else now
        if idempotency is not None:
            return self._register_once(protocol, remote_addr, now, idempotency)
        handle = self.store.allocate_handle() if self.store else next(self._local_handles)
        conn = Connection(
            handle=handle,
            protocol=protocol,
            remote_addr=remote_addr,
            connected_at=now,
            last_signal=now,
        )
        if self.store is not None:
            self.store.register(conn)  # raises StoreUnavailable: nothing was registered
        with self._lock:
            self._conns[handle] = conn
        return conn

    def _register_once(self, protocol, remote_addr, now, idempotency) -> Connection:
        if self.store is not None:
            conn, _ = self.store.create(
                protocol=protocol,
                remote_addr=remote_addr,
                now=now,
                idempotency=idempotency,
                ttl_seconds=idempotency_ttl_seconds(),
            )
            with self._lock:
                return self._conns.setdefault(conn.handle, conn)
        token, digest = idempotency
        clock = time.monotonic()
        with self._lock:
            while self._idempotent:
                oldest = next(iter(self._idempotent))
                if self._idempotent[oldest][2] > clock:
                    break
                del self._idempotent[oldest]
            held = self._idempotent.get(token)
            if held is None:
                handle = next(self._local_handles)
                self._idempotent[token] = (handle, digest, clock + idempotency_ttl_seconds())
            elif held[1] != digest:
                raise IdempotencyKeyReused()
            else:
                handle = held[0]
            conn = self._conns.get(handle)
            if conn is None:
                conn = self._conns[handle] = Connection(
                    handle=handle,
                    protocol=protocol,
                    remote_addr=remote_addr,
                    connected_at=now,
                    last_signal=now,
                )
            return conn

    @operation("connections.bind")
    def bind(self, handle: int, *, player_id: str, player_name: str) -> Connection:
        """Bind a connection to a player (idempotent for the same player; a different player
        is refused with `AlreadyBound`)."""
        player_id = str(player_id)
        local = self._conns.get(handle)
        if local is not None and local.player_id not in (None, player_id):
            raise AlreadyBound()
        if self.store is None:
            if local is None:
                raise ConnectionNotFound()
            with self._lock:  # the check and the write must not interleave with another bind
                if local.player_id not in (None, player_id):
                    raise AlreadyBound()
                local.player_id, local.player_name, local.state = player_id, player_name, LOGGED_IN
            return local
        outcome = self.store.bind(
            handle, player_id=player_id, player_name=player_name, state=LOGGED_IN
        )
        if outcome == 0:
            self._drop_local(handle)
            raise ConnectionNotFound()
        if outcome < 0:
            raise AlreadyBound()
        if local is None:
            return self.lookup(handle)
        with self._lock:
            local.player_id, local.player_name, local.state = player_id, player_name, LOGGED_IN
        return local

    @operation("connections.set_state", ok_level=logging.DEBUG)
    def set_state(self, handle: int, state: str) -> Connection:
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
        local = self._conns.get(handle)
        if self.store is not None:
            if not self.store.set_state(handle, state):
                self._drop_local(handle)
                raise ConnectionNotFound()
        elif local is None:
            raise ConnectionNotFound()
        if local is None:
            return self.lookup(handle)
        local.state = state
        return local

    @operation("connections.disconnect", ok_level=logging.DEBUG)
    def disconnect(self, handle: int) -> bool:
        """Forget a connection everywhere. The local entry goes first and unconditionally (the
        socket is gone); then Redis, which raises `StoreUnavailable` if it cannot be reached."""
        local = self._drop_local(handle)
        if self.store is None:
            return local is not None
        return self.store.remove(handle) == 1 or local is not None

    # --- non-critical writes -----------------------------------------------------------------

    def touch(self, handle: int, *, now: float | None = None) -> bool:
        """Record activity (the idle clock). Never blocks on Redis."""
        now = time.time() if now is None else now
        local = self._conns.get(handle)
        if local is not None:
            local.last_signal = now
        if self.writer is not None:
            self.writer.submit(handle, fields={"last_signal": encode_time(now)})
        return local is not None

    def update_metadata(self, handle: int, changes) -> Connection:
        """Merge validated metadata into the connection; Redis gets it in the background."""
        cleaned = clean_metadata(changes)
        conn = self._conns.get(handle)
        if conn is None:
            conn = self.lookup(handle)  # another process's connection: check it exists
        limit = max_metadata_keys()
        with self._lock:
            # For another process's connection the count comes from a Redis read and may be
            # off by a concurrent writer's keys: a soft bound, which is all it needs to be.
            if len(conn.metadata.keys() | cleaned.keys()) > limit:
                raise MetadataTooLarge(f"A connection holds at most {limit} keys.")
            conn.metadata.update(cleaned)
        if self.writer is not None:
            self.writer.submit(handle, meta=cleaned)
        return conn

    # --- reads -------------------------------------------------------------------------------

    def get(self, handle: int) -> Connection | None:
        """Hot path: the in-process map only."""
        return self._conns.get(handle)

    def lookup(self, handle: int) -> Connection:
        """The map, else Redis (a connection registered by another process). Not cached: a
        copy held here would go stale as its owner writes to it."""
        conn = self._conns.get(handle)
        if conn is None and self.store is not None:
            conn = self.store.load(handle)
        if conn is None:
            raise ConnectionNotFound()
        return conn

    def online(self, *, shared: bool = False) -> list[Connection]:
        """Connections known here (hot path), or with `shared` every connection in Redis."""
        if shared and self.store is not None:
            return self.store.load_all()[0]
        with self._lock:
            return list(self._conns.values())

    def handles(self) -> set[int]:
        with self._lock:
            return set(self._conns)

    # --- reconciliation and pruning ----------------------------------------------------------

    def reconcile(self, *, idle_timeout: float | None = None, now: float | None = None):
        """Load every connection from Redis into the map and prune the idle ones.

        Run once when a game server starts. Pruning is conditional in Redis (the stored last
        signal must still be older than the cutoff), so a connection kept alive by another
        process is loaded, not deleted.
        """
        started = time.perf_counter()
        if self.store is None:
            return ReconcileReport(len(self._conns), 0, 0, 0.0)
        idle_timeout = idle_timeout or settings.CONNECTIONS_IDLE_TIMEOUT_SECONDS
        cutoff = (time.time() if now is None else now) - idle_timeout
        found, strays = self.store.load_all()
        stale = [c.handle for c in found if c.last_signal < cutoff]
        outcomes = self.store.remove_many(stale, idle_cutoff=cutoff) if stale else {}
        self.store.remove_many(strays)
        pruned = {h for h, outcome in outcomes.items() if outcome != -1}
        kept = [c for c in found if c.handle not in pruned]
        with self._lock:
            for conn in kept:
                self._conns.setdefault(conn.handle, conn)  # a local entry is fresher
            for handle in pruned:
                self._conns.pop(handle, None)
        report = ReconcileReport(len(kept), len(pruned), len(strays), time.perf_counter() - started)
        metrics.RECONCILE_SECONDS.observe(report.seconds)
        metrics.RECONCILED.labels("loaded").inc(report.loaded)
        metrics.RECONCILED.labels("pruned").inc(report.pruned)
        metrics.RECONCILED.labels("stray").inc(report.strays)
        log.info("%s", report)
        return report

    def prune_idle(self, *, idle_timeout: float, keep: set[int] = frozenset(), now=None) -> int:
        """Disconnect local connections idle longer than `idle_timeout` (except `keep`, the
        ones whose sockets this process watches itself). Returns how many went."""
        cutoff = (time.time() if now is None else now) - idle_timeout
        with self._lock:
            stale = [
                c.handle
                for c in self._conns.values()
                if c.last_signal < cutoff and c.handle not in keep
            ]
        if not stale:
            return 0
        if self.store is None:
            for handle in stale:
                self._drop_local(handle)
            return len(stale)
        outcomes = self.store.remove_many(stale, idle_cutoff=cutoff)
        pruned = 0
        for handle, outcome in outcomes.items():
            if outcome == -1:  # alive elsewhere: take the newer copy
                fresh = self.store.load(handle)
                if fresh is not None:
                    with self._lock:
                        self._conns[handle] = fresh
                continue
            self._drop_local(handle)
            pruned += 1
        return pruned

    # --- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait for the background writer to attempt everything queued so far."""
        return True if self.writer is None else self.writer.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self.writer is not None:
            self.writer.close(timeout)

    def stats(self) -> dict:
        data = {
            "mode": "redis" if self.store else "in_process",
            "local_connections": len(self._conns),
        }
        if self.writer is not None:
            data.update(
                queue_depth=self.writer.depth,
                queue_limit=self.writer.max_pending,
                background_failures=self.writer.failures,
                queue_refused=self.writer.refused,
                writes_dropped=self.writer.dropped,
                last_error=self.writer.last_error,
                last_error_at=self.writer.last_error_at,
            )
        return data

    def _drop_local(self, handle: int) -> Connection | None:
        with self._lock:
            conn = self._conns.pop(handle, None)
        if self.writer is not None:
            self.writer.forget(handle)
        return conn


_service: ConnectionService | None = None
_service_lock = threading.Lock()


def get_service() -> ConnectionService:
    """The process-wide service (created on first use from settings): the gateway's, or the
    whole store in embedded mode. Web code asks `connections.web.get_connections()`."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                _service = ConnectionService.from_settings()
    return _service


def reset_service(service: ConnectionService | None = None) -> ConnectionService | None:
    """Replace the process-wide service (tests). Returns the old one."""
    global _service
    with _service_lock:
        old, _service = _service, service
    return old
