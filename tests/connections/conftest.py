"""A fresh process-wide ConnectionService for every test (the Redis DB is flushed before each)."""

import pytest

from connections.service import ConnectionService, reset_service


@pytest.fixture(autouse=True)
def service():
    fresh = ConnectionService.from_settings()
    reset_service(fresh)
    yield fresh
    fresh.close(timeout=2)
    reset_service(None)


@pytest.fixture
def local_service():
    """In-process mode, whatever the settings say."""
    fresh = ConnectionService()
    yield fresh
    fresh.close()
