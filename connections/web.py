"""The web tier's side of the connection store: every read and write goes to Redis at once.

A request for a handle may land on any web worker. A worker that kept its own copy of a
connection (as the gateway's `ConnectionService` does for its sockets) answered from that copy
after another worker had deleted or changed the connection: 200 for a deleted connection, old
metadata. So web code — the REST views, the admin page, the health check — holds no connection
state and no background writer: `SharedConnections` turns each call into one or two Redis round
trips through the store's atomic scripts, and answers with what Redis holds afterwards.

Registrations made at the same moment by several threads share round trips (a group commit,
`GroupCommit`): the registrations queued while earlier ones were in flight go in one pipeline,
and every caller returns once Redis has answered for its own. Each registration is still its
own atomic script, and in Redis before its call returns; a lone caller sends alone.

Without `REDIS_URL` (embedded mode, one process) `get_connections()` returns the in-process
`ConnectionService`, the only copy there is; both offer the calls below.
"""

import logging
import os
import threading
import time

import redis
from django.conf import settings

from connections import metrics
from connections.service import ConnectionService, get_service
from connections.state import (
    CONNECTED,
    LOGGED_IN,
    AlreadyBound,
    Connection,
    ConnectionNotFound,
    StoreUnavailable,
    clean_metadata,
    idempotency_ttl_seconds,
    max_metadata_keys,
)
from connections.store import RedisConnectionStore, scripts
from connections.store.keys import HANDLES_KEY, PREFIX, SEQ_KEY, encode_time, idem_key
from connections.store.redis_store import from_hash
from nightstorm.errors import IdempotencyKeyReused
from nightstorm.operations import operation

log = logging.getLogger(__name__)

# The most registrations one round trip carries, and the most round trips in flight at once:
# with two, a caller never waits behind more than one round trip before its own is sent.
MAX_BATCH = 64
MAX_SENDERS = 2


class _Registration:
    """One caller's registration waiting in the queue, and then its answer."""

    __slots__ = ("args", "batch", "done", "error", "keys", "reply")

    def __init__(self, keys: list, args: list):
        self.keys, self.args = keys, args
        self.batch = None  # set when woken to send this batch rather than with an answer
        # Released to wake the caller: a bare lock is cheaper than an Event (a Condition).
        self.done = threading.Lock()
        self.done.acquire()
        self.reply = self.error = None


class GroupCommit:
    """Send concurrent registrations together: one pipeline of CREATE scripts per round trip.

    A caller that finds fewer than MAX_SENDERS round trips in flight sends its own at once;
    otherwise it queues and waits. A sender that is done hands the queue that built up
    meanwhile (up to MAX_BATCH) to the oldest waiter, who sends it in its place, then wakes the
    callers it answered: nobody waits for anyone's round trip but one in flight and its own.
    The lock is held only to touch the queue, never across I/O. Each registration is its own
    script, atomic on its own; a batch is not a transaction, and a failed batch fails every
    caller in it (StoreUnavailable), as a lost reply fails a lone one.
    """

    def __init__(self, store: RedisConnectionStore):
        self.store = store
        self.client = store.client
        self._lock = threading.Lock()
        self._queue: list[_Registration] = []
        self._senders = 0

    def submit(self, mine: _Registration) -> list:
        """Send `mine` (with whatever else is queued) and return its script's reply."""
        with self._lock:
            if self._senders < MAX_SENDERS:
                self._senders += 1
                batch = [mine]
            else:
                self._queue.append(mine)
                batch = None
        if batch is None:
            mine.done.acquire()
            if mine.batch is None:
                return self._answer(mine)
            batch = mine.batch  # handed over: send it in the finished sender's place
        try:
            self._send(batch)
        finally:
            with self._lock:
                if self._queue:
                    # Taken off the queue here, under the lock, so no two finishing senders
                    # can hand the same waiters over twice.
                    nxt, nxt.batch = self._queue[0], self._queue[:MAX_BATCH]
                    del self._queue[:MAX_BATCH]
                    nxt.done.release()
                else:
                    self._senders -= 1
            for item in batch:
                if item is not mine:
                    item.done.release()
        return self._answer(mine)

    @staticmethod
    def _answer(item: _Registration) -> list:
        if item.error is not None:
            raise item.error
        return item.reply

    def _send(self, batch: list[_Registration]) -> None:
        try:
            replies = self._evalsha(batch)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                # Redis lost its script cache (restart, SCRIPT FLUSH): load it, send again.
                # A NOSCRIPT reply ran nothing, so sending every one again is safe.
                self.client.script_load(scripts.CREATE)
                replies = self._evalsha(batch)
        except Exception as exc:  # every caller of the batch learns it failed
            for item in batch:
                item.error = exc
            return
        for item, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                item.error = reply
            else:
                item.reply = reply

    def _evalsha(self, batch: list[_Registration]) -> list:
        # EVALSHA directly rather than through a redis-py Script, whose call costs more than
        # the round trip's own client work and which, in a pipeline, asks SCRIPT EXISTS first.
        sha = self.store._create.sha
        if len(batch) == 1:
            (item,) = batch
            try:
                return [self.client.evalsha(sha, len(item.keys), *item.keys, *item.args)]
            except redis.exceptions.NoScriptError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            pipe.evalsha(sha, len(item.keys), *item.keys, *item.args)
        return pipe.execute(raise_on_error=False)


def create_call(protocol: str, remote_addr: str, now: float, idempotency) -> _Registration:
    """The CREATE script's keys and arguments for one registration (as
    `RedisConnectionStore.create` sends them)."""
    keys, digest = [SEQ_KEY, HANDLES_KEY], ""
    if idempotency is not None:
        token, digest = idempotency
        keys.append(idem_key(token))
    stamp = encode_time(now)
    args = [PREFIX, max(1, idempotency_ttl_seconds()), digest, CONNECTED, protocol]
    return _Registration(keys, [*args, remote_addr, stamp, stamp])


class SharedConnections:
    """Stateless reads and writes of the shared store (safe to share between threads and to
    inherit across a fork: it holds a Redis client and, per process, the queue of
    registrations being sent — nothing that answers for a connection)."""

    def __init__(self, store: RedisConnectionStore):
        self.store = store
        self._commits: tuple[int, GroupCommit] | None = None

    def _group_commit(self) -> GroupCommit:
        # Per process: a forked child must not inherit a queue or a lock its parent held.
        commits = self._commits
        if commits is None or commits[0] != os.getpid():
            commits = self._commits = (os.getpid(), GroupCommit(self.store))
        return commits[1]

    @classmethod
    def from_settings(cls) -> "SharedConnections":
        from django_redis import get_redis_connection

        return cls(RedisConnectionStore(get_redis_connection("default")))

    @operation("connections.register", ok_level=logging.DEBUG)
    def register(
        self,
        *,
        protocol: str,
        remote_addr: str,
        now: float | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> Connection:
        """Allocate and register in one script, sent with the registrations of other threads
        made at the same moment (see `GroupCommit`). `idempotency=(token, request digest)`: a
        retry with the same token gets the same handle (as `RedisConnectionStore.create`)."""
        call = create_call(protocol, remote_addr, time.time() if now is None else now, idempotency)
        try:
            reply = self._group_commit().submit(call)
        except redis.RedisError as exc:
            metrics.CRITICAL_WRITE_FAILURES.labels("register").inc()
            log.error("connection store register failed: %s", exc)
            raise StoreUnavailable() from exc
        if reply[0] == -1:
            raise IdempotencyKeyReused()
        handle, _created, fields, meta = reply
        conn = from_hash(int(handle), fields, meta)
        if conn is None:  # only if something outside the store wrote a partial hash there
            raise StoreUnavailable(f"connection {handle} is stored without its state")
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

    @operation("connections.metadata", ok_level=logging.DEBUG)
    def update_metadata(self, handle: int, changes) -> Connection:
        """Validate, write synchronously (an explicit request, not a hint worth deferring) and
        return the connection as Redis now holds it."""
        cleaned = clean_metadata(changes)
        conn = self.store.update_metadata(handle, cleaned, limit=max_metadata_keys())
        if conn is None:
            raise ConnectionNotFound()
        return conn

    @operation("connections.disconnect", ok_level=logging.DEBUG)
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
