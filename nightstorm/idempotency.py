"""Idempotency keys for state-changing DRF views: the key is claimed, the work owns its commit.

    class ContributionView(APIView):
        @idempotent(required=True)
        def post(self, request): ...

1. **Claim.** One autocommitted statement inserts the key's record with a claim token and a
   lease (`NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS`). If the key is known already: another request
   body is 422 `idempotency_key_reused`; a finished request is replayed (status, body, a few
   headers, plus `Idempotent-Replayed: true`); a live claim is 409 `idempotency_in_progress`
   with `Retry-After`; an expired claim (its request died) is taken over by a conditional
   UPDATE on the old token.
2. **Work.** The view runs as the outermost `transaction.atomic(durable=True)`; the response is
   stored in that same transaction, by an UPDATE conditioned on our claim token, so the work
   and its outcome commit together or not at all. Nothing of the idempotency machinery holds a
   lock while the view's service runs: the hot rows' lock window is the service's own
   statements, that UPDATE and the commit.
3. **Refusals** (4xx, raised or returned) roll the work back and are then stored in a short
   statement of their own, so a retry gets the same refusal. A 5xx or a crash rolls back and
   releases the claim, so the client can retry at once with the same key.

If a request outlives its lease and another takes its claim over, the first one's final UPDATE
matches no row (the token changed): its transaction rolls back, so the work is still applied
once. A view that has effects outside the database (Redis) reads `request.idempotency` (the
`Claim`) to make those effects keyed, and therefore repeatable, too.
"""

import functools
import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone
from rest_framework.response import Response

from nightstorm import metrics
from nightstorm.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidInput
from nightstorm.models import IdempotencyRecord
from nightstorm.sql import run, run_count
from nightstorm.transactions import backoff_delay, busy_on_lock_timeout, is_transient, sqlstate

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
_KEPT_HEADERS = ("Location", "ETag")


@dataclass(frozen=True)
class Claim:
    """A request's hold on its key: what a view needs to key effects outside the database."""

    record_id: int
    scope: str
    key: str
    token: str

    @property
    def effect_key(self) -> str:
        """A stable name for this (caller, key), the same on every retry of the request."""
        return hashlib.sha256(f"{self.scope}\0{self.key}".encode()).hexdigest()


def request_fingerprint(request) -> str:
    """A hash of method, path, caller and the parsed body in canonical form, so the same
    request sent with other whitespace or key order is still the same request."""
    digest = hashlib.sha256()
    for part in (request.method, request.path, scope_of(request)):
        digest.update(part.encode())
        digest.update(b"\0")
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    digest.update(body.encode())
    return digest.hexdigest()


def scope_of(request) -> str:
    """Whose keys these are: a user, a service (by the token setting it presented), or nobody.

    Callers sharing one service token share its key space: such callers must make their keys
    unique among themselves (for example prefix them with their own name).
    """
    if request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return getattr(request, "service_caller", None) or "anonymous"


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and key.isprintable()


# --- the claim ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _insert_sql(alias: str):
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = IdempotencyRecord._meta
    fields = [meta.get_field(n) for n in _CLAIM_FIELDS]
    values = f"VALUES ({', '.join(['%s'] * len(fields))})"
    if connection.vendor == "postgresql":
        # The claim commits without waiting for its WAL flush: losing it in a server crash is
        # harmless (nothing was done under it yet), and the work's own synchronous commit,
        # later in the WAL, flushes it anyway. `set_config(…, true)` is SET LOCAL for the
        # statement's own transaction; it saves a flush per keyed request.
        casts = ", ".join(f"CAST(%s AS {f.cast_db_type(connection)})" for f in fields)
        values = f"SELECT {casts} WHERE set_config('synchronous_commit', 'off', true) = 'off'"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"{values} ON CONFLICT ({quote('scope')}, {quote('key')}) DO NOTHING "
        f"RETURNING {quote(meta.pk.column)}"
    )
    return sql, fields


_CLAIM_FIELDS = (
    "scope",
    "key",
    "request_hash",
    "claim_token",
    "claimed_until",
    "status_code",
    "body",
    "headers",
    "created_at",
)


def _insert_claim(scope: str, key: str, fingerprint: str, token: str, now) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id, autocommitted: the new record's id, or
    None when the key is already recorded."""
    connection = connections[router.db_for_write(IdempotencyRecord)]
    sql, fields = _insert_sql(connection.alias)
    values = {
        "scope": scope,
        "key": key,
        "request_hash": fingerprint,
        "claim_token": token,
        "claimed_until": now + _lease(),
        "status_code": None,
        "body": "",
        "headers": {},
        "created_at": now,
    }
    params = [f.get_db_prep_save(values[f.name], connection) for f in fields]
    rows = run(connection.alias, sql, params)
    return rows[0][0] if rows else None


def _lease() -> timedelta:
    return timedelta(seconds=settings.NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS)


def claim(request, *, scope: str, key: str, fingerprint: str) -> Claim | Response:
    """Take the key for this request, or answer for it: a replay, 409 in progress, 422."""
    token = uuid.uuid4().hex
    for _ in range(3):
        now = timezone.now()
        record_id = _insert_claim(scope, key, fingerprint, token, now)
        if record_id is not None:
            return Claim(record_id, scope, key, token)
        record = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
        if record is None:
            continue  # pruned between the two statements: insert again
        if record.request_hash != fingerprint:
            raise IdempotencyKeyReused()
        if record.status_code is not None:
            metrics.IDEMPOTENT_REPLAYS.inc()
            return _replay(record)
        if record.claimed_until is not None and record.claimed_until > now:
            wait = (record.claimed_until - now).total_seconds()
            metrics.IDEMPOTENT_IN_PROGRESS.inc()
            raise IdempotencyInProgress(retry_after=max(1, min(5, math.ceil(wait))))
        # The claim's request died (its lease ran out): take it over, unless someone else
        # just did or it finished after all; then look again.
        taken = IdempotencyRecord.objects.filter(
            pk=record.pk, claim_token=record.claim_token, status_code__isnull=True
        ).update(claim_token=token, claimed_until=now + _lease())
        if taken:
            metrics.IDEMPOTENT_TAKEOVERS.inc()
            return Claim(record.pk, scope, key, token)
    raise IdempotencyInProgress()


def _replay(record: IdempotencyRecord) -> Response:
    headers = dict(record.headers or {})
    headers[REPLAY_HEADER] = "true"
    body = json.loads(record.body) if record.body else None
    return Response(body, status=record.status_code, headers=headers)


@functools.lru_cache(maxsize=4)
def _store_sql(alias: str):
    # Written once per database: every keyed request runs it, and building it with the ORM
    # cost more than running it.
    quote = connections[alias].ops.quote_name
    meta = IdempotencyRecord._meta
    column = {n: quote(meta.get_field(n).column) for n in ("status_code", "body", "headers")}
    return (
        f"UPDATE {quote(meta.db_table)} SET {column['status_code']} = %s, "
        f"{column['body']} = %s, {column['headers']} = %s, {quote('claimed_until')} = NULL "
        f"WHERE {quote(meta.pk.column)} = %s AND {quote('claim_token')} = %s"
    )


def _store(held: Claim, response) -> bool:
    """Record the outcome if the claim is still ours (one UPDATE). False if it was taken."""
    connection = connections[router.db_for_write(IdempotencyRecord)]
    headers = {h: response[h] for h in _KEPT_HEADERS if response.has_header(h)}
    params = [
        response.status_code,
        json.dumps(response.data, cls=DjangoJSONEncoder),
        IdempotencyRecord._meta.get_field("headers").get_db_prep_save(headers, connection),
        held.record_id,
        held.token,
    ]
    return run_count(connection.alias, _store_sql(connection.alias), params) == 1


def _release(held: Claim) -> None:
    """Let the key be retried at once: the request failed and applied nothing."""
    IdempotencyRecord.objects.filter(
        pk=held.record_id, claim_token=held.token, status_code__isnull=True
    ).delete()


class _ClaimLost(Exception):
    """Our lease ran out and another request took the key over: roll this one back."""


def _after_lost_claim(held: Claim) -> Response:
    record = IdempotencyRecord.objects.filter(pk=held.record_id).first()
    if record is not None and record.status_code is not None:
        metrics.IDEMPOTENT_REPLAYS.inc()
        return _replay(record)
    raise IdempotencyInProgress()


# --- the decorator --------------------------------------------------------------------------


def idempotent(view_method=None, *, required: bool = False):
    """Make a DRF view method apply its work at most once per Idempotency-Key."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(view, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                if required:
                    raise InvalidInput(
                        f"This request needs an {HEADER} header.", code="idempotency_key_required"
                    )
                return method(view, request, *args, **kwargs)
            if not _valid_key(key):
                raise InvalidInput(
                    f"{HEADER} must be 1-255 printable characters.", code="idempotency_key_invalid"
                )
            # Parse the body before claiming: a malformed one is a 400 with no record.
            scope = scope_of(request)
            held = claim(request, scope=scope, key=key, fingerprint=request_fingerprint(request))
            if isinstance(held, Response):
                return held
            request.idempotency = held
            try:
                response = _run(held, lambda: method(view, request, *args, **kwargs))
            except _ClaimLost:
                return _after_lost_claim(held)
            except Exception as exc:
                # Rendered here, after the work's transaction rolled back, so a refusal can
                # be stored; anything the handler does not answer (a crash) re-raises.
                try:
                    response = view.handle_exception(exc)
                except Exception:
                    _release(held)
                    raise
            if response.status_code >= 500:
                _release(held)
            elif response.status_code >= 400:
                _store(held, response)  # a refusal changed nothing: it stands on its own
            return response

        return wrapper

    return decorate(view_method) if view_method is not None else decorate


def _run(held: Claim, work) -> Response:
    """The work and its stored outcome in one durable transaction, again on 40001/40P01."""
    limit = settings.NIGHTSTORM_TRANSIENT_RETRY_ATTEMPTS
    for attempt in range(1, limit + 1):
        try:
            with busy_on_lock_timeout(), transaction.atomic(durable=True):
                response = work()
                if response.status_code >= 400:
                    transaction.set_rollback(True)  # a returned refusal: undo, store after
                elif not _store(held, response):
                    raise _ClaimLost()
                return response
        except DatabaseError as exc:
            if not is_transient(exc) or attempt == limit:
                raise
            metrics.TRANSIENT_ERRORS.labels(sqlstate(exc)).inc()
            metrics.RETRIES.labels("idempotent_request", "transient").inc()
            time.sleep(backoff_delay(attempt, settings.NIGHTSTORM_RETRY_BASE_DELAY_MS))
    raise AssertionError("unreachable")
