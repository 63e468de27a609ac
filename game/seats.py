"""A game master takes a player's seat away from a combat that has not started.

Same lock order as `game.registration.register` (the combat row, then the player's), so a
removal and a registration of the same combat queue instead of interleaving, and the combat's
version moves like it does for a registration (its representation, participant_count,
changed). A running fight keeps its seats: its turns and rewards are computed from them.
"""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from game.errors import CombatNotFound
from game.models import Combat, Player, Registration
from nightstorm.errors import DomainError


class SeatNotRemovable(DomainError):
    code = "seat_not_removable"
    status = 409
    detail = "Seats can only be removed while the combat is open."


class NotSeated(DomainError):
    code = "not_seated"
    status = 404
    detail = "This player has no seat in this combat."


def remove_player(*, combat_id, player_id) -> dict:
    """Free `player_id`'s seat in open combat `combat_id`; return `{field: (old, new)}`.

    Owns its transaction. Raises CombatNotFound, SeatNotRemovable (the combat is no longer
    open), NotSeated.
    """
    with transaction.atomic(durable=True):
        combat = Combat.objects.select_for_update().filter(pk=combat_id).first()
        if combat is None:
            raise CombatNotFound()
        if combat.status != Combat.Status.OPEN:
            raise SeatNotRemovable()
        Player.objects.select_for_update().filter(pk=player_id).values("pk").first()
        seats_before = Registration.objects.filter(combat=combat).count()
        deleted, _ = Registration.objects.filter(combat=combat, player_id=player_id).delete()
        if not deleted:
            raise NotSeated()
        Combat.objects.filter(pk=combat.pk).update(
            version=F("version") + 1, updated_at=timezone.now()
        )
    return {"players": (seats_before, seats_before - 1)}
