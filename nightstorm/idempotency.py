"""Idempotency keys for state-changing DRF views.

    class ContributionView(APIView):
        @idempotent(required=True)
        def post(self, request): ...

The first request with a key runs the view inside one transaction together with the insert of
its `IdempotencyRecord`, and stores the response (status, body, a few headers). A repeat with
the same key and the same request returns the stored response with `Idempotent-Replayed: true`;
the same key on a different request (method, path, user or body) gets 422
`idempotency_key_reused`.

Concurrent requests with one key: the second one's insert of the same (scope, key) waits on the
first one's uncommitted row (unique index), then finds it committed with its response and
replays it; if the first rolled back, the second does the work. So the work is applied once.

A request whose view raised (a refusal such as 409, or a crash) rolls back with its record: it
applied nothing, and the client may retry with the same key.
"""

import functools
import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from rest_framework.response import Response

from nightstorm.errors import IdempotencyKeyReused, InvalidInput
from nightstorm.models import IdempotencyRecord
from nightstorm.transactions import busy_on_lock_timeout, set_lock_timeout, transient_retry

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
_KEPT_HEADERS = ("Location", "ETag")


def request_fingerprint(request) -> str:
    """A hash of method, path, caller and the parsed body in canonical form, so the same
    request sent with other whitespace or key order is still the same request."""
    digest = hashlib.sha256()
    for part in (request.method, request.path, _scope(request)):
        digest.update(part.encode())
        digest.update(b"\0")
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    digest.update(body.encode())
    return digest.hexdigest()


def _scope(request) -> str:
    """Whose keys these are: a user, a service (by the token setting it presented), or nobody.

    Callers sharing one service token share its key space: such callers must make their keys
    unique among themselves (for example prefix them with their own name).
    """
    if request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return getattr(request, "service_caller", None) or "anonymous"


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and key.isprintable()


def _replay(record: IdempotencyRecord) -> Response:
    headers = dict(record.headers or {})
    headers[REPLAY_HEADER] = "true"
    body = json.loads(record.body) if record.body else None
    return Response(body, status=record.status_code, headers=headers)


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
            # Parse the body before the transaction: a malformed one is a 400 with no record.
            fingerprint = request_fingerprint(request)
            scope = _scope(request)

            @transient_retry(name="idempotent_request")
            def run():
                set_lock_timeout()
                IdempotencyRecord.objects.bulk_create(
                    [IdempotencyRecord(scope=scope, key=key, request_hash=fingerprint)],
                    ignore_conflicts=True,
                )
                record = IdempotencyRecord.objects.select_for_update().get(scope=scope, key=key)
                if record.request_hash != fingerprint:
                    raise IdempotencyKeyReused()
                if record.status_code is not None:
                    return _replay(record)
                response = method(view, request, *args, **kwargs)
                if response.status_code >= 500:
                    transaction.set_rollback(True)
                    return response
                record.status_code = response.status_code
                record.body = json.dumps(response.data, cls=DjangoJSONEncoder)
                record.headers = {h: response[h] for h in _KEPT_HEADERS if response.has_header(h)}
                record.save(update_fields=["status_code", "body", "headers"])
                return response

            with busy_on_lock_timeout():
                return run()

        return wrapper

    return decorate(view_method) if view_method is not None else decorate
