"""Middleware of the platform."""

from django.http import JsonResponse


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
