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
