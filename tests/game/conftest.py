"""Shared settings of the game tests.

Race tests run on real threads, each with its own PostgreSQL connection; THREADS bounds them
so a run stays well under the server's max_connections (other suites may share the server).

Every race test's control (the naive version, defined in the test module, shown to break)
runs in every suite as a test of its own; there is no switch to flip.
"""

import os

import pytest

THREADS = int(os.environ.get("GAME_TEST_THREADS", "32"))


@pytest.fixture
def naive():
    """Always False. Left for the registration and travel race tests that still take it as an
    argument; their naive branches never run."""
    return False
