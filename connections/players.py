"""What the connections app knows about the game's players, in one place.

The gateway does not import `game`: `run_gateway` hands it `authenticate_player` as a callable,
and the REST bind resolves its `player` field here.
"""

import uuid

from django.db import connections

from nightstorm.errors import NotFound


class UnknownPlayer(NotFound):
    code = "unknown_player"
    detail = "No player has this id or name."


def authenticate_player(username: str, password: str) -> tuple[str, str] | None:
    """(player id, player name) for valid credentials of an active account with a player.

    Runs on a gateway executor thread; closes that thread's database connection afterwards so
    no connection outlives the call (logins are rare next to lines).
    """
    from django.contrib.auth import authenticate

    from game.models import Player

    try:
        user = authenticate(username=username, password=password)
        if user is None or not user.is_active:
            return None
        row = Player.objects.filter(user=user).values_list("id", "name").first()
        return (str(row[0]), row[1]) if row else None
    finally:
        connections.close_all()


def resolve_player(value: str) -> tuple[str, str]:
    """(player id, player name) of the player with this id (UUID) or name."""
    from game.models import Player

    players = Player.objects.all()
    try:
        row = players.filter(pk=uuid.UUID(value)).values_list("id", "name").first()
    except ValueError:
        row = players.filter(name=value).values_list("id", "name").first()
    if row is None:
        raise UnknownPlayer()
    return str(row[0]), row[1]
