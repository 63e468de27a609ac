"""Management commands, django-q2 entry points and schedules of the game."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from game import schedules as game_schedules
from game import tasks
from game.models import Combat, Journey
from game.schedules import GAME_SCHEDULES
from game.storms import firing
from game.storms import schedules as storm_schedules
from game.storms.health import check_orchestrators, prune_stale_orchestrators
from nightstorm.models import Heartbeat
from nightstorm.signals import ensure_registered_schedules
from tests.game.factories import make_players, make_running_combats, make_zones

pytestmark = pytest.mark.django_db


def test_game_schedules_are_ensured_after_migrate():
    Schedule.objects.filter(name__in=[s.name for s in GAME_SCHEDULES]).delete()
    ensure_registered_schedules(sender=None)
    ensure_registered_schedules(sender=None)
    rows = Schedule.objects.filter(name__in=[s.name for s in GAME_SCHEDULES])
    assert sorted(rows.values_list("func", flat=True)) == [
        "game.storms.firing.watchdog",
        "game.tasks.apply_arrivals",
    ]


def old_rows():
    """What a database migrated before the orchestrator became a process holds."""
    Schedule.objects.filter(name__startswith="game:").delete()
    Schedule.objects.create(
        name="game:combat_tick", func="game.tasks.combat_tick", minutes=1, schedule_type="I"
    )
    Schedule.objects.create(
        name="game:schedule_watchdog",
        func="game.storm_tasks.watchdog",
        minutes=5,
        schedule_type="I",
    )


def test_migrate_deletes_the_retired_combat_tick_schedule():
    old_rows()
    call_command("migrate", verbosity=0)
    names = dict(Schedule.objects.filter(name__startswith="game:").values_list("name", "func"))
    assert names == {
        "game:arrivals": "game.tasks.apply_arrivals",
        "game:schedule_watchdog": "game.storms.firing.watchdog",
    }


@pytest.mark.django_db(transaction=True)  # the database lock backend locks outside transactions
def test_the_schedule_check_rewrites_old_paths_and_retires_combat_tick():
    old_rows()
    report = storm_schedules.check_schedules()
    assert sorted(report.game) == [
        "game:arrivals: created",
        "game:combat_tick: deleted (no longer declared)",
        "game:schedule_watchdog: repaired",
    ]
    assert "game schedules: " in report.summary()
    assert Schedule.objects.get(name="game:schedule_watchdog").func == (
        "game.storms.firing.watchdog"
    )
    assert not Schedule.objects.filter(name="game:combat_tick").exists()
    assert game_schedules.retire_undeclared() == []
    assert not storm_schedules.check_schedules().game


def test_every_declared_function_path_resolves():
    import pydoc

    for spec in GAME_SCHEDULES:
        assert callable(pydoc.locate(spec.func)), spec.func
    assert callable(pydoc.locate(storm_schedules.FUNC))


def test_process_combats_command_once_and_with_ticks(capsys, settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    combats = make_running_combats(3, seats=2)
    call_command("process_combats")
    assert "process_combats: 1 tick(s), 3 turn(s) advanced" in capsys.readouterr().out
    call_command("process_combats", "--ticks", "2")
    out = capsys.readouterr().out
    assert "run_orchestrator: 2 tick(s)" in out
    # The first tick may fall in the period the first command already used: 1 or 2 turns more.
    ids = [c.pk for c in combats]
    assert set(Combat.objects.filter(pk__in=ids).values_list("turn", flat=True)) in ({2}, {3})


def test_run_orchestrator_command_with_ticks(capsys, settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    make_running_combats(2, seats=1)
    call_command("run_orchestrator", "--ticks", "2", "--parallelism", "1", verbosity=2)
    out = capsys.readouterr().out
    assert out.count("tick: ") == 2
    assert "run_orchestrator: 2 tick(s), 4 turn(s) advanced, 0 combat(s) finished" in out
    assert not Heartbeat.objects.filter(name__startswith="orchestrator:").exists()


def beat(name, seconds_ago):
    Heartbeat.objects.create(
        name=f"orchestrator:{name}", beat_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_the_orchestrator_health_check_lists_every_orchestrator(client, settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 5
    check = client.get("/health/").json()["checks"]["orchestrator"]
    assert (check["state"], check["required"], check["orchestrators"]) == ("degraded", False, [])
    assert "no orchestrator is running" in check["reason"]
    beat("a:1", 40)
    check = client.get("/health/").json()["checks"]["orchestrator"]
    assert check["state"] == "degraded"
    assert "no orchestrator beat in the last 15 s" in check["reason"]
    beat("b:2", 2)
    response = client.get("/health/")
    assert response.status_code == 200
    check = response.json()["checks"]["orchestrator"]
    assert (check["state"], check["alive"]) == ("ok", 1)
    assert [(o["name"], o["alive"]) for o in check["orchestrators"]] == [
        ("b:2", True),
        ("a:1", False),
    ]


@pytest.mark.django_db(transaction=True)  # the watchdog runs the schedule check (a lock)
def test_stale_orchestrators_are_pruned_and_the_watchdog_reports_none_running(caplog):
    beat("gone:1", 2 * 3600)
    beat("old:2", 600)
    assert prune_stale_orchestrators() == 1
    assert check_orchestrators()[1]["orchestrators"][0]["name"] == "old:2"
    summary = firing.watchdog()
    assert "orchestrator: no orchestrator beat in the last" in summary
    assert "start manage.py run_orchestrator" in caplog.text
    beat("live:3", 0)
    assert "orchestrator" not in firing.watchdog()


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
