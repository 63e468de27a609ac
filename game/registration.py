"""Registering a player for a combat: never more players than seats, never two active seats.

The race: a hundred players click "join" on a 10-seat combat at once. Counting seats and then
inserting is check-then-act: two requests could both count 9 and both insert. Instead a seat is
claimed by one conditional statement on the combat's counter,

    UPDATE game_combat SET seats = seats + 1 WHERE id = … AND status = 'open' AND seats < capacity

which PostgreSQL evaluates against the latest committed row (a claim that waited re-checks the
condition), so at most `capacity` claims succeed. The combat row is held only from that UPDATE
to the commit, i.e. for the insert of the seat: on PostgreSQL the claim, the insert and the
COMMIT go in one round trip, so the row is held only for as long as the server takes. Most
losers are refused from one plain read before any transaction, without waiting at all. A CHECK
constraint (`seats <= capacity`) backs the counter up.

A player may join only from the combat's zone and not while on a journey (a journey whose
arrival time has passed counts as arrived). The player's row is locked first, in a statement of
its own, and the checks read after it (the two sent together, `nightstorm.sql.run_together`);
travel does the same, so a journey cannot start between this check and the seat, nor a seat be
taken between travel's check and its journey. Lock order everywhere is player, then combat.

The unique indexes stay the backstop for the player's side: unique (combat, player) and "one
active seat per player". An IntegrityError from them rolls the claim back with the transaction
and is answered with the same 409 codes.
"""

import logging
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone

from game import metrics
from game.errors import (
    AlreadyRegistered,
    CombatFull,
    CombatNotFound,
    InOtherCombat,
    NoPlayer,
    NotInCombatZone,
    RegistrationClosed,
    Traveling,
)
from game.models import Combat, Player, Registration
from nightstorm import sql
from nightstorm.errors import DomainError
from nightstorm.operations import operation
from nightstorm.transactions import busy_on_lock_timeout, transient_retry

_CONSTRAINT_ERRORS = {
    "game_registration_one_seat_per_player": AlreadyRegistered,
    "game_registration_one_active_combat": InOtherCombat,
}

# `FOR NO KEY UPDATE` conflicts with travel's `FOR UPDATE` but not with the key-share locks that
# inserts referencing the player take. The row filter bounds the lock wait first
# (`set_config(…, true)` is SET LOCAL, evaluated in the scan before the lock is taken), so the
# transaction's lock timeout costs no statement of its own.
_LOCK_PLAYER_SQL = """
SELECT 1 FROM game_player
 WHERE id = %s AND set_config('lock_timeout', %s, true) IS NOT NULL
   FOR NO KEY UPDATE
"""

# Everything the checks need, in one round trip after the player's lock: the journey in flight
# and whether it is due, the player's seats, and the combat as last committed (no lock: the
# claim below re-checks status and seats). Plain SQL for the same reason as travel's state
# query: this is the hot path of a registration storm. Every value is a bound parameter.
_STATE_SQL = """
SELECT p.zone_id,
       j.destination_id,
       j.arrives_at <= %s,
       EXISTS (SELECT 1 FROM game_registration r WHERE r.player_id = p.id AND r.active),
       EXISTS (SELECT 1 FROM game_registration r WHERE r.player_id = p.id AND r.combat_id = %s),
       c.zone_id, c.status, c.seats, c.capacity
  FROM game_player p
  LEFT JOIN game_journey j ON j.player_id = p.id AND j.arrived_at IS NULL
  LEFT JOIN game_combat c ON c.id = %s AND c.deleted_at IS NULL
 WHERE p.id = %s AND p.deleted_at IS NULL
"""

_CLAIM_SQL = """
UPDATE game_combat SET seats = seats + 1, version = version + 1, updated_at = %s
 WHERE id = %s AND status = 'open' AND seats < capacity AND deleted_at IS NULL
"""

# PostgreSQL: the claim and the seat's insert in one statement; no seat row without its claim.
_SEAT_COLUMNS = ("combat_id", "player_id", "active", "hp", "damage_dealt", "created_at")
_SEAT_SQL = f"""
WITH claimed AS ({_CLAIM_SQL} RETURNING id)
INSERT INTO game_registration ({", ".join(_SEAT_COLUMNS)})
SELECT claimed.id, %s, %s, %s, %s, %s FROM claimed
RETURNING id
"""
_STATUS_SQL = "SELECT status FROM game_combat WHERE id = %s"


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


def _uuid_param(value):
    return Combat._meta.pk.get_db_prep_value(value, connection)


def _state(player_id, combat_id, now: datetime, *, lock: bool):
    player = Player._meta.pk.get_db_prep_value(player_id, connection)
    combat = _uuid_param(combat_id)
    at = connection.ops.adapt_datetimefield_value(now)
    state = (_STATE_SQL, [at, combat, combat, player])
    if lock and connection.features.has_select_for_update:
        # The lock is its own statement: in READ COMMITTED a statement that waited for a row
        # lock still reads every other table as of its start, so a check folded into the
        # locking SELECT would miss the journey whose commit it waited for. The two are sent
        # together, in one round trip.
        timeout = str(settings.NIGHTSTORM_LOCK_TIMEOUT_MS)
        _, rows = sql.run_together(connection.alias, [(_LOCK_PLAYER_SQL, [player, timeout]), state])
    else:
        rows = sql.run(connection.alias, *state)
    return rows[0] if rows else None


def _check(row) -> None:
    """Raise the first reason the state `row` refuses a seat, in the documented order."""
    if row is None:
        raise NoPlayer()
    zone_id, flight_to, flight_due, active, here, combat_zone, status, seats, capacity = row
    if combat_zone is None:
        raise CombatNotFound()
    if status != Combat.Status.OPEN:
        raise RegistrationClosed()
    if here:
        raise AlreadyRegistered()
    if active:
        raise InOtherCombat()
    if flight_to is not None:
        if not flight_due:
            raise Traveling()
        zone_id = flight_to  # arrived; the arrival itself is applied by the next read
    if zone_id != combat_zone:
        raise NotInCombatZone()
    if seats >= capacity:
        raise CombatFull()


def _claim_seat(combat_id, now: datetime) -> bool:
    at = connection.ops.adapt_datetimefield_value(now)
    return sql.run_count(connection.alias, _CLAIM_SQL, [at, _uuid_param(combat_id)]) == 1


def _no_seat(status: str | None) -> DomainError:
    """Why a claim found no seat although the state read before it showed one free."""
    return CombatFull() if status == Combat.Status.OPEN else RegistrationClosed()


def _take_seat(player_id, combat_id, now: datetime) -> Registration:
    """The claim and the seat's insert, the transaction's last work; raises CombatFull or
    RegistrationClosed when the claim finds no free seat (filled or closed since the read)."""
    if connection.vendor != "postgresql":
        if not _claim_seat(combat_id, now):
            raise _no_seat(
                Combat.objects.filter(pk=combat_id).values_list("status", flat=True).first()
            )
        return Registration.objects.create(combat_id=combat_id, player_id=player_id, created_at=now)
    seat = Registration(combat_id=combat_id, player_id=player_id, created_at=now)
    at = connection.ops.adapt_datetimefield_value(now)
    player = Player._meta.pk.get_db_prep_value(player_id, connection)
    combat = _uuid_param(combat_id)
    # The claim's (updated_at, combat), then the seat's columns after combat_id.
    params = [at, combat, player, seat.active, seat.hp, seat.damage_dealt, at]
    # The seat, the combat's status as committed after it (why there was none) and the COMMIT
    # in one round trip: the claimed combat row is held for as long as the server takes, not
    # until this process is scheduled again. The status rides along with every seat rather
    # than being read after a lost claim: in a storm the attempts that lose the claim after
    # both reads (about 15 in 100) are its slowest (they queue on the combat row behind the
    # winners), and a read of its own would add a BEGIN, the read and a COMMIT to them.
    rows, status = sql.run_together(
        connection.alias, [(_SEAT_SQL, params), (_STATUS_SQL, [combat])], commit=True
    )
    if not rows:
        raise _no_seat(status[0][0] if status else None)
    seat.pk, seat._state.adding, seat._state.db = rows[0][0], False, connection.alias
    return seat


@transient_retry(name="registration.register")
def _register_in_transaction(player_id, combat_id, now: datetime) -> Registration:
    # The lock timeout is set by the player's lock statement (PostgreSQL; no row locks elsewhere).
    _check(_state(player_id, combat_id, now, lock=True))
    return _take_seat(player_id, combat_id, now)


@operation("game.register", ok_level=logging.DEBUG)  # the row is the record
def register(*, player_id, combat_id, now: datetime | None = None) -> Registration:
    """Give `player_id` a seat in `combat_id`, or raise the reason it cannot have one.

    Owns its transaction (joins the caller's as a savepoint, e.g. under `@idempotent`).
    Raises NoPlayer, CombatNotFound (404); RegistrationClosed, AlreadyRegistered,
    InOtherCombat, Traveling, NotInCombatZone, CombatFull (409); Busy (503) if a row stays
    locked longer than NIGHTSTORM_LOCK_TIMEOUT_MS.
    """
    now = now or timezone.now()
    try:
        # Most requests of a storm are refused (the combat is full). A refusal read without
        # any lock is still true at the moment of that read (a seat taken stays taken, a
        # closed combat stays closed), so it is answered from one plain read, outside the
        # transaction that a seat needs.
        _check(_state(player_id, combat_id, now, lock=False))
        with busy_on_lock_timeout():
            try:
                seat = _register_in_transaction(player_id, combat_id, now)
            except IntegrityError as exc:
                error = _constraint_error(exc)
                if error is None:
                    raise
                raise error() from exc
    except DomainError as exc:
        metrics.REGISTRATIONS.labels(exc.code).inc()
        raise
    _REGISTERED.inc()
    return seat


_REGISTERED = metrics.REGISTRATIONS.labels("registered")  # looked up once: every seat counts
