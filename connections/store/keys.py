"""The Redis key layout of the connection store and how values are spelled in it.

Every key lives on the Redis of `REDIS_URL`:

    ns:{conn}:<handle>             hash   state, player, player_name, protocol, remote_addr,
                                          connected_at, last_signal (epoch seconds)
    ns:{conn}:<handle>:meta        hash   custom metadata, string -> string
    ns:{conn}:handles              set    handles of live connections
    ns:{conn}:player:<player id>   set    handles bound to that player
    ns:{conn}:seq                  string handle allocator (INCRBY blocks in the gateway, INCR
                                          in the web tier's registration script)
    ns:{conn}:layout               string "hash" once `migrate_connection_state` has run: from
                                          then on reconciliation stops scanning for legacy keys
    ns:{conn}:idem:<sha256>        string "<handle> <request digest>" of an idempotent REST
                                          registration, for the idempotency TTL
    connection:<handle>            string LEGACY layout: the whole connection as one JSON
                                          document (see `connections.store.legacy`)

The `{conn}` hash tag puts the whole layout in one Redis Cluster slot: the scripts touch a
connection, the handle set and a player index together (and CREATE and REMOVE reach keys they
derive from stored values), which Redis Cluster allows only within one slot. The store thus
lives on one node of a cluster; other users of the cluster (locks, the cache) spread out.
Legacy keys never existed on a cluster, so there the scripts get `absent_legacy_key`, a
same-slot name nothing writes (see `legacy_key_for`).
"""

PREFIX = "ns:{conn}:"
# The same layout before it carried the hash tag; `legacy.retag` moves such keys over.
UNTAGGED_PREFIX = "ns:conn:"
HANDLES_KEY = f"{PREFIX}handles"
SEQ_KEY = f"{PREFIX}seq"
LAYOUT_KEY = f"{PREFIX}layout"
PLAYER_PREFIX = f"{PREFIX}player:"
IDEM_PREFIX = f"{PREFIX}idem:"
META_SUFFIX = ":meta"
LEGACY_PREFIX = "connection:"
LEGACY_PATTERN = f"{LEGACY_PREFIX}*"
# The seed's name for the idle-time signal inside the legacy document's metadata.
LEGACY_SIGNAL_KEY = "LastConnectionSignal"


def conn_key(handle: int) -> str:
    return f"{PREFIX}{handle}"


def meta_key(handle: int) -> str:
    return f"{PREFIX}{handle}{META_SUFFIX}"


def player_key(player_id: str) -> str:
    return f"{PLAYER_PREFIX}{player_id}"


def legacy_key(handle: int) -> str:
    return f"{LEGACY_PREFIX}{handle}"


def absent_legacy_key(handle: int) -> str:
    return f"{PREFIX}no-legacy:{handle}"


def is_cluster(client) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def legacy_key_for(client):
    """`legacy_key` on one Redis (or Sentinel); `absent_legacy_key` on a Redis Cluster, whose
    scripts may only name keys of their own slot."""
    return absent_legacy_key if is_cluster(client) else legacy_key


def idem_key(token: str) -> str:
    return f"{IDEM_PREFIX}{token}"


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_float(value, default: float) -> float:
    try:
        return float(text(value))
    except (TypeError, ValueError):
        return default


def encode_time(value: float) -> str:
    return f"{value:.6f}"
