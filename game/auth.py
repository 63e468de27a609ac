"""Token authentication for the player's own endpoints: the caller's player comes with the token.

Every player endpoint needs the caller's player; looking it up after authenticating is one more
round trip per request, the largest cost of a light request in the workers' profiles. This
class loads the player, its zone and whether a journey is in flight in the
token's query. `player_of(request)` answers from it, or with one query when the request was
authenticated another way (a session).
"""

from django.db.models import Exists, OuterRef
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import SessionAuthentication

from game import selectors
from game.errors import NoPlayer
from game.models import Journey, Player
from nightstorm.api.authentication import TokenAuthentication


class PlayerTokenAuthentication(TokenAuthentication):
    def token_queryset(self):
        in_flight = Journey.objects.filter(
            player_id=OuterRef("user__player__id"), arrived_at__isnull=True
        )
        return (
            super()
            .token_queryset()
            .select_related("user__player__zone")
            .annotate(traveling=Exists(in_flight))
        )


# The player endpoints' authenticators: the token (with the player), or the admin's session.
PLAYER_AUTHENTICATION = [PlayerTokenAuthentication, SessionAuthentication]


def player_of(request) -> Player:
    """The caller's live player, with `zone` and `traveling` (raises NoPlayer)."""
    token = request.auth
    if hasattr(token, "traveling"):  # authenticated by PlayerTokenAuthentication
        player = getattr(request.user, "player", None)
        if player is None or player.deleted_at is not None:
            raise NoPlayer()
        player.traveling = token.traveling
        return player
    player = selectors.player_of_user(request.user)
    if player is None:
        raise NoPlayer()
    return player


class PlayerTokenScheme(OpenApiAuthenticationExtension):
    """The same `Authorization: Token …` header in the OpenAPI schema, under its own name (two
    authentication classes may not share one)."""

    target_class = PlayerTokenAuthentication
    name = "playerTokenAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token authentication with the prefix "Token"',
        }
