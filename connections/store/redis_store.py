"""The Redis side of the connection store: key layout, atomic writes, batched loads.

Layout (every key under `ns:conn:` on the Redis of `REDIS_URL`):

    ns:conn:<handle>             hash   state, player, player_name, protocol, remote_addr,
                                        connected_at, last_signal (epoch seconds)
    ns:conn:<handle>:meta        hash   custom metadata, string -> string
    ns:conn:handles              set    handles of live connections
    ns:conn:player:<player id>   set    handles bound to that player
    ns:conn:seq                  string handle allocator (INCRBY, one block per process)
    ns:conn:layout               string "hash" once `migrate_connection_state` has run: from then
                                        on reconciliation stops scanning for legacy keys
    connection:<handle>          string LEGACY layout: the whole connection as one JSON document
                                        (see `parse_legacy`); read while a rollout is in
                                        progress, converted by `migrate_connection_state`

Every write is one atomic round trip: a MULTI pipeline (register) or one short Lua script (the
others). No write reads a document, changes it in Python and writes it back, and none retries.
The scripts exist for one reason: a write must not resurrect a connection that was just
disconnected — a background `last_signal` landing after the DEL would otherwise leave a zombie
hash — so each one checks that the connection still exists in the same atomic step. Scripts
name their keys in KEYS except the player index key derived from the stored player, so the
layout targets a single Redis node (or Sentinel), not Redis Cluster.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable

import redis

from connections import metrics
from connections.state import CONNECTED, Connection, StoreUnavailable

log = logging.getLogger(__name__)

PREFIX = "ns:conn:"
HANDLES_KEY = f"{PREFIX}handles"
SEQ_KEY = f"{PREFIX}seq"
LAYOUT_KEY = f"{PREFIX}layout"
PLAYER_PREFIX = f"{PREFIX}player:"
LEGACY_PREFIX = "connection:"
LEGACY_PATTERN = f"{LEGACY_PREFIX}*"
# The seed's name for the idle-time signal inside the legacy document's metadata.
LEGACY_SIGNAL_KEY = "LastConnectionSignal"
HANDLE_BLOCK = 1000
LOAD_BATCH = 500


def conn_key(handle: int) -> str:
    return f"{PREFIX}{handle}"


def meta_key(handle: int) -> str:
    return f"{PREFIX}{handle}:meta"


def player_key(player_id: str) -> str:
    return f"{PLAYER_PREFIX}{player_id}"


def legacy_key(handle: int) -> str:
    return f"{LEGACY_PREFIX}{handle}"


# KEYS: conn, legacy, handles, player index.  ARGV: handle, player id, player name, state.
# Returns 1 bound, 0 no such connection, -1 bound to another player.
BIND_LUA = """
local current = redis.call('HGET', KEYS[1], 'player')
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists or not current then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    exists = true
    local ok, doc = pcall(cjson.decode, raw)
    if not current and ok and type(doc) == 'table' and type(doc['player']) == 'string' then
      current = doc['player']
    end
  end
end
if not exists then return 0 end
if current and current ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], 'player', ARGV[2], 'player_name', ARGV[3], 'state', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""

# KEYS: conn, legacy, handles.  ARGV: handle, state.  Returns 1 set, 0 no such connection.
SET_STATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: conn, meta, legacy, handles.  ARGV: handle, player index prefix, cutoff ('' = always).
# Returns 1 removed, 0 no such connection, -1 kept because its last signal is newer than cutoff.
REMOVE_LUA = """
local player = redis.call('HGET', KEYS[1], 'player')
local signal = redis.call('HGET', KEYS[1], 'last_signal')
local legacy = redis.call('GET', KEYS[3])
if legacy then
  local ok, doc = pcall(cjson.decode, legacy)
  if ok and type(doc) == 'table' then
    if not player and type(doc['player']) == 'string' then player = doc['player'] end
    if not signal and type(doc['metadata']) == 'table' then
      signal = doc['metadata']['LastConnectionSignal']
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 and not legacy then
  redis.call('SREM', KEYS[4], ARGV[1])
  return 0
end
if ARGV[3] ~= '' and signal and tonumber(signal) and tonumber(signal) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
if player then redis.call('SREM', ARGV[2] .. player, ARGV[1]) end
return 1
"""

# KEYS: conn 1, meta 1, conn 2, meta 2, ...  Returns the HGETALL replies in the same order: one
# command per batch instead of two per connection (redis-py's per-command cost dominates).
LOAD_LUA = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""

# KEYS: conn, meta, legacy.  ARGV: n, n field/value pairs for conn, then pairs for meta.
# Returns 1 written, 0 the connection is gone (the write is dropped on purpose).
WRITE_IF_LIVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HSET', KEYS[2], unpack(ARGV, 2 + 2 * n)) end
return 1
"""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value, default: float) -> float:
    try:
        return float(_text(value))
    except (TypeError, ValueError):
        return default


def encode_time(value: float) -> str:
    return f"{value:.6f}"


def parse_legacy(handle: int, raw) -> Connection | None:
    """Read the legacy document: `{"handle", "state", "player", "player_name", "protocol",
    "remote_addr", "connected_at", "metadata": {"LastConnectionSignal": "<epoch>", ...}}`.

    Returns None when it is not a JSON object (the migration reports such keys).
    """
    try:
        doc = json.loads(_text(raw))
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    connected_at = _float(doc.get("connected_at"), 0.0)
    signal = _float(metadata.get(LEGACY_SIGNAL_KEY), connected_at)
    player = doc.get("player")
    return Connection(
        handle=handle,
        protocol=str(doc.get("protocol") or "telnet"),
        remote_addr=str(doc.get("remote_addr") or ""),
        connected_at=connected_at,
        last_signal=signal,
        state=str(doc.get("state") or CONNECTED),
        player_id=str(player) if player is not None else None,
        player_name=doc.get("player_name"),
        metadata={
            str(k): str(v) for k, v in metadata.items() if k != LEGACY_SIGNAL_KEY and v is not None
        },
    )


def _pairs(flat: list) -> dict:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def from_hash(handle: int, flat_fields: list, flat_meta: list) -> Connection | None:
    """Fast path of `merge` for the hash layout alone (HGETALL replies as flat lists of bytes):
    reconciliation builds 10,000 of these, so it decodes only the values it keeps."""
    it = iter(flat_fields)
    fields = dict(zip(it, it, strict=True))
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


def merge(handle: int, fields: dict, meta: dict, legacy_raw) -> Connection | None:
    """One connection from its hash, its metadata hash and (during a rollout) its legacy
    document; the hashes win field by field because only the new code writes them."""
    base = parse_legacy(handle, legacy_raw) if legacy_raw is not None else None
    fields = {_text(k): _text(v) for k, v in fields.items()}
    if base is None:
        if "state" not in fields:
            return None  # a stray set member or a half-removed connection
        base = Connection(
            handle=handle, protocol="", remote_addr="", connected_at=0.0, last_signal=0.0
        )
    if "state" in fields:
        base.state = fields["state"]
    if "player" in fields:
        base.player_id = fields["player"] or None
    if "player_name" in fields:
        base.player_name = fields["player_name"] or None
    if "protocol" in fields:
        base.protocol = fields["protocol"]
    if "remote_addr" in fields:
        base.remote_addr = fields["remote_addr"]
    if "connected_at" in fields:
        base.connected_at = _float(fields["connected_at"], base.connected_at)
    if "last_signal" in fields:
        base.last_signal = _float(fields["last_signal"], base.last_signal)
    base.metadata.update({_text(k): _text(v) for k, v in meta.items()})
    return base


class RedisConnectionStore:
    """Atomic reads and writes of the layout above on one redis-py client.

    Critical methods raise `StoreUnavailable` when Redis cannot be reached; `write_batch` lets
    redis errors through to the background writer, which logs and counts them.
    """

    def __init__(self, client: redis.Redis, *, legacy_reads: bool | None = None):
        """`legacy_reads`: scan for legacy keys when reconciling — True, False, or None to
        scan until the migration has marked the layout converted."""
        self.client = client
        self.legacy_reads = legacy_reads
        self._load = client.register_script(LOAD_LUA)
        self._bind = client.register_script(BIND_LUA)
        self._set_state = client.register_script(SET_STATE_LUA)
        self._remove = client.register_script(REMOVE_LUA)
        self._write_if_live = client.register_script(WRITE_IF_LIVE_LUA)
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

    def bind(self, handle: int, *, player_id: str, player_name: str, state: str) -> int:
        """1 bound, 0 unknown handle, -1 bound to another player (atomic check and write)."""
        return self._critical(
            lambda: self._bind(
                keys=[conn_key(handle), legacy_key(handle), HANDLES_KEY, player_key(player_id)],
                args=[handle, player_id, player_name, state],
            ),
            "bind",
            handle,
        )

    def set_state(self, handle: int, state: str) -> bool:
        return bool(
            self._critical(
                lambda: self._set_state(
                    keys=[conn_key(handle), legacy_key(handle), HANDLES_KEY], args=[handle, state]
                ),
                "set_state",
                handle,
            )
        )

    def remove(self, handle: int, *, idle_cutoff: float | None = None) -> int:
        """Delete a connection (and its index entries). With `idle_cutoff`, only if its stored
        last signal is older — checked atomically, so a connection another process keeps
        alive is never pruned on a stale local copy. 1 removed, 0 absent, -1 kept."""
        return self._critical(
            lambda: self._remove(
                keys=[conn_key(handle), meta_key(handle), legacy_key(handle), HANDLES_KEY],
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
            pipe = self.client.pipeline(transaction=False)
            for handle in batch:
                self._remove(
                    keys=[conn_key(handle), meta_key(handle), legacy_key(handle), HANDLES_KEY],
                    args=[handle, PLAYER_PREFIX, cutoff],
                    client=pipe,
                )
            results = self._critical(pipe.execute, "disconnect", batch[0])
            outcomes.update(zip(batch, (int(r) for r in results), strict=True))
        return outcomes

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
        pipe = self.client.pipeline(transaction=False)
        order = []
        for handle, (fields, meta) in items.items():
            args = [len(fields)]
            for pair in fields.items():
                args.extend(pair)
            for pair in meta.items():
                args.extend(pair)
            self._write_if_live(
                keys=[conn_key(handle), meta_key(handle), legacy_key(handle)],
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
                keys=[conn_key(handle), meta_key(handle), legacy_key(handle)], args=args
            )
        )

    # --- reads -------------------------------------------------------------------------------

    def exists(self, handle: int) -> bool:
        try:
            return bool(self.client.exists(conn_key(handle), legacy_key(handle)))
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def load(self, handle: int) -> Connection | None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(conn_key(handle))
            pipe.hgetall(meta_key(handle))
            pipe.get(legacy_key(handle))
            fields, meta, legacy = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc
        return merge(handle, fields, meta, legacy)

    def legacy_handles(self) -> set[int]:
        handles = set()
        for key in self.client.scan_iter(match=LEGACY_PATTERN, count=10_000):
            suffix = _text(key)[len(LEGACY_PREFIX) :]
            if suffix.isdigit():
                handles.add(int(suffix))
        return handles

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
                        in_legacy, self.client.mget([legacy_key(h) for h in in_legacy]), strict=True
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
                    log.warning("unreadable legacy connection key %s", legacy_key(handle))
                else:
                    found.append(conn)
        return found, strays

    def handles_of(self, player_id: str) -> set[int]:
        try:
            return {int(h) for h in self.client.smembers(player_key(player_id))}
        except redis.RedisError as exc:
            raise StoreUnavailable() from exc

    def ping_ms(self) -> float:
        started = time.perf_counter()
        self.client.ping()
        return (time.perf_counter() - started) * 1000


def delete_all(client: redis.Redis, handles: Iterable[int] = ()) -> None:
    """Remove the whole layout (benchmarks and tests clean up with it)."""
    keys = [HANDLES_KEY, SEQ_KEY]
    for handle in handles:
        keys += [conn_key(handle), meta_key(handle), legacy_key(handle)]
    for key in client.scan_iter(match=f"{PLAYER_PREFIX}*", count=1000):
        keys.append(key)
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
