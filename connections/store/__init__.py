"""The connection store on Redis: key layout (`keys`), the atomic scripts (`scripts`), the
legacy JSON layout and its migration (`legacy`), and the store itself (`redis_store`)."""

from connections.store.keys import (
    HANDLES_KEY,
    IDEM_PREFIX,
    LAYOUT_KEY,
    LEGACY_PREFIX,
    PLAYER_PREFIX,
    PREFIX,
    SEQ_KEY,
    conn_key,
    encode_time,
    idem_key,
    legacy_key,
    meta_key,
    player_key,
)
from connections.store.legacy import merge, parse_legacy
from connections.store.redis_store import (
    HANDLE_BLOCK,
    LOAD_BATCH,
    RedisConnectionStore,
    delete_all,
    from_hash,
)

__all__ = [
    "HANDLES_KEY",
    "HANDLE_BLOCK",
    "IDEM_PREFIX",
    "LAYOUT_KEY",
    "LEGACY_PREFIX",
    "LOAD_BATCH",
    "PLAYER_PREFIX",
    "PREFIX",
    "SEQ_KEY",
    "RedisConnectionStore",
    "conn_key",
    "delete_all",
    "encode_time",
    "from_hash",
    "idem_key",
    "legacy_key",
    "merge",
    "meta_key",
    "parse_legacy",
    "player_key",
]
