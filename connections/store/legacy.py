"""Conversion of the legacy layout (`connection:<handle>` holding the whole connection as one
JSON string) into the hash layout of `connections.store`.

Each key converts in one WATCH/MULTI transaction: HSETNX of every field into the connection hash
and the metadata hash (a field the new code already wrote wins — it is newer), SADD to the live
set and the player index, DEL of the legacy key. Running the conversion again finds no legacy
key and changes nothing. A legacy key rewritten by an old process while it is being converted
makes EXEC fail; the key is then read again (a one-off tool may retry; the store never does).
"""

import logging
from collections import Counter
from collections.abc import Callable

import redis

from connections.store import (
    HANDLES_KEY,
    LAYOUT_KEY,
    LEGACY_PREFIX,
    SEQ_KEY,
    _text,
    conn_key,
    encode_time,
    legacy_key,
    meta_key,
    parse_legacy,
    player_key,
)

log = logging.getLogger(__name__)

CONVERTED, MERGED, INVALID, GONE, BUSY = "converted", "merged", "invalid", "gone", "busy"
ATTEMPTS = 3

# Raise the handle allocator above every converted handle so no new connection reuses one.
RAISE_SEQ_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def legacy_handles(client: redis.Redis) -> list[int]:
    handles = []
    for key in client.scan_iter(match=f"{LEGACY_PREFIX}*", count=1000):
        suffix = _text(key)[len(LEGACY_PREFIX) :]
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
                if _text(pipe.type(key)) != "string":
                    return GONE if _text(pipe.type(key)) == "none" else INVALID
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
        client.eval(RAISE_SEQ_LUA, 1, SEQ_KEY, max(handles))
    if not dry_run and not outcomes["stopped"]:
        # Reconciliation may stop scanning for legacy keys (single lookups still read them).
        client.set(LAYOUT_KEY, "hash")
    return outcomes
