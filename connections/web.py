"""The web tier's side of the connection store: every read and write goes to Redis at once.

A request for a handle may land on any web worker. A worker that kept its own copy of a
connection (as the gateway's `ConnectionService` does for its sockets) answered from that copy
after another worker had deleted or changed the connection: 200 for a deleted connection, old
metadata. So web code — the REST views, the admin page, the health check — holds no connection
state and no background writer: `SharedConnections` turns each call into one or two Redis round
trips through the store's atomic scripts, and answers with what Redis holds afterwards.

Without `REDIS_URL` (embedded mode, one process) `get_connections()` returns the in-process
`ConnectionService`, the only copy there is; both offer the calls below.
"""

import threading
import time

from django.conf import settings

from connections.service import ConnectionService, get_service
from connections.state import (
    LOGGED_IN,
    AlreadyBound,
    Connection,
    ConnectionNotFound,
    clean_metadata,
    idempotency_ttl_seconds,
    max_metadata_keys,
)
from connections.store import RedisConnectionStore
from nightstorm.operations import operation


class SharedConnections:
    """Stateless reads and writes of the shared store (safe to share between threads and to
    inherit across a fork: it holds a Redis client and nothing else)."""

    def __init__(self, store: RedisConnectionStore):
        self.store = store

    @classmethod
    def from_settings(cls) -> "SharedConnections":
        from django_redis import get_redis_connection

        return cls(RedisConnectionStore(get_redis_connection("default")))

    @operation("connections.register")
    def register(
        self,
        *,
        protocol: str,
        remote_addr: str,
        now: float | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> Connection:
        """Allocate and register in one script. `idempotency=(token, request digest)`: a retry
        with the same token gets the same handle (see `RedisConnectionStore.create`)."""
        conn, _created = self.store.create(
            protocol=protocol,
            remote_addr=remote_addr,
            now=time.time() if now is None else now,
            idempotency=idempotency,
            ttl_seconds=idempotency_ttl_seconds(),
        )
        return conn

    def lookup(self, handle: int) -> Connection:
        conn = self.store.load(handle)
        if conn is None:
            raise ConnectionNotFound()
        return conn

    def online(self) -> list[Connection]:
        return self.store.load_all()[0]

    @operation("connections.bind")
    def bind(self, handle: int, *, player_id: str, player_name: str) -> Connection:
        outcome = self.store.bind(
            handle, player_id=str(player_id), player_name=player_name, state=LOGGED_IN
        )
        if outcome == 0:
            raise ConnectionNotFound()
        if outcome < 0:
            raise AlreadyBound()
        return self.lookup(handle)

    @operation("connections.metadata")
    def update_metadata(self, handle: int, changes) -> Connection:
        """Validate, write synchronously (an explicit request, not a hint worth deferring) and
        return the connection as Redis now holds it."""
        cleaned = clean_metadata(changes)
        conn = self.store.update_metadata(handle, cleaned, limit=max_metadata_keys())
        if conn is None:
            raise ConnectionNotFound()
        return conn

    @operation("connections.disconnect")
    def disconnect(self, handle: int) -> bool:
        return self.store.remove(handle) == 1

    def stats(self) -> dict:
        return {"mode": "redis", "connections": self.store.count()}


_shared: SharedConnections | None = None
_shared_lock = threading.Lock()


def get_connections() -> SharedConnections | ConnectionService:
    """What web code reads and writes: the shared store, or the in-process service when
    there is no Redis."""
    global _shared
    if not settings.REDIS_URL:
        return get_service()
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = SharedConnections.from_settings()
    return _shared


def reset_connections(shared: SharedConnections | None = None) -> SharedConnections | None:
    """Replace the web tier's store (tests pointing it at another Redis). Returns the old."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, shared
    return old
