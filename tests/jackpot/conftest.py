"""Fixtures of the jackpot tests: the three pools in a known state, players, clients."""

import pytest
from rest_framework.authtoken.models import Token

from jackpot import services
from jackpot.models import JackpotPool
from tests.jackpot.factories import PlayerFactory, UserFactory


@pytest.fixture
def pools(db):
    """The seeded pools (recreated after a transactional test emptied the tables)."""
    return {p.group: p for p in services.ensure_default_pools()}


@pytest.fixture
def uncapped_pools(pools):
    """Pools without a maximum, so every floor part is credited (exact expected sums)."""
    for group, pool in pools.items():
        if pool.max_amount is not None:
            services.update_config(
                group=group, changes={"max_amount": None}, expected_version=pool.config_version
            )
    return {p.group: p for p in JackpotPool.objects.all()}


@pytest.fixture
def player(db):
    return PlayerFactory()


@pytest.fixture
def players(db):
    return [PlayerFactory() for _ in range(8)]


def _client(api_client, user):
    token, _ = Token.objects.get_or_create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


@pytest.fixture
def player_client(api_client, player):
    return _client(api_client, player.user)


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def staff_client(api_client, staff_user):
    return _client(api_client, staff_user)
