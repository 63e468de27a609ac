"""Firing: one event per (zone, slot) however often a slot fires; overdue schedules coalesce."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from game.models import NightstormEvent, Zone
from game.storms import schedules as ns
from game.storms.firing import coalesce, fire_nightstorm
from tests.helpers import race


def a_zone():
    return Zone.objects.order_by("code").first()


@pytest.mark.django_db
def test_a_slot_fired_twice_opens_one_event(world):
    zone, slot = a_zone(), "2026-11-23T05:00:00+00:00"
    first = fire_nightstorm(zone.code, scheduled_at=slot)
    second = fire_nightstorm(zone.code, scheduled_at=slot)
    assert first == second
    assert NightstormEvent.objects.filter(zone=zone).count() == 1


@pytest.mark.django_db
def test_an_unknown_zone_does_not_crash_the_task(world):
    assert fire_nightstorm("NOPE", scheduled_at=timezone.now().isoformat()) is None


def test_coalesce_fires_the_latest_due_slot_once():
    now = timezone.now()
    step = ns.interval()
    due = now - 10 * step - timedelta(seconds=5)
    slot, missed = coalesce(due, now)
    assert missed == 10
    assert slot == due + 10 * step
    assert now - step < slot <= now
    assert coalesce(now, now) == (now, 0)


@pytest.mark.django_db(transaction=True)
def test_a_schedule_overdue_by_ten_intervals_fires_once_and_moves_on(world, monkeypatch):
    from django_q.conf import Conf
    from django_q.scheduler import scheduler

    ns.check_schedules()
    zone = a_zone()
    now = timezone.now()
    Schedule.objects.exclude(name=ns.schedule_name(zone.code)).update(
        next_run=now + timedelta(days=1)
    )
    Schedule.objects.filter(name=ns.schedule_name(zone.code)).update(
        next_run=now - 10 * ns.interval() - timedelta(minutes=1)
    )
    monkeypatch.setattr(Conf, "SYNC", True)
    monkeypatch.setattr(Conf, "CATCH_UP", False)

    scheduler()
    scheduler()  # a second pass finds nothing due

    events = NightstormEvent.objects.filter(zone=zone)
    assert events.count() == 1
    assert now - ns.interval() < events.get().slot <= timezone.now()
    assert Schedule.objects.get(name=ns.schedule_name(zone.code)).next_run > timezone.now()


@pytest.mark.django_db
def test_trigger_nightstorm_twice_in_a_minute_opens_one_event(world):
    from io import StringIO

    zone = a_zone()
    out = StringIO()
    call_command("trigger_nightstorm", zone.code, stdout=out)
    call_command("trigger_nightstorm", zone.code, stdout=out)
    assert NightstormEvent.objects.filter(zone=zone).count() == 1
    assert f"in {zone.code}" in out.getvalue()


@pytest.mark.django_db
def test_trigger_nightstorm_refuses_an_unknown_zone(world):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("trigger_nightstorm", "NOPE")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_firing_one_slot_open_one_event(world):
    zone, slot = a_zone(), "2026-11-23T06:00:00+00:00"
    outcomes = race(
        lambda _: fire_nightstorm(zone.code, scheduled_at=slot), [(i,) for i in range(8)]
    )
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert len(set(outcomes)) == 1
    assert NightstormEvent.objects.filter(zone=zone).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_second_event_for_a_slot_even_without_get_or_create(world):
    """The control: plain inserts racing on one slot collide on the unique (zone, slot)."""
    from django.db import IntegrityError

    zone, slot = a_zone(), timezone.now().replace(microsecond=0)
    outcomes = race(
        lambda _: NightstormEvent.objects.create(zone=zone, slot=slot), [(i,) for i in range(8)]
    )
    assert sum(isinstance(o, IntegrityError) for o in outcomes) == 7
