"""One error shape for the whole API: `{"code": "<snake_case>", "detail": "<sentence>"}`.

DRF's exceptions, our `DomainError`s, Django's 404 and permission errors, a row-lock timeout,
a lost database connection or an unreachable Redis (503) and anything unexpected all come out
in this shape, with field errors under `"fields"`.
"""

import functools
import logging

import redis
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, DataError, OperationalError
from django.http import Http404, JsonResponse
from django_redis.exceptions import ConnectionInterrupted
from rest_framework import exceptions as drf
from rest_framework.response import Response

from nightstorm.errors import Busy, DatabaseUnavailable, DomainError, RedisUnavailable
from nightstorm.transactions import is_connection_lost, is_lock_timeout, is_transient

log = logging.getLogger(__name__)

# Redis unreachable, timing out, failing over (a demoted primary answers READONLY).
_REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    ConnectionInterrupted,
)


def _first_message(data):
    if isinstance(data, dict):
        for value in data.values():
            return _first_message(value)
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


def error_body(code: str, detail: str, fields=None) -> dict:
    body = {"code": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: map every exception to the contract's JSON body."""
    headers = {}
    if isinstance(exc, DatabaseError) and is_connection_lost(exc):
        # The transaction died with its connection; Django opens a new one for the next query.
        log.warning("database connection lost: %s", exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, _REDIS_DOWN):
        # The throttles count in the default cache (Redis), before the view runs: a request
        # refused there has changed nothing.
        log.warning("Redis unavailable: %s", exc)
        exc = RedisUnavailable()
    if isinstance(exc, DomainError):
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return Response(error_body(exc.code, exc.detail), status=exc.status, headers=headers)
    if isinstance(exc, OperationalError) and is_lock_timeout(exc):
        return Response(error_body(Busy.code, Busy.detail), status=Busy.status)
    if isinstance(exc, DatabaseError) and is_transient(exc):
        # A deadlock or serialization failure that escaped every retry: the client may retry.
        log.warning("transient database error reached the API: %s", exc)
        return Response(
            error_body(Busy.code, Busy.detail), status=Busy.status, headers={"Retry-After": "1"}
        )
    if isinstance(exc, DataError):
        # A value the database cannot store (out of range, invalid text) that validation let
        # through: the request is at fault, and nothing was changed.
        log.warning("database refused a value: %s", exc)
        return Response(
            error_body("invalid_value", "A value in the request is out of range or invalid."),
            status=400,
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()
    if not isinstance(exc, drf.APIException):
        return None  # Django's handler500 answers, in the same shape.

    if isinstance(exc, drf.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = error_body("invalid", _first_message(exc.detail), fields)
    else:
        body = error_body(exc.default_code, str(exc.detail))
    if isinstance(exc, drf.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(int(exc.wait) + 1)
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    return Response(body, status=exc.status_code, headers=headers)


def json_methods(*methods: str):
    """Like `require_http_methods`, for plain views that answer JSON: a 405 in the contract's
    shape. HEAD is allowed wherever GET is."""
    allowed = {m.upper() for m in methods} | ({"HEAD"} if "GET" in methods else set())

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = JsonResponse(
                    error_body("method_not_allowed", f'Method "{request.method}" not allowed.'),
                    status=405,
                )
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def json_400(request, exception=None):
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_403(request, exception=None):
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)
