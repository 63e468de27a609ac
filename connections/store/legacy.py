"""The legacy layout (`connection:<handle>`, the whole connection as one JSON string): reading
it during a rollout, and converting it into the hash layout (`migrate_connection_state`).

The legacy document:

    {"handle", "state", "player", "player_name", "protocol", "remote_addr", "connected_at",
     "metadata": {"LastConnectionSignal": "<epoch>", ...}}

Each key converts in one WATCH/MULTI transaction: HSETNX of every field into the connection hash
and the metadata hash (a field the new code already wrote wins — it is newer), SADD to the live
set and the player index, DEL of the legacy key. Running the conversion again finds no legacy
key and changes nothing. A legacy key rewritten by an old process while it is being converted
makes EXEC fail; the key is then read again (a one-off tool may retry; the store never does).
"""

import json
import logging
from collections import Counter
from collections.abc import Callable

import redis

from connections.state import CONNECTED, Connection
from connections.store import scripts
from connections.store.keys import (
    HANDLES_KEY,
    LAYOUT_KEY,
    LEGACY_PREFIX,
    LEGACY_SIGNAL_KEY,
    PREFIX,
    SEQ_KEY,
    UNTAGGED_PREFIX,
    conn_key,
    encode_time,
    legacy_key,
    meta_key,
    player_key,
    text,
    to_float,
)

log = logging.getLogger(__name__)

CONVERTED, MERGED, INVALID, GONE, BUSY = "converted", "merged", "invalid", "gone", "busy"
ATTEMPTS = 3


def parse_legacy(handle: int, raw) -> Connection | None:
    """The connection in a legacy document; None when it is not a JSON object (the migration
    reports such keys)."""
    try:
        doc = json.loads(text(raw))
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    connected_at = to_float(doc.get("connected_at"), 0.0)
    signal = to_float(metadata.get(LEGACY_SIGNAL_KEY), connected_at)
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


def merge(handle: int, fields: dict, meta: dict, legacy_raw) -> Connection | None:
    """One connection from its hash, its metadata hash and (during a rollout) its legacy
    document; the hashes win field by field because only the new code writes them."""
    base = parse_legacy(handle, legacy_raw) if legacy_raw is not None else None
    fields = {text(k): text(v) for k, v in fields.items()}
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
        base.connected_at = to_float(fields["connected_at"], base.connected_at)
    if "last_signal" in fields:
        base.last_signal = to_float(fields["last_signal"], base.last_signal)
    base.metadata.update({text(k): text(v) for k, v in meta.items()})
    return base


def legacy_handles(client: redis.Redis, *, count: int = 1000) -> list[int]:
    """Handles of every legacy key (SCAN; `count` keys per step)."""
    handles = []
    for key in client.scan_iter(match=f"{LEGACY_PREFIX}*", count=count):
        suffix = text(key)[len(LEGACY_PREFIX) :]
        if suffix.isdigit():
            handles.append(int(suffix))
    return sorted(handles)


def convert(client: redis.Redis, handle: int, *, dry_run: bool = False) -> str:
    """Convert one legacy key; returns converted, merged, invalid, gone or busy."""
    key = legacy_key(handle)
    for _ in range(ATTEMPTS):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if text(pipe.type(key)) != "string":
                    return GONE if text(pipe.type(key)) == "none" else INVALID
                conn = parse_legacy(handle, pipe.get(key))
                if conn is None:
                    return INVALID
                outcome = MERGED if pipe.exists(conn_key(handle)) else CONVERTED
                if dry_run:
                    return outcome
                fields = {
                    "state": conn.state,
                    "protocol": conn.protocol,
                    "remote_addr": conn.remote_addr,
                    "connected_at": encode_time(conn.connected_at),
                    "last_signal": encode_time(conn.last_signal),
                }
                if conn.player_id:
                    fields["player"] = conn.player_id
                    fields["player_name"] = conn.player_name or ""
                pipe.multi()
                for name, value in fields.items():
                    pipe.hsetnx(conn_key(handle), name, value)
                for name, value in conn.metadata.items():
                    pipe.hsetnx(meta_key(handle), name, value)
                pipe.sadd(HANDLES_KEY, handle)
                if conn.player_id:
                    pipe.sadd(player_key(conn.player_id), handle)
                pipe.delete(key)
                pipe.execute()
                return outcome
            except redis.WatchError:
                continue
    return BUSY


def migrate(
    client: redis.Redis,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    handles: list[int] | None = None,
) -> Counter:
    """Convert every legacy key. Returns a Counter of outcomes (plus `stopped` if interrupted)."""
    outcomes = Counter()
    handles = legacy_handles(client) if handles is None else handles
    for handle in handles:
        if should_stop():
            outcomes["stopped"] += 1
            break
        outcome = convert(client, handle, dry_run=dry_run)
        outcomes[outcome] += 1
        if outcome in (INVALID, BUSY):
            log.warning("legacy connection key %s left in place: %s", legacy_key(handle), outcome)
        if progress:
            progress(outcome)
    if handles and not dry_run:
        client.eval(scripts.RAISE_SEQ, 1, SEQ_KEY, max(handles))
    if not dry_run and not outcomes["stopped"]:
        # Reconciliation may stop scanning for legacy keys (single lookups still read them).
        client.set(LAYOUT_KEY, "hash")
    return outcomes


def retag(client: redis.Redis, *, dry_run: bool = False) -> int:
    """Move keys of the hash layout written before it carried its `{conn}` hash tag
    (`ns:conn:…`) to their tagged names; returns how many were found. Idempotent.

    A tagged key that already exists was written by new code, so it is newer: a hash keeps its
    fields and gains only the missing ones, sets are merged, the allocator keeps the higher
    value, a string stays as it is. Each key moves in one MULTI. Run it once the processes
    writing the untagged names are stopped (one Redis node: there was no cluster before).
    """
    found = 0
    for raw in client.scan_iter(match=f"{UNTAGGED_PREFIX}*", count=1000):
        old = text(raw)
        new = PREFIX + old[len(UNTAGGED_PREFIX) :]
        found += 1
        if dry_run:
            continue
        kind = text(client.type(old))
        pipe = client.pipeline(transaction=True)
        if kind == "hash":
            for field, value in client.hgetall(old).items():
                pipe.hsetnx(new, field, value)
        elif kind == "set":
            pipe.sunionstore(new, [new, old])
        elif kind == "string" and new == SEQ_KEY:
            value = int(client.get(old) or 0)
            if value > int(client.get(new) or 0):
                pipe.set(new, value)
        elif kind == "string":
            ttl = client.pttl(old)
            pipe.set(new, client.get(old) or "", nx=True, px=ttl if ttl > 0 else None)
        pipe.delete(old)
        pipe.execute()
    return found
