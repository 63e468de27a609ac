"""The default throttles count every request exactly once in the shared cache, whichever process
serves it, and let a caller in again as its requests age (a sliding window)."""

import multiprocessing
import random
import threading
import types
import uuid

import pytest
from rest_framework import throttling as drf

from nightstorm.api.throttling import SlidingWindowThrottle

LIMIT = 10
PROCESSES, THREADS = 4, 8  # 32 requests of one caller at once, as four web workers


def _fixed_key(base):
    class Throttle(base):
        rate = f"{LIMIT}/day"
        key = f"test-throttle-{uuid.uuid4().hex}"

        def get_cache_key(self, request, view):
            return self.key

    return Throttle


def _worker(throttle_class, barrier, results, request, view):
    def call():
        barrier.wait(timeout=30)
        results.put(throttle_class().allow_request(request, view))

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def _admitted_at_once(throttle_class, request=None, view=None) -> int:
    """How many of 32 requests of one caller, sent at once from 4 processes, were let in."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(PROCESSES * THREADS), ctx.Queue()
    request = request or types.SimpleNamespace()
    procs = [
        ctx.Process(target=_worker, args=(throttle_class, barrier, results, request, view))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=60) for _ in range(PROCESSES * THREADS)]
    for proc in procs:
        proc.join(timeout=30)
    return sum(answers)


@pytest.mark.redis
def test_a_burst_from_four_processes_lets_exactly_the_limit_in():
    for _ in range(3):
        assert _admitted_at_once(_fixed_key(SlidingWindowThrottle)) == LIMIT


@pytest.mark.redis
def test_a_scoped_throttle_counts_a_burst_from_one_address_exactly(monkeypatch):
    from nightstorm.api.throttling import ScopedRateThrottle

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", f"{LIMIT}/day")
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    request = types.SimpleNamespace(META={"REMOTE_ADDR": address}, user=None)
    view = types.SimpleNamespace(throttle_scope="auth")
    assert _admitted_at_once(ScopedRateThrottle, request, view) == LIMIT


@pytest.mark.redis
def test_control_reading_and_writing_back_the_history_lets_more_in():
    # DRF's own rate throttle: two processes that read the same history both write theirs back.
    admitted = [_admitted_at_once(_fixed_key(drf.SimpleRateThrottle)) for _ in range(5)]
    assert max(admitted) > LIMIT, admitted


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def per_minute():
    """A throttle of 3 requests a minute for one caller, on a clock the test moves; `ask`
    sends one request (by default an ordinary caller's)."""
    clock = _Clock(1_000_000 * 60.0)  # the start of a window
    key = f"test-throttle-{uuid.uuid4().hex}"

    class Throttle(SlidingWindowThrottle):
        rate = "3/min"
        timer = clock

        def get_cache_key(self, request, view):
            return key

    def ask(request=None):
        throttle = Throttle()
        return throttle.allow_request(request or types.SimpleNamespace(), None), throttle

    return clock, ask


def test_the_limit_holds_within_a_window_and_a_refusal_says_when_to_come_back(per_minute):
    clock, ask = per_minute
    assert [ask()[0] for _ in range(3)] == [True, True, True]
    clock.now += 10
    allowed, throttle = ask()
    assert not allowed
    assert throttle.wait() == pytest.approx(50)  # only the next window has room


def test_a_refused_request_is_not_counted_and_old_requests_age_out(per_minute):
    clock, ask = per_minute
    for _ in range(3):
        ask()
    for _ in range(5):  # refused, so they do not count
        assert not ask()[0]
    # The next window: the previous three still weigh fully at its start ...
    clock.now += 60
    allowed, throttle = ask()
    assert not allowed
    assert throttle.wait() == pytest.approx(20)  # 3 x (1 - t/60) + 1 <= 3 from t = 20 s
    # ... and a third of the way in, one more fits, and no second one.
    clock.now += 20
    assert ask()[0]
    assert not ask()[0]
    # Two windows on, nothing of the first is left.
    clock.now += 120
    assert [ask()[0] for _ in range(3)] == [True, True, True]


def test_a_service_caller_is_neither_refused_nor_counted(per_minute):
    _, ask = per_minute
    service = types.SimpleNamespace(service_caller="gateway")
    assert [ask(service)[0] for _ in range(5)] == [True] * 5
    # The caller's own three requests still fit: the service's five were not counted.
    assert [ask()[0] for _ in range(4)] == [True, True, True, False]
