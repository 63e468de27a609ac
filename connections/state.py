"""What one connection is, the errors the store raises, and the checks its input must pass.

A connection is identified by its `handle` (a positive integer unique across every process that
shares the Redis store). Metadata values are kept as strings everywhere — Redis hashes hold
strings, and keeping the in-process map the same way means a value reads back identically before
and after a restart.
"""

import math
import re
import time
from dataclasses import dataclass, field

from django.conf import settings

from nightstorm.errors import Conflict, DomainError, InvalidInput, NotFound

CONNECTED = "connected"  # socket open, no player yet
LOGGED_IN = "logged_in"  # bound to a player
STATES = (CONNECTED, LOGGED_IN)

METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def max_metadata_keys() -> int:
    return settings.CONNECTIONS_MAX_METADATA_KEYS


def max_metadata_value_chars() -> int:
    return settings.CONNECTIONS_MAX_METADATA_VALUE_CHARS


def idempotency_ttl_seconds() -> int:
    """How long an idempotent registration's handle is remembered: as long as the database
    keeps the idempotency record, so a retry the record no longer covers is a new request."""
    return settings.NIGHTSTORM_IDEMPOTENCY_TTL_HOURS * 3600


def format_duration(seconds: float) -> str:
    """`42s`, `7m`, `3h`, `2d`: the gateway's `who` and the admin page."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


class StoreUnavailable(DomainError):
    """A critical write could not reach Redis: the change did not happen and must be retried."""

    code = "store_unavailable"
    status = 503
    detail = "The connection store (Redis) is unavailable; retry shortly."


class ConnectionNotFound(NotFound):
    code = "connection_not_found"
    detail = "No live connection has this handle."


class AlreadyBound(Conflict):
    code = "already_bound"
    detail = "This connection is already bound to another player."


class InvalidMetadata(InvalidInput):
    code = "invalid_metadata"
    detail = "Metadata must be a flat object of short keys and string or number values."


class MetadataTooLarge(InvalidInput):
    code = "metadata_too_large"
    detail = "Too many metadata keys on this connection."


@dataclass(slots=True)
class Connection:
    """One live connection as the in-process map holds it (and as Redis stores it). Slotted:
    a gateway holds thousands and reconciliation builds them by the ten thousand."""

    handle: int
    protocol: str
    remote_addr: str
    connected_at: float
    last_signal: float
    state: str = CONNECTED
    player_id: str | None = None
    player_name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def idle_seconds(self, now: float | None = None) -> float:
        return max(0.0, (now if now is not None else time.time()) - self.last_signal)

    def as_dict(self, now: float | None = None) -> dict:
        return {
            "handle": self.handle,
            "state": self.state,
            "player": self.player_id,
            "player_name": self.player_name,
            "protocol": self.protocol,
            "remote_addr": self.remote_addr,
            "connected_at": self.connected_at,
            "last_signal": self.last_signal,
            "idle_seconds": round(self.idle_seconds(now), 1),
            "metadata": dict(self.metadata),
        }


def clean_metadata(changes) -> dict[str, str]:
    """Validate a metadata patch: a flat object, bounded keys, string or finite number values.

    Returns the patch with values as strings (numbers keep their JSON spelling).
    """
    if not isinstance(changes, dict) or not changes:
        raise InvalidMetadata("Metadata must be a non-empty JSON object.")
    if len(changes) > max_metadata_keys():
        raise MetadataTooLarge(f"At most {max_metadata_keys()} keys per update.")
    cleaned = {}
    limit = max_metadata_value_chars()
    for key, value in changes.items():
        if not isinstance(key, str) or not METADATA_KEY_RE.match(key):
            raise InvalidMetadata(
                f"Metadata key {str(key)[:70]!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidMetadata(f"Metadata value of {key!r} must be a string or a number.")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMetadata(f"Metadata value of {key!r} must be a finite number.")
        text = value if isinstance(value, str) else repr(value)
        if len(text) > limit:
            raise InvalidMetadata(f"Metadata value of {key!r} is longer than {limit} characters.")
        cleaned[key] = text
    return cleaned


def clean_text(value, *, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidInput(f"{name} must be a non-empty string of at most {max_length} characters.")
    return value.strip()
