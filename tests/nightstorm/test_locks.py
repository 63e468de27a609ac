"""The lock contract, run against both backends with real threads."""

import threading
import time

import pytest

from nightstorm.errors import LockLost, LockUnavailable, StaleFencingToken
from nightstorm.locks import Lease, acquire, check_fence, distributed_lock, get_backend
from tests.helpers import race

BACKENDS = [
    pytest.param("database", id="database"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "redis":
        request.getfixturevalue("redis_client")
    return request.param


class Counter:
    """A deliberately non-atomic read-increment-write: it loses updates unless serialised."""

    def __init__(self):
        self.value = 0

    def bump(self):
        seen = self.value
        time.sleep(0.0005)  # widen the window between read and write
        self.value = seen + 1


def test_workers_under_the_lock_never_lose_an_increment(backend):
    counter, workers, rounds = Counter(), 8, 15

    def work(_):
        for _ in range(rounds):
            with distributed_lock("counter", ttl=5, wait=20, backend=backend):
                counter.bump()

    outcomes = race(work, [(i,) for i in range(workers)])
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert counter.value == workers * rounds


def test_the_counter_does_lose_increments_without_the_lock():
    """Shows the test above can see the race it guards against."""
    counter, workers, rounds = Counter(), 8, 15

    def work(_):
        for _ in range(rounds):
            counter.bump()

    race(work, [(i,) for i in range(workers)])
    assert counter.value < workers * rounds


def test_a_held_lock_is_refused_within_the_wait(backend):
    with distributed_lock("busy", ttl=5, wait=0, backend=backend):
        started = time.monotonic()
        with pytest.raises(LockUnavailable):
            acquire("busy", ttl=5, wait=0.2, backend=backend)
        assert time.monotonic() - started >= 0.2


def test_a_lock_expires_after_its_ttl(backend):
    first = acquire("crashed", ttl=1, wait=0, backend=backend)  # never released: a crash
    with pytest.raises(LockUnavailable):
        acquire("crashed", ttl=1, wait=0, backend=backend)
    # Waiting (with a generous bound) is granted once the crashed holder's lease runs out.
    second = acquire("crashed", ttl=1, wait=30, backend=backend)
    assert second.fence > first.fence
    second.release()


def test_only_the_owner_releases(backend):
    lease = acquire("owned", ttl=5, wait=0, backend=backend)
    impostor = Lease("owned", "someone-else", lease.fence, lease.ttl_ms, get_backend(backend))
    assert impostor.release() is False
    with pytest.raises(LockUnavailable):
        acquire("owned", ttl=5, wait=0, backend=backend)
    assert lease.release() is True
    acquire("owned", ttl=5, wait=0, backend=backend).release()


def test_fencing_tokens_increase_across_holders(backend):
    fences = []
    for _ in range(5):
        with distributed_lock("fenced", ttl=5, wait=1, backend=backend) as lease:
            fences.append(lease.fence)
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


def test_a_stale_holder_cannot_write_after_a_newer_one(backend):
    stale = acquire("resource", ttl=0.2, wait=0, backend=backend)
    # The lease expires while its holder is paused: the next holder waits for exactly that.
    fresh = acquire("resource", ttl=5, wait=30, backend=backend)
    check_fence("resource", fresh.fence)
    with pytest.raises(StaleFencingToken):
        check_fence("resource", stale.fence)
    check_fence("resource", fresh.fence)  # the current holder may write again
    fresh.release()


def test_extend_keeps_the_lease_and_fails_once_it_is_lost(backend):
    # Held past its ttl (3 x 0.35 s > 1 s) by extends a third of a ttl apart, which leaves
    # two thirds of a second of slack for a loaded machine between two of them.
    lease = acquire("long-work", ttl=1, wait=0, backend=backend)
    for _ in range(3):
        time.sleep(0.35)
        lease.extend()
    with pytest.raises(LockUnavailable):
        acquire("long-work", ttl=1, wait=0, backend=backend)
    other = acquire("long-work", ttl=5, wait=30, backend=backend)  # once the extends stop
    with pytest.raises(LockLost):
        lease.extend()
    other.release()


def test_database_locks_refuse_to_run_inside_a_transaction():
    from django.db import transaction

    with transaction.atomic(), pytest.raises(RuntimeError):
        acquire("in-tx", ttl=1, wait=0, backend="database")


def test_lock_requires_bounded_ttl_and_wait(backend):
    with pytest.raises(ValueError):
        acquire("k", ttl=0, wait=1, backend=backend)
    with pytest.raises(ValueError):
        acquire("k", ttl=1, wait=-1, backend=backend)


@pytest.mark.redis
def test_redis_lock_is_not_the_prefixed_cache_lock(redis_client):
    """django-redis's cache.lock() prefixes keys; ours uses the raw key everyone can see."""
    with distributed_lock("shared", ttl=5, wait=0, backend="redis") as lease:
        assert redis_client.get("nightstorm:lock:{shared}").decode() == lease.owner
    assert redis_client.get("nightstorm:lock:{shared}") is None


def test_contended_lock_hands_over_without_overlap(backend):
    inside, overlaps = [0], []
    guard = threading.Lock()

    def work(_):
        for _ in range(5):
            with distributed_lock("exclusive", ttl=5, wait=20, backend=backend):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    race(work, [(i,) for i in range(6)])
    assert max(overlaps) == 1


@pytest.mark.redis
def test_fencing_tokens_keep_growing_when_the_backend_is_switched(redis_client):
    """A deployment moving between NIGHTSTORM_LOCK_BACKEND values keeps its fence marks: the
    first holder under the new backend must still outrank the last one under the old."""
    fences = []
    for name in ("redis", "database", "redis", "database"):
        with distributed_lock("switched", ttl=5, wait=1, backend=name) as lease:
            check_fence("switched", lease.fence)  # refused if it went backwards
            fences.append(lease.fence)
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


def test_database_leases_ignore_the_app_servers_clock(monkeypatch):
    """A web host whose clock runs an hour ahead must not see a live lease as expired (nor an
    hour behind keep a dead one): expiry is the database's time, not this process's."""
    import datetime

    from django.utils import timezone

    held = acquire("db-clock", ttl=30, wait=0, backend="database")
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + datetime.timedelta(hours=1))
    with pytest.raises(LockUnavailable):
        acquire("db-clock", ttl=30, wait=0, backend="database")
    held.extend()
    assert held.release() is True

    short = acquire("db-clock", ttl=0.2, wait=0, backend="database")
    monkeypatch.setattr(timezone, "now", lambda: real_now() - datetime.timedelta(hours=1))
    time.sleep(0.3)
    successor = acquire("db-clock", ttl=5, wait=0, backend="database")
    assert successor.fence > short.fence
    successor.release()
