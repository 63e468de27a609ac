"""Shared settings of the game tests.

Race tests run on real threads, each with its own PostgreSQL connection; THREADS bounds them
so a run stays well under the server's max_connections (other suites may share the server).

`GAME_NAIVE_RACES=1` runs the race tests against naive versions of the services (no combat
row lock; no turn guard — a test-local claim in test_combat_turns.py; no player lock — a
test-local one in test_travel.py — and no one-in-flight index) to show that the tests can
fail: expect them to fail in that mode.
"""

import os

import pytest

THREADS = int(os.environ.get("GAME_TEST_THREADS", "32"))
NAIVE = os.environ.get("GAME_NAIVE_RACES") == "1"


@pytest.fixture
def naive(monkeypatch):
    """Whether this run demonstrates the naive versions (see the module docstring)."""
    if NAIVE:
        from game import registration

        monkeypatch.setattr(registration, "LOCK_COMBAT_ROW", False)
    return NAIVE
