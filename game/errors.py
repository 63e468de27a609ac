"""The game's refusals, each with the stable `code` the API answers with."""

from nightstorm.errors import Conflict, InvalidInput, NotFound


class CombatNotFound(NotFound):
    code = "combat_not_found"
    detail = "No such combat."


class CombatFull(Conflict):
    code = "combat_full"
    detail = "This combat has no free seat."


class AlreadyRegistered(Conflict):
    code = "already_registered"
    detail = "You already have a seat in this combat."


class RegistrationClosed(Conflict):
    code = "registration_closed"
    detail = "Registration for this combat is closed."


class InOtherCombat(Conflict):
    code = "in_other_combat"
    detail = "You are already in another open or running combat."


class NotInCombatZone(Conflict):
    code = "not_in_combat_zone"
    detail = "You must be in the combat's zone to join it."


class Traveling(Conflict):
    code = "traveling"
    detail = "You cannot join a combat while on a journey."


class AlreadyTraveling(Conflict):
    code = "already_traveling"
    detail = "You are already on a journey."


class InCombat(Conflict):
    code = "in_combat"
    detail = "You cannot travel while in an open or running combat."


class UnknownZone(InvalidInput):
    code = "unknown_zone"
    detail = "No zone has this code."


class AlreadyThere(Conflict):
    code = "already_there"
    detail = "You are already in this zone."


class NoPlayer(NotFound):
    code = "no_player"
    detail = "This account has no player."


class UsernameTaken(Conflict):
    code = "username_taken"
    detail = "This username is taken."
