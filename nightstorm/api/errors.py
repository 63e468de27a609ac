"""One error shape for the whole API: `{"code": "<snake_case>", "detail": "<sentence>"}`.

DRF's exceptions, our `DomainError`s, Django's 404 and permission errors, a row-lock timeout
and anything unexpected all come out in this shape, with field errors under `"fields"`.
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from nightstorm.errors import Busy, DomainError
from nightstorm.transactions import is_lock_timeout

log = logging.getLogger(__name__)


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
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.detail), status=exc.status)
    if isinstance(exc, OperationalError) and is_lock_timeout(exc):
        return Response(error_body(Busy.code, Busy.detail), status=Busy.status)
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


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def json_400(request, exception=None):
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_403(request, exception=None):
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)
