"""Distributed locks with expiry, bounded waits and fencing tokens.

    with distributed_lock("zone:AB12", ttl=10, wait=2) as lease:
        ...                       # long work calls lease.extend() between steps
        check_fence("zone:AB12", lease.fence)   # inside the transaction that writes

Two backends, chosen by `NIGHTSTORM_LOCK_BACKEND`:

* `redis` — one Lua script sets the key with NX and PX and takes the next fencing token; release
  and extend are Lua compare-and-act on the owner token, so only the holder can release or
  extend. Keys are raw (`nightstorm:lock:{<key>}`, hash-tagged for Redis Cluster), not
  django-redis's prefixed cache keys, so every process that speaks raw Redis sees the same
  lock. The token is `max(last + 1, Redis TIME in µs)` so it keeps growing even if Redis
  restarts without persistence or fails over to a replica that missed the last grant.
* `database` — a lease row per key (`LockLease`) claimed with one upsert whose `WHERE` only
  matches an expired lease; expiry and token come from the database's clock. Works on SQLite
  for the embedded default. Its statements must not run inside a transaction (other processes
  could not see the lease), so acquiring inside `atomic()` is refused.

Every lock has a TTL (a crashed holder cannot block forever) and a bounded wait; failing to
acquire raises `LockUnavailable`, never proceeds. A holder whose lease expired may still be
running: writes it makes under the lock go through `check_fence`, which refuses any token older
than one already accepted for that resource.
"""

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from nightstorm import metrics
from nightstorm.errors import LockLost, LockUnavailable, StaleFencingToken

log = logging.getLogger(__name__)

REDIS_PREFIX = "nightstorm:lock:"
REDIS_FENCE_PREFIX = "nightstorm:fence:"


def redis_keys(key: str) -> list[str]:
    """The lock key and its fence key. The `{key}` hash tag puts both in one Redis Cluster slot,
    so the acquire script (which touches both) runs on one node; different locks still spread
    over the cluster's slots."""
    return [f"{REDIS_PREFIX}{{{key}}}", f"{REDIS_FENCE_PREFIX}{{{key}}}"]


# KEYS[1] lock key, KEYS[2] fence key; ARGV[1] owner, ARGV[2] ttl ms. Returns the fence or 0.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local fence = math.max(last + 1, now)
  redis.call('SET', KEYS[2], string.format('%d', fence))
  return fence
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisBackend:
    name = "redis"

    def __init__(self, client=None):
        if client is None:
            from django_redis import get_redis_connection

            client = get_redis_connection("default")
        self.client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    # A Redis error (unreachable, failing over, READONLY on a demoted primary) counts as "not
    # granted" / "not held": the caller gets LockUnavailable or LockLost, never a half-known
    # lease. A grant whose reply was lost just expires with its TTL.

    def try_acquire(self, key: str, owner: str, ttl_ms: int) -> int | None:
        try:
            fence = self._acquire(keys=redis_keys(key), args=[owner, ttl_ms])
        except redis.RedisError as exc:
            log.warning("lock %s: Redis refused the acquire: %s", key, exc)
            return None
        return int(fence) or None

    def release(self, key: str, owner: str) -> bool:
        try:
            return bool(self._release(keys=redis_keys(key)[:1], args=[owner]))
        except redis.RedisError as exc:
            log.warning("lock %s: Redis refused the release: %s", key, exc)
            return False

    def extend(self, key: str, owner: str, ttl_ms: int) -> bool:
        try:
            return bool(self._extend(keys=redis_keys(key)[:1], args=[owner, ttl_ms]))
        except redis.RedisError as exc:
            log.warning("lock %s: Redis refused the extend: %s", key, exc)
            return False


class DatabaseBackend:
    """Lease rows in the default database; each statement runs in autocommit.

    Expiry is measured on the database's clock (`clock_timestamp()`), never the app server's:
    two web hosts whose clocks disagree would otherwise each see the other's lease expired. The
    fence is `max(last + 1, database time in µs)`, the Redis backend's rule, so switching
    `NIGHTSTORM_LOCK_BACKEND` either way keeps tokens growing (given the two servers' clocks
    agree to within the time the switch takes; a lower token is refused by `check_fence`, never
    let through).
    """

    name = "database"

    def _clock(self) -> tuple[str, str, str]:
        """SQL for: now, now + %s milliseconds, now in epoch microseconds."""
        if connection.vendor == "postgresql":
            return (
                "clock_timestamp()",
                "clock_timestamp() + %s * interval '1 millisecond'",
                "(extract(epoch from clock_timestamp()) * 1000000)::bigint",
            )
        # SQLite (the embedded default): Django stores datetimes as ISO text in UTC.
        stamp = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now'"
        return (
            f"{stamp})",
            f"{stamp}, '+' || (%s / 1000.0) || ' seconds')",
            "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
        )

    def _execute(self, sql: str, params) -> list:
        if connection.in_atomic_block:
            raise RuntimeError("database locks must be taken outside a transaction")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]

    def try_acquire(self, key: str, owner: str, ttl_ms: int) -> int | None:
        now, later, micros = self._clock()
        greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
        rows = self._execute(
            "INSERT INTO nightstorm_lock_lease (key, owner, fence, expires_at) "
            f"VALUES (%s, %s, {micros}, {later}) "
            "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
            f"fence = {greatest}(nightstorm_lock_lease.fence + 1, excluded.fence), "
            "expires_at = excluded.expires_at "
            f"WHERE nightstorm_lock_lease.expires_at <= {now} "
            "RETURNING fence",
            [key, owner, ttl_ms],
        )
        return rows[0][0] if rows else None

    def release(self, key: str, owner: str) -> bool:
        now, _, _ = self._clock()
        (count,) = self._execute(
            f"UPDATE nightstorm_lock_lease SET owner = '', expires_at = {now} "
            f"WHERE key = %s AND owner = %s AND expires_at > {now}",
            [key, owner],
        )[0]
        return count == 1

    def extend(self, key: str, owner: str, ttl_ms: int) -> bool:
        now, later, _ = self._clock()
        (count,) = self._execute(
            f"UPDATE nightstorm_lock_lease SET expires_at = {later} "
            f"WHERE key = %s AND owner = %s AND expires_at > {now}",
            [ttl_ms, key, owner],
        )[0]
        return count == 1


_backends: dict[str, object] = {}


def get_backend(name: str | None = None):
    name = name or settings.NIGHTSTORM_LOCK_BACKEND
    if name not in _backends:
        _backends[name] = RedisBackend() if name == "redis" else DatabaseBackend()
    return _backends[name]


@dataclass
class Lease:
    """A granted lock. `fence` is monotonic per key across all holders."""

    key: str
    owner: str
    fence: int
    ttl_ms: int
    backend: object = field(repr=False)
    released: bool = False

    def extend(self, ttl: float | None = None) -> None:
        """Push the expiry `ttl` seconds (default: the original TTL) from now, or raise LockLost."""
        ttl_ms = int(ttl * 1000) if ttl is not None else self.ttl_ms
        if self.released or not self.backend.extend(self.key, self.owner, ttl_ms):
            raise LockLost(f"The lease on {self.key!r} was lost.")

    def release(self) -> bool:
        """Release if still held; False when the lease had already expired or moved on."""
        if self.released:
            return False
        self.released = True
        return self.backend.release(self.key, self.owner)


def acquire(key: str, *, ttl: float, wait: float, backend: str | None = None) -> Lease:
    """Acquire `key` for `ttl` seconds, polling up to `wait` seconds; raise LockUnavailable."""
    if ttl <= 0 or wait < 0:
        raise ValueError("a lock needs a positive ttl and a non-negative wait")
    impl = get_backend(backend)
    owner = secrets.token_hex(16)
    ttl_ms = max(1, int(ttl * 1000))
    started = time.monotonic()
    deadline = started + wait
    pause = 0.001
    while True:
        fence = impl.try_acquire(key, owner, ttl_ms)
        if fence:
            metrics.LOCK_WAIT.labels(impl.name, "acquired").observe(time.monotonic() - started)
            return Lease(key, owner, fence, ttl_ms, impl)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            metrics.LOCK_WAIT.labels(impl.name, "unavailable").observe(time.monotonic() - started)
            raise LockUnavailable(f"Lock {key!r} was not acquired within {wait:g} s.")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.05)


@contextlib.contextmanager
def distributed_lock(key: str, ttl: float, wait: float, *, backend: str | None = None):
    """Hold `key` for the block. Both `ttl` and `wait` are required, in seconds."""
    lease = acquire(key, ttl=ttl, wait=wait, backend=backend)
    try:
        yield lease
    finally:
        if not lease.release():
            log.warning("lock %s: lease expired before release (fence %s)", key, lease.fence)


def check_fence(key: str, fence: int) -> None:
    """Record that a write for `key` carries token `fence`; refuse it if a newer one was seen.

    Call it inside the transaction that performs the guarded write: the mark and the write
    commit or roll back together, and the row lock the upsert takes serialises writers.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO nightstorm_fence_mark (key, fence, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, "
            "updated_at = excluded.updated_at "
            "WHERE nightstorm_fence_mark.fence <= excluded.fence "
            "RETURNING fence",
            [key, fence, timezone.now()],
        )
        accepted = cursor.fetchall()
    if not accepted:
        raise StaleFencingToken(f"Token {fence} for {key!r} is older than the last write.")
