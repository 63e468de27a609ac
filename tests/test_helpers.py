"""`race()`: the calls of a race start together, whatever the number of workers."""

import threading

import pytest

from tests import helpers
from tests.helpers import RaceNeverStarted, race


@pytest.fixture
def barriers(monkeypatch):
    """Every barrier `race()` makes, with the threads that waited on it."""
    made = []

    class Recording(threading.Barrier):
        def __init__(self, parties, *args, **kwargs):
            super().__init__(parties, *args, **kwargs)
            self.waiters = []
            made.append(self)

        def wait(self, timeout=None):
            self.waiters.append(threading.get_ident())
            return super().wait(timeout)

    monkeypatch.setattr(helpers.threading, "Barrier", Recording)
    return made


@pytest.mark.parametrize(("calls", "workers", "together"), [(10, 4, 4), (3, None, 3), (3, 8, 3)])
def test_one_call_per_worker_starts_together(barriers, calls, workers, together):
    assert race(lambda i: i * i, [(i,) for i in range(calls)], max_workers=workers) == [
        i * i for i in range(calls)
    ]
    (barrier,) = barriers
    assert barrier.parties == together
    assert len(set(barrier.waiters)) == together  # one per worker thread, every one waited


def test_a_single_call_has_nothing_to_race(barriers):
    assert race(lambda: 1, [()]) == [1]
    assert barriers == []


def test_a_broken_start_fails_the_race_instead_of_counting_as_a_refusal(barriers, monkeypatch):
    def never_meets(self, timeout=None):
        raise threading.BrokenBarrierError

    monkeypatch.setattr(threading.Barrier, "wait", never_meets)
    with pytest.raises(RaceNeverStarted):
        race(lambda i: i, [(i,) for i in range(4)])
