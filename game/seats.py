"""A game master takes a player's seat away from a combat that has not started.

Same lock order as `game.registration.register` (the player's row, then the combat's), so a
removal and a registration of the same player and combat queue instead of deadlocking. The
seat counter is given back by PostgreSQL's `give_back_seat` trigger, elsewhere by the update
here; the combat's version moves like it does for a registration (its representation,
participant_count, changed). A running fight keeps its seats: its turns and rewards are
computed from them.
"""

from django.db import connection, transaction
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
        Player.objects.select_for_update().filter(pk=player_id).values("pk").first()
        combat = Combat.objects.select_for_update().filter(pk=combat_id).first()
        if combat is None:
            raise CombatNotFound()
        if combat.status != Combat.Status.OPEN:
            raise SeatNotRemovable()
        seats_before = combat.seats
        deleted, _ = Registration.objects.filter(combat=combat, player_id=player_id).delete()
        if not deleted:
            raise NotSeated()
        changes = {"version": F("version") + 1, "updated_at": timezone.now()}
        if connection.vendor != "postgresql":  # PostgreSQL's trigger gives the seat back
            changes["seats"] = F("seats") - 1
        Combat.objects.filter(pk=combat.pk).update(**changes)
    return {"players": (seats_before, seats_before - 1)}
