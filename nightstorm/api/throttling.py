"""The default throttles (DEFAULT_THROTTLE_CLASSES): anonymous callers by address
(`THROTTLE_ANON`), accounts by user (`THROTTLE_USER`); and the scoped one of the token login
(`THROTTLE_AUTH`) and sign-up (`THROTTLE_REGISTER`), by address.

A caller that presented a service token (a gateway, a game server: `service_token_or_staff`
marks the request) is not throttled: it speaks for many players from one address. A throttled
request is 429 `throttled` with `Retry-After`.

Every request passes these, so they count with one atomic increment in the shared cache (Redis
in a deployment) rather than DRF's default, which reads the caller's list of request times,
appends and writes it back: two round trips and a list that grows with the rate, and two web
processes that read the same list both write theirs back, so concurrent requests were lost
from the count and a caller could pass the limit. Here each caller has a counter per window of
the rate's period; the count is a sliding window, the current window's count plus the previous
window's weighted by how much of it still overlaps the last period (an estimate that assumes
the previous window's requests were spread evenly). A refused request is taken back out of the
count, so a client that keeps retrying is let in again as its earlier requests age.
"""

import contextlib

from django.conf import settings
from django.core.cache import caches
from django_redis import get_redis_connection
from rest_framework import throttling

# A window's counter lives two periods: through its own and the next, where it is "previous".
_KEEP_PERIODS = 2


def _is_service(request) -> bool:
    return getattr(request, "service_caller", None) is not None


def _name(key: str, window: int) -> str:
    # One hash slot for every window of a caller (the braces), so a Redis Cluster serves the
    # current and the previous window together.
    return f"throttle:{{{key}}}:{window}"


def hit(key: str, window: int, period: int) -> tuple[int, int]:
    """Count one request in `key`'s counter for `window`; (this window's count with it, the
    previous window's count). One round trip on Redis."""
    backend, ttl = caches["default"], period * _KEEP_PERIODS
    current, previous = _name(key, window), _name(key, window - 1)
    if not settings.REDIS_URL:  # the embedded mode's local-memory cache
        if backend.add(current, 1, ttl):
            return 1, backend.get(previous, 0)
        try:
            return backend.incr(current), backend.get(previous, 0)
        except ValueError:  # expired since add() saw it
            backend.set(current, 1, ttl)
            return 1, backend.get(previous, 0)
    current, previous = backend.make_key(current), backend.make_key(previous)
    pipe = get_redis_connection("default").pipeline(transaction=False)
    pipe.incr(current)
    pipe.expire(current, ttl)
    pipe.get(previous)
    count, _, before = pipe.execute()
    return count, int(before or 0)


def take_back(key: str, window: int, period: int) -> None:
    """Remove a refused request from its window's count."""
    backend, current = caches["default"], _name(key, window)
    if not settings.REDIS_URL:
        with contextlib.suppress(ValueError):  # expired: nothing left to take back
            backend.decr(current)
        return
    current = backend.make_key(current)
    pipe = get_redis_connection("default").pipeline(transaction=False)
    pipe.decr(current)
    pipe.expire(current, period * _KEEP_PERIODS)  # never a counter without its expiry
    pipe.execute()


class SlidingWindowThrottle(throttling.SimpleRateThrottle):
    """DRF's rate throttle counted with `hit()`: one atomic round trip per request."""

    def allow_request(self, request, view):
        if _is_service(request) or self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window, offset = divmod(self.now, self.duration)
        window = int(window)
        self.current, self.previous = hit(key, window, self.duration)
        self.overlap = 1 - offset / self.duration  # the share of the previous window still in
        if self.previous * self.overlap + self.current <= self.num_requests:
            return True
        take_back(key, window, self.duration)
        self.current -= 1
        return self.throttle_failure()

    def wait(self):
        """Seconds until the estimate leaves room for one more request."""
        room = self.num_requests - 1 - self.current
        if room < 0 or not self.previous:  # only a new window helps
            return self.overlap * self.duration
        # previous * overlap' <= room, with overlap' shrinking as time passes.
        return max(0.0, (self.overlap - room / self.previous) * self.duration)


class AnonRateThrottle(SlidingWindowThrottle, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(SlidingWindowThrottle, throttling.UserRateThrottle):
    """Authenticated accounts only; anonymous callers are `AnonRateThrottle`'s."""

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return super().get_cache_key(request, view)


class ScopedRateThrottle(throttling.ScopedRateThrottle, SlidingWindowThrottle):
    """A view's own scope (`throttle_scope`: the token login, sign-up), counted the same way:
    a password guesser's parallel requests count one by one too."""
