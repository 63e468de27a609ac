"""The schedule check: exactly one correct Nightstorm schedule per zone, whatever happened."""

import pytest
from django.core.management import call_command
from django.db import connection
from django_q.models import Schedule

from game.models import Zone
from game.storms import schedules as ns
from tests.helpers import race

pytestmark = pytest.mark.django_db(transaction=True)


def zone_rows():
    return Schedule.objects.filter(name__startswith=ns.PREFIX)


def assert_all_correct():
    codes = list(Zone.objects.values_list("code", flat=True))
    rows = {row.name: row for row in zone_rows()}
    assert sorted(rows) == sorted(ns.schedule_name(c) for c in codes)
    for code in codes:
        row = rows[ns.schedule_name(code)]
        assert ns._differences(row, ns.wanted_fields(code)) == []
    assert ns.problems() == []


def test_the_check_creates_81_staggered_schedules_and_then_changes_nothing(world):
    report = ns.check_schedules()
    assert len(report.created) == Zone.objects.count() == 81
    assert_all_correct()
    next_runs = sorted(zone_rows().values_list("next_run", flat=True))
    assert len(set(next_runs)) == 81, "zones must not all fire at once"
    again = ns.check_schedules()
    assert not again.changed and again.ok == 81


def test_the_check_heals_deleted_corrupted_and_orphaned_schedules(world):
    ns.check_schedules()
    codes = list(Zone.objects.values_list("code", flat=True))
    Schedule.objects.filter(name__in=[ns.schedule_name(c) for c in codes[:5]]).delete()
    Schedule.objects.filter(name=ns.schedule_name(codes[10])).update(
        func="game.tasks.something_else", minutes=7, args="'XX'"
    )
    Schedule.objects.create(name="nightstorm:GONE", func=ns.FUNC, minutes=60, schedule_type="I")
    Schedule.objects.create(
        name="hand-made", func=ns.FUNC, args="'X'", minutes=5, schedule_type="I"
    )

    report = ns.check_schedules()

    assert len(report.created) == 5
    assert len(report.repaired) == 1 and "func" in report.repaired[0]
    assert len(report.deleted) == 2
    assert_all_correct()
    assert Schedule.objects.filter(func=ns.FUNC).count() == 81
    assert not ns.check_schedules().changed


def test_the_command_prints_what_it_changed(world):
    from io import StringIO

    out = StringIO()
    call_command("ensure_schedules", stdout=out)
    assert "81 created" in out.getvalue()
    zone_rows().first().delete()
    out = StringIO()
    call_command("ensure_schedules", stdout=out)
    assert "1 created, 0 repaired, 0 orphans deleted, 80 already right" in out.getvalue()


def test_the_toolkit_schedules_are_left_alone(world):
    ns.check_schedules()
    assert Schedule.objects.filter(name="platform:heartbeat").exists()


def test_problems_name_missing_and_overdue_zones(world):
    from datetime import timedelta

    from django.utils import timezone

    ns.check_schedules()
    first, second = zone_rows().order_by("name")[:2]
    first.delete()
    Schedule.objects.filter(pk=second.pk).update(next_run=timezone.now() - timedelta(hours=3))
    found = ns.problems()
    assert any("1 zone(s) without a schedule" in p for p in found)
    assert any("1 schedule(s) overdue" in p for p in found)


@pytest.mark.postgres
def test_two_checks_at_once_create_each_schedule_once(world):
    outcomes = race(lambda _: ns.check_schedules(wait=30), [(0,), (1,)])
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert sorted(len(o.created) for o in outcomes) == [0, 81]
    assert_all_correct()


@pytest.mark.postgres
def test_without_the_lock_and_the_unique_name_two_checks_duplicate_schedules(world, monkeypatch):
    """The control: the race is real. Unguarded, two checks both insert the missing rows."""
    import contextlib
    import threading

    barrier = threading.Barrier(2)
    real_check = ns._check
    fences = iter([1, 2])

    def unguarded(*args, **kwargs):
        barrier.wait(timeout=10)
        return real_check(next(fences))

    class NoLease:
        fence = 0

    monkeypatch.setattr(ns, "distributed_lock", lambda *a, **k: contextlib.nullcontext(NoLease))
    monkeypatch.setattr(ns, "check_fence", lambda *a: None)
    monkeypatch.setattr(ns, "_check", unguarded)
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX nightstorm_schedule_name_unique")
    try:
        race(lambda _: ns.check_schedules(), [(0,), (1,)])
        assert zone_rows().count() > 81
    finally:
        Schedule.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE UNIQUE INDEX nightstorm_schedule_name_unique ON django_q_schedule (name) "
                "WHERE name IS NOT NULL"
            )


def test_the_check_runs_when_a_cluster_worker_starts(world):
    from django_q.signals import post_spawn

    post_spawn.send(sender="django_q", proc_name="Process-1")
    assert zone_rows().count() == 81
    assert ns.last_report()["created"]


def test_the_scheduler_health_check_reports_missing_and_healthy(world, client):
    from django.utils import timezone

    from nightstorm.models import Heartbeat

    Heartbeat.objects.create(name="cluster", beat_at=timezone.now())
    check = client.get("/health/").json()["checks"]["scheduler"]
    assert check["state"] == "down"
    assert "81 zone(s) without a schedule" in check["problems"][0]
    ns.check_schedules()
    check = client.get("/health/").json()["checks"]["scheduler"]
    assert check["state"] == "ok"
    assert check["zones_scheduled"] == 81


def test_the_zone_admin_shows_schedules_and_opens_a_nightstorm(world, admin_client):
    from game.models import NightstormEvent

    page = admin_client.get("/admin/game/zone/")
    assert b"No schedule check has run yet" in page.content
    assert b"81 zone(s) without a schedule" in page.content
    ns.check_schedules()
    page = admin_client.get("/admin/game/zone/")
    assert b"81 created" in page.content
    assert b"Every zone has exactly one correct schedule" in page.content

    zone = Zone.objects.order_by("code").first()
    admin_client.post("/admin/game/zone/", {"action": "trigger_now", "_selected_action": [zone.pk]})
    assert NightstormEvent.objects.filter(zone=zone).count() == 1
    page = admin_client.get("/admin/game/zone/")
    assert b"open" in page.content


def test_a_checker_whose_lease_was_taken_over_writes_nothing(world):
    """The fence: a check holding an older token than one already used is refused whole."""
    from nightstorm.errors import StaleFencingToken
    from nightstorm.locks import check_fence

    check_fence(ns.LOCK_KEY, 10**18)  # a newer holder has already written
    with pytest.raises(StaleFencingToken):
        ns.check_schedules()
    assert zone_rows().count() == 0


def test_rows_naming_the_job_by_its_old_path_are_rewritten(world):
    """The job moved (game.storm_tasks -> game.storms.firing): django-q2 rows store the dotted
    path, so a database from before the move is healed by the check."""
    ns.check_schedules()
    zone_rows().update(func=ns.LEGACY_FUNCS[0])
    Schedule.objects.create(
        name="hand-made-old", func=ns.LEGACY_FUNCS[0], args="'X'", minutes=5, schedule_type="I"
    )
    report = ns.check_schedules()
    assert len(report.repaired) == 81
    assert all(line.endswith("repaired func") for line in report.repaired)
    assert report.deleted == ["hand-made-old: deleted (no such zone)"]
    assert_all_correct()
    assert not Schedule.objects.filter(func__in=ns.LEGACY_FUNCS).exists()
    assert not ns.check_schedules().changed
