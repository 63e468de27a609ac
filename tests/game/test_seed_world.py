import pytest
from django.core.management import call_command

from game.models import Player, Route, Zone
from game.world import zone_specs


@pytest.mark.django_db
def test_seed_world_is_idempotent(capsys):
    call_command("seed_world", "--demo")
    first = capsys.readouterr().out
    assert "zones 81 created" in first and "routes 6480 created" in first
    snapshot = (
        list(Zone.objects.values_list("code", "name", "region", "boss_hp").order_by("code")),
        sorted(Route.objects.values_list("origin__code", "destination__code", "seconds")),
        Player.objects.count(),
    )
    call_command("seed_world", "--demo")
    second = capsys.readouterr().out
    assert "zones 0 created, 0 updated; routes 0 created, 0 updated; demo players 0" in second
    assert snapshot == (
        list(Zone.objects.values_list("code", "name", "region", "boss_hp").order_by("code")),
        sorted(Route.objects.values_list("origin__code", "destination__code", "seconds")),
        Player.objects.count(),
    )
    assert snapshot[2] == 3


@pytest.mark.django_db
def test_seed_world_repairs_a_changed_zone(capsys):
    call_command("seed_world")
    Zone.objects.filter(code="ASH1").update(name="Wrong")
    Route.objects.filter(origin__code="ASH1").update(seconds=1)
    call_command("seed_world")
    out = capsys.readouterr().out
    assert "zones 0 created, 1 updated; routes 0 created, 80 updated" in out
    assert Zone.objects.get(code="ASH1").name == "Ashen Gate"


def test_zone_codes_are_stable_and_unique():
    codes = [s.code for s in zone_specs()]
    assert len(set(codes)) == 81
    assert codes[:3] == ["ASH1", "ASH2", "ASH3"] and codes[-1] == "IRO9"
