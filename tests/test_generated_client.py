"""A client generated from the served schema (openapi-python-client) drives a first session:
register, read the player, travel with a key, bet with a key and replay it, read an error."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jackpot import services

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "nightstorm_client"


@pytest.fixture
def generated(tmp_path, client):
    """The generated package, imported from a temporary folder."""
    schema = tmp_path / "schema.json"
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema.write_bytes(response.content)
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(schema),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        # Its post-generation hooks run ruff, from this environment.
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        timeout=120,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_a_generated_client_plays_a_first_session(generated, live_server):
    from django.core.management import call_command

    call_command("seed_world", verbosity=0)
    services.ensure_default_pools()
    api = importlib.import_module(f"{PACKAGE}.api.v1")
    models = importlib.import_module(f"{PACKAGE}.models")

    def op(name):
        return importlib.import_module(f"{api.__name__}.{name}")

    anonymous = generated.Client(base_url=live_server.url, raise_on_unexpected_status=True)
    registered = op("v1_auth_register_create").sync(
        client=anonymous,
        body=models.RegisterInput(username="wren", password="storm-crossing-7391"),
    )
    assert isinstance(registered, models.RegisterOut) and registered.player.name == "wren"

    player = generated.AuthenticatedClient(
        base_url=live_server.url,
        token=registered.token,
        prefix="Token",
        raise_on_unexpected_status=True,
    )
    me = op("v1_players_me_retrieve").sync_detailed(client=player)
    assert me.status_code == 200 and me.headers["ETag"] == f'"{me.parsed.version}"'
    assert me.parsed.zone == "ASH1" and me.parsed.gold == 0

    journey = op("v1_players_me_travel_create").sync(
        client=player,
        body=models.TravelInput(zone=models.ZoneEnum.BRI1),
        idempotency_key="first-trip",
    )
    assert isinstance(journey, models.JourneyOut) and journey.destination == "BRI1"

    bet = op("v1_jackpots_contributions_create")
    first = bet.sync_detailed(
        client=player, body=models.ContributionIn(bet=500), idempotency_key="bet-0001"
    )
    again = bet.sync_detailed(
        client=player, body=models.ContributionIn(bet=500), idempotency_key="bet-0001"
    )
    assert first.status_code == again.status_code == 201
    assert again.parsed.id == first.parsed.id and again.headers["Idempotent-Replayed"] == "true"

    refused = bet.sync_detailed(
        client=player, body=models.ContributionIn(bet=0), idempotency_key="bet-0002"
    )
    assert refused.status_code == 400
    assert isinstance(refused.parsed, models.Error) and refused.parsed.code == "bet_not_positive"

    pools = op("v1_jackpots_list").sync(client=anonymous)
    assert pools.count == 3 and {p.group.value for p in pools.results} == {"minor", "major", "mega"}
