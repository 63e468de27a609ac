"""Strict checks of what callers hand the jackpot services (never coerced)."""

import uuid

from django.conf import settings

from game.models import Player
from nightstorm.errors import InvalidInput

# Amounts live in 64-bit integer columns.
MAX_STORABLE = 2**63 - 1


def strict_int(value, *, field: str) -> int:
    """`value` if it is an int; bool is an int subclass and JSON floats like 1000.0 or 1e3
    are not integers of minor units, so both are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            f"{field} must be an integer number of minor units.", code=f"{field}_not_integer"
        )
    return value


def validate_bet(bet) -> int:
    """The bet as an int, or InvalidInput with a specific code (never coerces)."""
    if bet is None:
        raise InvalidInput("bet is required.", code="bet_required")
    bet = strict_int(bet, field="bet")
    if bet <= 0:
        raise InvalidInput("bet must be positive.", code="bet_not_positive")
    if bet > settings.JACKPOT_MAX_BET:
        raise InvalidInput(f"bet must be at most {settings.JACKPOT_MAX_BET}.", code="bet_too_large")
    return bet


def validate_operation_id(operation_id: str) -> str:
    if not isinstance(operation_id, str) or not 0 < len(operation_id) <= 100:
        raise InvalidInput("operation_id must be 1-100 characters.", code="invalid_operation_id")
    return operation_id


def player_id(player) -> uuid.UUID:
    """A Player or its id (UUID or string) as a UUID; the player must exist (a foreign key)."""
    if isinstance(player, Player):
        return player.pk
    try:
        return player if isinstance(player, uuid.UUID) else uuid.UUID(str(player))
    except ValueError:
        raise InvalidInput("player must be a player id.", code="invalid_player") from None
