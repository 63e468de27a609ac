"""Registering a player for a combat: never more players than seats, never two active seats.

The race: a hundred players click "join" on a 10-seat combat at once. Counting seats and then
inserting is check-then-act; two requests could both count 9 and both insert. So the count and
the insert run in one transaction that first takes the combat row with `SELECT … FOR UPDATE`:
registrations for one combat queue on that row and each sees the seats its predecessors took.
The player row is locked next (fixed order: combat, then player), which serialises this with
the player's own travel requests.

The database backs this up: unique (combat, player) and a partial unique index "one active seat
per player". A path that skipped the lock still could not seat a player twice; an
IntegrityError from those constraints is mapped to the same 409 codes.

`LOCK_COMBAT_ROW` exists only so the race tests can show what happens without the lock.
"""

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from game import metrics
from game.errors import (
    AlreadyRegistered,
    CombatFull,
    CombatNotFound,
    InOtherCombat,
    RegistrationClosed,
)
from game.models import Combat, Player, Registration
from nightstorm.errors import DomainError
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout, set_lock_timeout

LOCK_COMBAT_ROW = True  # tests flip this to demonstrate the race; never change it in code

_CONSTRAINT_ERRORS = {
    "game_registration_one_seat_per_player": AlreadyRegistered,
    "game_registration_one_active_combat": InOtherCombat,
}


def _constraint_error(exc: IntegrityError) -> type[DomainError] | None:
    cause = exc.__cause__
    name = getattr(getattr(cause, "diag", None), "constraint_name", None)
    if name in _CONSTRAINT_ERRORS:
        return _CONSTRAINT_ERRORS[name]
    text = str(exc)  # SQLite names no constraint; match the columns instead
    for constraint, error in _CONSTRAINT_ERRORS.items():
        if constraint in text:
            return error
    if "game_registration.combat_id, game_registration.player_id" in text:
        return AlreadyRegistered
    if "game_registration.player_id" in text:
        return InOtherCombat
    return None


def _register_locked(player_id, combat_id) -> Registration:
    combats = Combat.objects.filter(pk=combat_id)
    if LOCK_COMBAT_ROW:
        combats = combats.select_for_update()
    combat = combats.first()
    if combat is None:
        raise CombatNotFound()
    if combat.status != Combat.Status.OPEN:
        raise RegistrationClosed()
    if LOCK_COMBAT_ROW:
        Player.objects.select_for_update().filter(pk=player_id).values("pk").first()
    # Seats taken, this player's seat here, this player's active seat anywhere: one query.
    here, active = Q(combat_id=combat.pk), Q(player_id=player_id, active=True)
    counts = Registration.objects.filter(here | active).aggregate(
        seats=Count("pk", filter=here),
        mine=Count("pk", filter=here & Q(player_id=player_id)),
        active=Count("pk", filter=active),
    )
    if counts["mine"]:
        raise AlreadyRegistered()
    if counts["active"]:
        raise InOtherCombat()
    if counts["seats"] >= combat.capacity:
        raise CombatFull()
    seat = Registration.objects.create(combat=combat, player_id=player_id)
    # The combat's representation (participant_count) changed: bump its version so its ETag
    # changes too.
    Combat.objects.filter(pk=combat.pk).update(version=F("version") + 1, updated_at=timezone.now())
    return seat


@operation("game.register")
def register(*, player_id, combat_id) -> Registration:
    """Give `player_id` a seat in `combat_id`, or raise the reason it cannot have one.

    Owns its transaction (joins the caller's as a savepoint, e.g. under `@idempotent`).
    Raises CombatNotFound, RegistrationClosed, AlreadyRegistered, InOtherCombat, CombatFull;
    Busy (503) if the combat row stays locked longer than NIGHTSTORM_LOCK_TIMEOUT_MS.
    """
    try:
        with busy_on_lock_timeout():
            try:
                with transaction.atomic():
                    set_lock_timeout()
                    seat = _register_locked(player_id, combat_id)
            except IntegrityError as exc:
                error = _constraint_error(exc)
                if error is None:
                    raise
                raise error() from exc
    except DomainError as exc:
        metrics.REGISTRATIONS.labels(exc.code).inc()
        raise
    metrics.REGISTRATIONS.labels("registered").inc()
    return seat
