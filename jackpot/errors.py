"""The jackpot's domain errors; each carries its API code and status (see `nightstorm.errors`)."""

from nightstorm.errors import Busy, Conflict, NotFound


class UnknownGroup(NotFound):
    code = "unknown_group"
    detail = "There is no jackpot pool with that group."


class PlayerNotFound(NotFound):
    code = "player_not_found"
    detail = "There is no such player."


class OperationReused(Conflict):
    code = "operation_id_reused"
    detail = "This operation id was already used for a different request."


class JackpotContended(Busy):
    code = "jackpot_contended"
    detail = "The jackpot pools are too busy right now; retry with the same key shortly."


class PoolsMissing(Conflict):
    code = "pools_missing"
    detail = "The jackpot pools are not set up."
