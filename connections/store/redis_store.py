"""`RedisConnectionStore`: atomic reads and writes of the layout in `connections.store.keys`.

Every write is one atomic round trip: a MULTI pipeline (the gateway's register) or one short
Lua script (`connections.store.scripts`). No write reads a document, changes it in Python and
writes it back, and none retries. Reads accept the legacy layout too (`legacy.merge`).
"""

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable

import redis

from connections import metrics
from connections.state import CONNECTED, Connection, MetadataTooLarge, StoreUnavailable
from connections.store import scripts
from connections.store.keys import (
    HANDLES_KEY,
    IDEM_PREFIX,
    LAYOUT_KEY,
    PLAYER_PREFIX,
    PREFIX,
    SEQ_KEY,
    conn_key,
    encode_time,
    idem_key,
    is_cluster,
    legacy_key_for,
    meta_key,
    player_key,
)
from connections.store.legacy import legacy_handles, merge
from nightstorm.errors import IdempotencyKeyReused

log = logging.getLogger(__name__)

HANDLE_BLOCK = 1000
LOAD_BATCH = 500


def _pairs(flat: list) -> dict:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def from_hash(handle: int, flat_fields: list, flat_meta: list) -> Connection | None:
    """Fast path of `merge` for the hash layout alone (HGETALL replies as flat lists of bytes):
    reconciliation builds 10,000 of these, so it decodes only the values it keeps."""
    fields = _pairs(flat_fields)
    state = fields.get(b"state")
    if state is None:
        return None
    player, name = fields.get(b"player"), fields.get(b"player_name")
    meta = {}
    if flat_meta:
        it = iter(flat_meta)
        meta = {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}
    try:
        connected_at = float(fields.get(b"connected_at", 0.0))
        last_signal = float(fields.get(b"last_signal", connected_at))
    except ValueError:
        connected_at = last_signal = 0.0
    return Connection(
        handle=handle,
        protocol=fields.get(b"protocol", b"").decode(),
        remote_addr=fields.get(b"remote_addr", b"").decode(),
        connected_at=connected_at,
        last_signal=last_signal,
        state=state.decode(),
        player_id=player.decode() if player else None,
        player_name=name.decode() if name else None,
        metadata=meta,
    )


# Every store, so that a forked child can drop its parent's reserved handle block.
_stores: "weakref.WeakSet[RedisConnectionStore]" = weakref.WeakSet()


def _reset_allocators_in_child() -> None:
    for store in list(_stores):
        store._reset_allocator()


os.register_at_fork(after_in_child=_reset_allocators_in_child)


class RedisConnectionStore:
    """Atomic reads and writes of the layout on one redis-py client.

    Critical methods raise `StoreUnavailable` when Redis cannot be reached; `write_batch` lets
    redis errors through to the background writer, which logs and counts them.
    """

    def __init__(self, client: redis.Redis, *, legacy_reads: bool | None = None):
        """`legacy_reads`: scan for legacy keys when reconciling — True, False, or None to
        scan until the migration has marked the layout converted."""
        self.client = client
        self.cluster = is_cluster(client)
        self.legacy_key = legacy_key_for(client)
        self.legacy_reads = False if self.cluster else legacy_reads
        self._load = client.register_script(scripts.LOAD)
        self._bind = client.register_script(scripts.BIND)
        self._set_state = client.register_script(scripts.SET_STATE)
        self._remove = client.register_script(scripts.REMOVE)
        self._write_if_live = client.register_script(scripts.WRITE_IF_LIVE)
        self._create = client.register_script(scripts.CREATE)
        self._update_metadata = client.register_script(scripts.UPDATE_METADATA)
        self._reset_allocator()
        _stores.add(self)

    def _reset_allocator(self) -> None:
        # A forked child must not hand out the handles its parent reserved (nor inherit a
        # lock some parent thread held at the fork).
        self._seq_lock = threading.Lock()
        self._next_handle = 1
        self._block_end = 0

    # --- critical writes: one round trip each, raise StoreUnavailable ------------------------

    def allocate_handle(self) -> int:
        """A handle no other process will hand out: blocks of HANDLE_BLOCK reserved by INCRBY."""
        with self._seq_lock:
            if self._next_handle > self._block_end:
                try:
                    end = self.client.incrby(SEQ_KEY, HANDLE_BLOCK)
                except redis.RedisError as exc:
                    raise StoreUnavailable() from exc
                self._block_end, self._next_handle = end, end - HANDLE_BLOCK + 1
            handle = self._next_handle
            self._next_handle += 1
            return handle

    def register(self, conn: Connection) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            conn_key(conn.handle),
            mapping={
                "state": conn.state,
                "protocol": conn.protocol,
                "remote_addr": conn.remote_addr,
                "connected_at": encode_time(conn.connected_at),
                "last_signal": encode_time(conn.last_signal),
            },
        )
        pipe.sadd(HANDLES_KEY, conn.handle)
        self._critical(pipe.execute, "register", conn.handle)

    def create(
        self,
        *,
        protocol: str,
        remote_addr: str,
        now: float,
        idempotency: tuple[str, str] | None = None,
        ttl_seconds: int = 0,
    ) -> tuple[Connection, bool]:
        """Allocate a handle and register it in one script; returns (connection, created).

        With `idempotency=(token, digest)` the handle is remembered under the token for
        `ttl_seconds`: a retry finds it and registers that handle again if it is gone, or
        returns the connection as stored. The same token with another digest (another request
        body) raises `IdempotencyKeyReused` and changes nothing.
        """
        keys, digest = [SEQ_KEY, HANDLES_KEY], ""
        if idempotency is not None:
            token, digest = idempotency
            keys.append(idem_key(token))
        stamp = encode_time(now)
        args = [PREFIX, max(1, int(ttl_seconds)), digest, CONNECTED, protocol, remote_addr]
        reply = self._critical(
            lambda: self._create(keys=keys, args=[*args, stamp, stamp]), "register", 0
        )
        if reply[0] == -1:
            raise IdempotencyKeyReused()
        handle, created, fields, meta = reply
        conn = merge(int(handle), _pairs(fields), _pairs(meta), None)
        if conn is None:  # only if something outside the store wrote a partial hash there
            raise StoreUnavailable(f"connection {handle} is stored without its state")
        return conn, bool(created)

    def bind(self, handle: int, *, player_id: str, player_name: str, state: str) -> int:
        """1 bound, 0 unknown handle, -1 bound to another player (atomic check and write)."""
        return self._critical(
            lambda: self._bind(
                keys=[
                    conn_key(handle),
                    self.legacy_key(handle),
                    HANDLES_KEY,
                    player_key(player_id),
                ],
                args=[handle, player_id, player_name, state],
            ),
            "bind",
            handle,
        )

    def set_state(self, handle: int, state: str) -> bool:
        return bool(
            self._critical(
                lambda: self._set_state(
                    keys=[conn_key(handle), self.legacy_key(handle), HANDLES_KEY],
                    args=[handle, state],
                ),
                "set_state",
                handle,
            )
        )

    def update_metadata(self, handle: int, cleaned: dict[str, str], *, limit: int):
        """Merge validated metadata now (no background writer) and return the connection as
        Redis holds it afterwards; None if it does not exist. More than `limit` keys on the
        connection raises `MetadataTooLarge` and writes nothing."""
        args = [limit]
        for pair in cleaned.items():
            args.extend(pair)
        reply = self._critical(
            lambda: self._update_metadata(
                keys=[conn_key(handle), meta_key(handle), self.legacy_key(handle)], args=args
            ),
            "metadata",
            handle,
        )
        if reply[0] == 0:
            return None
        if reply[0] == -1:
            raise MetadataTooLarge(f"A connection holds at most {limit} keys.")
        _, fields, meta, legacy = reply
        return merge(handle, _pairs(fields), _pairs(meta), legacy)

    def remove(self, handle: int, *, idle_cutoff: float | None = None) -> int:
        """Delete a connection (and its index entries). With `idle_cutoff`, only if its stored
        last signal is older — checked atomically, so a connection another process keeps
        alive is never pruned on a stale local copy. 1 removed, 0 absent, -1 kept."""
        return self._critical(
            lambda: self._remove(
                keys=[conn_key(handle), meta_key(handle), self.legacy_key(handle), HANDLES_KEY],
                args=[handle, PLAYER_PREFIX, "" if idle_cutoff is None else repr(idle_cutoff)],
            ),
            "disconnect",
            handle,
        )

    def remove_many(self, handles: list[int], *, idle_cutoff: float | None = None) -> dict:
        """`remove` for many handles in pipelined batches: {handle: outcome}."""
        outcomes = {}
        cutoff = "" if idle_cutoff is None else repr(idle_cutoff)
        for start in range(0, len(handles), LOAD_BATCH):
            batch = handles[start : start + LOAD_BATCH]
            pipe = self._script_pipeline()
            for handle in batch:
                self._remove(
                    keys=[conn_key(handle), meta_key(handle), self.legacy_key(handle), HANDLES_KEY],
                    args=[handle, PLAYER_PREFIX, cutoff],
                    client=pipe,
                )
            results = self._critical(pipe.execute, "disconnect", batch[0])
            outcomes.update(zip(batch, (int(r) for r in results), strict=True))
        return outcomes

    def _script_pipeline(self):
        """A non-transactional pipeline that may carry scripts. redis-py's cluster pipeline
        refuses EVALSHA; the layout is one slot (see `keys`), so on a Redis Cluster the pipeline
        goes to the node serving that slot now (looked up per call, so it follows a reshard)."""
        client = self.client
        if self.cluster:
            client = client.get_redis_connection(client.get_node_from_key(HANDLES_KEY))
        return client.pipeline(transaction=False)

    def _critical(self, call, operation: str, handle: int):
        try:
            return call()
        except redis.RedisError as exc:
            metrics.CRITICAL_WRITE_FAILURES.labels(operation).inc()
            log.error("connection store %s failed for handle %s: %s", operation, handle, exc)
            raise StoreUnavailable() from exc

    # --- non-critical writes: the background writer's batch ---------------------------------

    def write_batch(self, items: dict[int, tuple[dict, dict]]) -> list[int]:
        """Apply {handle: (connection fields, metadata)} in one non-transactional pipeline of
        guarded HSETs. Returns the handles whose connection was gone (write dropped)."""
        pipe = self._script_pipeline()
        order = []
        for handle, (fields, meta) in items.items():
            args = [len(fields)]
            for pair in fields.items():
                args.extend(pair)
            for pair in meta.items():
                args.extend(pair)
            self._write_if_live(
                keys=[conn_key(handle), meta_key(handle), self.legacy_key(handle)],
                args=args,
                client=pipe,
            )
            order.append(handle)
        results = pipe.execute()
        return [handle for handle, ok in zip(order, results, strict=True) if not ok]

    def write_now(self, handle: int, *, fields: dict | None = None, meta: dict | None = None):
        """One guarded HSET of connection fields and/or metadata, synchronously (tools and
        benchmarks; the service writes these through the background writer). True if the
        connection exists."""
        fields, meta = fields or {}, meta or {}
        args = [len(fields)]
        for pair in (*fields.items(), *meta.items()):
            args.extend(pair)
        return bool(
            self._write_if_live(
                keys=[conn_key(handle), meta_key(handle), self.legacy_key(handle)], args=args
            )
        )

    # --- reads -------------------------------------------------------------------------------

    def exists(self, handle: int) -> bool:
        try:
            return bool(self.client.exists(conn_key(handle), self.legacy_key(handle)))
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def load(self, handle: int) -> Connection | None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(conn_key(handle))
            pipe.hgetall(meta_key(handle))
            pipe.get(self.legacy_key(handle))
            fields, meta, legacy = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc
        return merge(handle, fields, meta, legacy)

    def legacy_handles(self) -> set[int]:
        return set(legacy_handles(self.client, count=10_000))

    def load_all(self) -> tuple[list[Connection], list[int]]:
        """Every connection in Redis: SMEMBERS, then HGETALL pairs pipelined in batches.

        Returns (connections, stray handles listed in the set without a connection behind).
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.smembers(HANDLES_KEY)
            pipe.exists(LAYOUT_KEY)
            members, converted = pipe.execute()
            handles = {int(h) for h in members}
            scan = self.legacy_reads if self.legacy_reads is not None else not converted
            legacy = self.legacy_handles() if scan else set()
            return self._load_many(sorted(handles | legacy), legacy)
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def _load_many(self, handles: list[int], legacy: set[int]):
        found, strays = [], []
        for start in range(0, len(handles), LOAD_BATCH):
            batch = handles[start : start + LOAD_BATCH]
            keys = []
            for handle in batch:
                keys += (conn_key(handle), meta_key(handle))
            replies = iter(self._load(keys=keys))
            raws = {}
            in_legacy = [h for h in batch if h in legacy]
            if in_legacy:
                raws = dict(
                    zip(
                        in_legacy,
                        self.client.mget([self.legacy_key(h) for h in in_legacy]),
                        strict=True,
                    )
                )
            for handle in batch:
                flat_fields, flat_meta = next(replies), next(replies)
                raw = raws.get(handle)
                if raw is None:
                    conn = from_hash(handle, flat_fields, flat_meta)
                else:
                    conn = merge(handle, _pairs(flat_fields), _pairs(flat_meta), raw)
                if conn is None and raw is None:
                    strays.append(handle)
                elif conn is None:
                    # An unreadable legacy document: left for the migration to report.
                    log.warning("unreadable legacy connection key %s", self.legacy_key(handle))
                else:
                    found.append(conn)
        return found, strays

    def handles_of(self, player_id: str) -> set[int]:
        try:
            return {int(h) for h in self.client.smembers(player_key(player_id))}
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def count(self) -> int:
        """Live connections (the size of the handle set)."""
        try:
            return int(self.client.scard(HANDLES_KEY))
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def ping_ms(self) -> float:
        started = time.perf_counter()
        self.client.ping()
        return (time.perf_counter() - started) * 1000


def delete_all(client: redis.Redis, handles: Iterable[int] = ()) -> None:
    """Remove the whole layout (benchmarks and tests clean up with it)."""
    keys = [HANDLES_KEY, SEQ_KEY]
    legacy_key = legacy_key_for(client)
    for handle in handles:
        keys += [conn_key(handle), meta_key(handle), legacy_key(handle)]
    for pattern in (f"{PLAYER_PREFIX}*", f"{IDEM_PREFIX}*"):
        keys.extend(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
