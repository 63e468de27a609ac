"""The default throttles (DEFAULT_THROTTLE_CLASSES): anonymous callers by address
(`THROTTLE_ANON`), accounts by user (`THROTTLE_USER`).

A caller that presented a service token (a gateway, a game server: `service_token_or_staff`
marks the request) is not throttled: it speaks for many players from one address. Throttle
counters live in the default cache, so every web process counts the same requests (Redis in a
deployment). A throttled request is 429 `throttled` with `Retry-After`.
"""

from rest_framework import throttling


def _is_service(request) -> bool:
    return getattr(request, "service_caller", None) is not None


class AnonRateThrottle(throttling.AnonRateThrottle):
    def allow_request(self, request, view):
        return _is_service(request) or super().allow_request(request, view)


class UserRateThrottle(throttling.UserRateThrottle):
    """Authenticated accounts only; anonymous callers are `AnonRateThrottle`'s."""

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return super().get_cache_key(request, view)
