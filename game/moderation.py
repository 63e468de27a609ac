"""A game master's hold on an account: suspend (no login, no API), reinstate, revoke the API
token. The player row and its history stay; each returns `{field: (old, new)}` for the audit
trail."""

from django.db import transaction
from rest_framework.authtoken.models import Token

from game.models import Player


def _user_locked(player_id):
    player = Player.all_objects.select_related("user").get(pk=player_id)
    user = type(player.user).objects.select_for_update().get(pk=player.user_id)
    return user


def suspend(*, player_id) -> dict:
    """The account can no longer log in (admin or API) and its token stops working."""
    with transaction.atomic(durable=True):
        user = _user_locked(player_id)
        before = user.is_active
        user.is_active = False
        user.save(update_fields=["is_active"])
        revoked, _ = Token.objects.filter(user=user).delete()
    return {"active": (before, False), "API token": ("revoked" if revoked else "none", "none")}


def reinstate(*, player_id) -> dict:
    """Undo `suspend`; the player logs in again to get a new token."""
    with transaction.atomic(durable=True):
        user = _user_locked(player_id)
        before = user.is_active
        user.is_active = True
        user.save(update_fields=["is_active"])
    return {"active": (before, True)}


def revoke_token(*, player_id) -> dict:
    """The current API token stops working; logging in (`POST /api/v1/auth/token/`) issues a
    new one."""
    with transaction.atomic(durable=True):
        user = _user_locked(player_id)
        revoked, _ = Token.objects.filter(user=user).delete()
    return {"API token": ("active" if revoked else "none", "revoked")}
