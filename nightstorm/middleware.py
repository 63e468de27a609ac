"""Middleware of the platform."""

import logging
import re
import time
import uuid

from django.http import JsonResponse

from nightstorm import logs

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_request_log = logging.getLogger("nightstorm.request")


class RejectNulBytesMiddleware:
    """A NUL byte in the path or the query string is never a legitimate request; refuse it
    with a 400 before any view passes it to the database (PostgreSQL text cannot hold NUL)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # A NUL reaches the query string only percent-encoded; the path arrives decoded.
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            return JsonResponse(
                {"code": "bad_request", "detail": "NUL bytes are not allowed in URLs."}, status=400
            )
        return self.get_response(request)


class RequestIdMiddleware:
    """Gives every request an id: the caller's `X-Request-ID` when it is a sane token (a proxy
    or a client tracing a call), else a new one. Every log line of the request carries it
    (`nightstorm.logs`), the response returns it, and one `nightstorm.request` line per request
    records method, path, status and duration (probes and scrapes at DEBUG)."""

    HEADER = "X-Request-ID"
    QUIET = ("/health/", "/metrics")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(self.HEADER, "")
        rid = incoming if _SAFE_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = rid
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[self.HEADER] = rid
            quiet = request.path.startswith(self.QUIET)
            _request_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            logs.request_id.reset(token)


class ReplicaReadsMiddleware:
    """Serve a read-only request from the replica unless its client wrote recently.

    The client is known by its credentials (the `Authorization` header or the session cookie)
    and by its address, each hashed into a cache key; after a write request, both are marked
    for `NIGHTSTORM_READ_YOUR_WRITES_SECONDS`, in the shared cache so every web process sees the
    mark. Marking the address too covers a client that registers, then reads with the token it
    just received. Without a replica this middleware does nothing.
    """

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.conf import settings
        from django.core.cache import cache

        from nightstorm.routers import replica_configured, replica_reads

        if not replica_configured():
            return self.get_response(request)
        marks = self._marks(request, settings.SESSION_COOKIE_NAME)
        if request.method not in self.SAFE_METHODS:
            try:
                return self.get_response(request)
            finally:
                window = settings.NIGHTSTORM_READ_YOUR_WRITES_SECONDS
                cache.set_many(dict.fromkeys(marks, 1), timeout=window)
        wrote_recently = bool(cache.get_many(marks))
        with replica_reads(not wrote_recently):
            return self.get_response(request)

    @staticmethod
    def _marks(request, session_cookie: str) -> list[str]:
        import hashlib

        address = request.META.get("REMOTE_ADDR", "")
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            address = forwarded.split(",")[-1].strip()
        marks = [f"ryw:addr:{address}"]
        credential = request.META.get("HTTP_AUTHORIZATION") or request.COOKIES.get(session_cookie)
        if credential:
            marks.append("ryw:cred:" + hashlib.sha256(credential.encode()).hexdigest()[:32])
        return marks
