"""Management commands, django-q2 entry points and schedules of the game."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from game import tasks
from game.models import Combat, Journey
from game.schedules import GAME_SCHEDULES
from nightstorm.signals import ensure_registered_schedules
from tests.game.factories import make_players, make_running_combats, make_zones

pytestmark = pytest.mark.django_db


def test_game_schedules_are_ensured_after_migrate():
    Schedule.objects.filter(name__in=[s.name for s in GAME_SCHEDULES]).delete()
    ensure_registered_schedules(sender=None)
    ensure_registered_schedules(sender=None)
    rows = Schedule.objects.filter(name__in=[s.name for s in GAME_SCHEDULES])
    assert sorted(rows.values_list("func", flat=True)) == [
        "game.storm_tasks.watchdog",
        "game.tasks.apply_arrivals",
        "game.tasks.combat_tick",
    ]


def test_process_combats_command_once_and_with_ticks(capsys, settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    combats = make_running_combats(3, seats=2)
    call_command("process_combats")
    assert "1 tick(s), 3 turn(s) advanced" in capsys.readouterr().out
    call_command("process_combats", "--ticks", "2")
    out = capsys.readouterr().out
    assert "2 tick(s)" in out
    # The first tick may fall in the period the first command already used: 1 or 2 turns more.
    ids = [c.pk for c in combats]
    assert set(Combat.objects.filter(pk__in=ids).values_list("turn", flat=True)) in ({2}, {3})


def test_combat_tick_task_runs_ticks_for_its_budget(monkeypatch, settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    monkeypatch.setattr(tasks, "TICK_RUN_SECONDS", 2)
    make_running_combats(2, seats=1)
    result = tasks.combat_tick()
    assert result["ticks"] >= 2 and result["advanced"] >= 4 and result["failed"] == 0


def test_apply_arrivals_task():
    home, away = make_zones(2)
    (player,) = make_players(1, zone=home)
    now = timezone.now()
    Journey.objects.create(
        player=player,
        origin=home,
        destination=away,
        started_at=now - timedelta(minutes=2),
        arrives_at=now - timedelta(minutes=1),
    )
    assert tasks.apply_arrivals() == 1
    player.refresh_from_db()
    assert player.zone == away
