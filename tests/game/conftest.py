"""Shared settings of the game tests.

Race tests run on real threads, each with its own PostgreSQL connection; THREADS bounds them
so a run stays well under the server's max_connections (other suites may share the server).

`GAME_NAIVE_RACES=1` runs the race tests against naive versions of the services (no turn
guard — a test-local claim in test_combat_turns.py; no journey lock, check or unique index) to
show that the tests can fail: expect them to fail in that mode. Registration's naive control
lives in test_registration.py and runs every time.
"""

import os

import pytest

THREADS = int(os.environ.get("GAME_TEST_THREADS", "32"))
NAIVE = os.environ.get("GAME_NAIVE_RACES") == "1"


@pytest.fixture
def naive(monkeypatch):
    """Whether this run demonstrates the naive versions (see the module docstring)."""
    if NAIVE:
        from game import travel

        monkeypatch.setattr(travel, "LOCK_PLAYER_ROW", False)
    return NAIVE
