"""Accounts and players: one player per user, created with the account."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from game.errors import UsernameTaken
from game.models import Player, Zone
from nightstorm.errors import InvalidInput

STARTING_ZONE = "ASH1"


class WeakPassword(InvalidInput):
    code = "weak_password"
    detail = "This password is too weak."


def register_player(*, username: str, password: str) -> tuple[Player, str]:
    """Create a user, their player (in the starting zone) and their API token.

    Owns its transaction. Raises WeakPassword (400) from Django's password validators and
    UsernameTaken (409) — the unique username decides when two sign-ups race.
    """
    User = get_user_model()
    try:
        validate_password(password, user=User(username=username))
    except ValidationError as exc:
        raise WeakPassword(" ".join(exc.messages)) from exc
    zone = Zone.objects.filter(code=STARTING_ZONE).first() or Zone.objects.first()
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password)
            player = Player.objects.create(user=user, name=username, zone=zone)
            token = Token.objects.create(user=user)
    except IntegrityError as exc:
        raise UsernameTaken() from exc
    return player, token.key
