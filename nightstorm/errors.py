"""Domain errors: each carries a stable `code` and the HTTP status the API answers with.

Services raise these; views let them through; `nightstorm.api.errors.exception_handler` renders
every one as `{"code", "detail"}`.
"""


class DomainError(Exception):
    """A refusal the caller can act on. Subclasses fix `code` and `status`."""

    code = "error"
    status = 400
    detail = "The request could not be completed."
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status=None,
        retry_after: int | None = None,
    ):
        self.detail = detail or self.detail
        if code:
            self.code = code
        if status:
            self.status = status
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.detail)


class Conflict(DomainError):
    code = "conflict"
    status = 409
    detail = "The request conflicts with the current state."


class NotFound(DomainError):
    code = "not_found"
    status = 404
    detail = "Not found."


class InvalidInput(DomainError):
    code = "invalid"
    status = 400
    detail = "Invalid input."


class ConcurrencyConflict(Conflict):
    """An optimistic update matched no row: someone else changed it first (or it is gone)."""

    code = "version_conflict"
    detail = "The row was changed by someone else; reload and try again."


class PreconditionFailed(DomainError):
    code = "version_conflict"
    status = 412
    detail = "If-Match does not name the current version."


class PreconditionRequired(DomainError):
    code = "precondition_required"
    status = 428
    detail = "This request needs an If-Match header with the current version."


class Busy(DomainError):
    """A row lock could not be had within the lock timeout (SQLSTATE 55P03)."""

    code = "busy"
    status = 503
    detail = "The resource is busy; retry shortly."
    retry_after = 1


class LockUnavailable(DomainError):
    """A distributed lock could not be acquired within its wait."""

    code = "lock_unavailable"
    status = 503
    detail = "A lock could not be acquired in time; retry shortly."


class DatabaseUnavailable(DomainError):
    """The database could not be reached or dropped the session mid-request (a restart, a
    failover, `pg_terminate_backend`): the transaction rolled back with the connection."""

    code = "database_unavailable"
    status = 503
    detail = "The database is unavailable; retry shortly (with the same Idempotency-Key)."
    retry_after = 1


class RedisUnavailable(DomainError):
    """Redis (the shared cache: throttle counters, read-your-writes marks) is unreachable."""

    code = "redis_unavailable"
    status = 503
    detail = "Redis is unavailable; retry shortly."
    retry_after = 1


class LockLost(DomainError):
    """The lease expired or was taken over: the holder must stop writing."""

    code = "lock_lost"
    status = 503
    detail = "The lock's lease was lost before the work finished."


class StaleFencingToken(Conflict):
    """A guarded write carried a fencing token older than one already seen."""

    code = "stale_fencing_token"
    detail = "A newer lock holder has written since this lease was granted."


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422
    detail = "This Idempotency-Key was used with a different request."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    detail = "A request with this Idempotency-Key is still being processed; retry shortly."
    retry_after = 1
