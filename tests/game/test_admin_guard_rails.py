"""The game admin's guard rails: changes go through the services and leave an audit entry with
who and old → new; nothing with history is deleted (soft delete, restore); what only a
service may change is read-only; pages name things as a person reads them."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.authtoken.models import Token

from game import registration
from game.models import Combat, Journey, NightstormEvent, Player, Zone
from game.storms import controls
from game.storms import schedules as ns
from tests.game.factories import ZoneFactory, make_event, make_players, make_zones

pytestmark = pytest.mark.django_db


@pytest.fixture
def gm(client):
    user = get_user_model().objects.create_superuser("gm", "gm@example.com", "pw")
    client.force_login(user)
    return client


def audit_for(obj) -> list[str]:
    entries = LogEntry.objects.filter(object_id=str(obj.pk)).select_related("user")
    assert all(e.user.username == "gm" for e in entries)
    return [e.change_message for e in entries]


def do(gm, model: str, obj, action: str, **data):
    return gm.post(f"/admin/game/{model}/{obj.pk}/do/{action}/", data, follow=True)


# --- zones and their schedules --------------------------------------------------------------


@pytest.fixture
def scheduled(transactional_db):
    """Zones with their schedules (the check runs outside a transaction, as its lock needs)."""
    make_zones(3)
    ns.check_schedules()
    return Zone.objects.order_by("code").first()


def test_skip_pause_and_resume_survive_the_schedule_check(scheduled):
    zone, name = scheduled, ns.schedule_name(scheduled.code)
    before = Schedule.objects.get(name=name).next_run
    changes = controls.skip_next(zone_code=zone.code)
    assert changes["next Nightstorm"] == (before, before + ns.interval())

    controls.pause(zone_code=zone.code)
    row = Schedule.objects.get(name=name)
    assert row.repeats == ns.PAUSED_REPEATS
    Schedule.objects.filter(name=name).update(next_run=timezone.now() - timedelta(hours=3))
    report = ns.check_schedules()
    assert report.repaired == []  # a pause is not a fault to repair
    assert Schedule.objects.get(name=name).repeats == ns.PAUSED_REPEATS
    assert not any("overdue" in p for p in ns.problems())

    changes = controls.resume(zone_code=zone.code)
    row = Schedule.objects.get(name=name)
    assert row.repeats == -1 and row.next_run > timezone.now()
    assert changes["paused"] == (True, False)
    assert ns.check_schedules().repaired == []


def test_zone_buttons_call_the_services_and_are_audited(scheduled, client):
    user = get_user_model().objects.create_superuser("gm", "gm@example.com", "pw")
    client.force_login(user)
    zone = scheduled
    page = do(client, "zone", zone, "open_now")
    assert b"Opened Nightstorm in" in page.content
    assert NightstormEvent.objects.filter(zone=zone).count() == 1
    do(client, "zone", zone, "skip_next")
    do(client, "zone", zone, "pause")
    page = client.get(f"/admin/game/zone/{zone.pk}/change/")
    assert b'name="resume"' in page.content and b"paused" in page.content
    do(client, "zone", zone, "resume")
    messages = audit_for(zone)
    assert any(
        m.startswith("Opened a Nightstorm now: Nightstorm — → Nightstorm in") for m in messages
    )
    assert any(m.startswith("Skipped the next Nightstorm: next Nightstorm 20") for m in messages)
    assert any("paused False → True" in m for m in messages)
    assert any("paused True → False" in m for m in messages)
    assert client.get(f"/admin/game/zone/{zone.pk}/do/pause/").status_code == 405


def test_a_repaired_schedule_is_shown_not_silent(scheduled, client):
    user = get_user_model().objects.create_superuser("gm", "gm@example.com", "pw")
    client.force_login(user)
    zone = scheduled
    Schedule.objects.filter(name=ns.schedule_name(zone.code)).update(minutes=5)  # a hand edit
    ns.check_schedules()
    repaired = f"{ns.schedule_name(zone.code)}: repaired minutes".encode()
    assert repaired in client.get("/admin/game/zone/").content
    assert repaired in client.get(f"/admin/game/zone/{zone.pk}/change/").content
    assert repaired in client.get("/admin/").content


def test_zone_codes_events_and_journeys_are_not_edited_by_hand(gm):
    zone = ZoneFactory(code="Z01")
    page = gm.get(f"/admin/game/zone/{zone.pk}/change/")
    assert b'name="code"' not in page.content
    gm.post(
        f"/admin/game/zone/{zone.pk}/change/",
        {
            "code": "HACK",
            "name": "Renamed",
            "region": "R",
            "boss_name": "",
            "boss_hp": 1,
            "boss_attack": 1,
        },
    )
    zone.refresh_from_db()
    assert zone.code == "Z01" and zone.name == "Renamed"
    assert any(
        m.startswith("Changed: Name Test Zone") and "→ Renamed" in m for m in audit_for(zone)
    )

    event = make_event(zone)
    page = gm.get(f"/admin/game/nightstormevent/{event.pk}/change/")
    assert b'name="state"' not in page.content

    (player,) = make_players(1, zone=zone)
    other = ZoneFactory()
    Journey.objects.create(
        player=player, origin=zone, destination=other, arrives_at=timezone.now() + timedelta(1)
    )
    page = gm.get(f"/admin/game/player/{player.pk}/change/")
    assert b'name="zone"' not in page.content  # mid-journey the zone is the travel service's
    assert b"in flight" in page.content
    assert gm.get("/admin/game/journey/").status_code == 200
    journey = Journey.objects.get(player=player)
    assert gm.post(f"/admin/game/journey/{journey.pk}/change/", {}).status_code == 403


def test_nothing_with_history_is_deleted(gm):
    zone = ZoneFactory()
    event = make_event(zone)
    combat, empty = event.combats.order_by("index")[:2]
    (player,) = make_players(1, zone=zone)
    registration.register(player_id=player.pk, combat_id=combat.pk)
    assert gm.get(f"/admin/game/zone/{zone.pk}/delete/").status_code == 403
    assert gm.get(f"/admin/game/nightstormevent/{event.pk}/delete/").status_code == 403
    assert gm.get(f"/admin/game/combat/{combat.pk}/delete/").status_code == 403

    # A seatless combat and a player are hidden, kept, and restorable.
    assert gm.post(f"/admin/game/combat/{empty.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Combat.objects.filter(pk=empty.pk).exists()
    assert Combat.all_objects.get(pk=empty.pk).deleted_at is not None
    gm.post(f"/admin/game/player/{player.pk}/delete/", {"post": "yes"})
    assert Player.all_objects.get(pk=player.pk).deleted_at is not None
    row_link = f"/admin/game/player/{player.pk}/change/"
    assert row_link not in gm.get("/admin/game/player/").content.decode()
    assert row_link in gm.get("/admin/game/player/?deleted=yes").content.decode()
    gm.post(
        "/admin/game/player/?deleted=yes",
        {"action": "restore", "_selected_action": [str(player.pk)]},
    )
    assert Player.objects.filter(pk=player.pk).exists()
    assert any(m.startswith("Deleted (soft; restorable)") for m in audit_for(player))
    assert any(m.startswith("Restored") for m in audit_for(player))


# --- combats and players --------------------------------------------------------------------


def test_combat_page_shows_seats_and_removes_a_player_only_while_open(gm):
    zone = ZoneFactory()
    combat = make_event(zone).combats.order_by("index").first()
    players = make_players(2, zone=zone)
    for p in players:
        registration.register(player_id=p.pk, combat_id=combat.pk)
    page = gm.get(f"/admin/game/combat/{combat.pk}/change/").content.decode()
    assert "2 of 10 seats taken" in page and "100 (enters with)" in page
    assert str(combat.event_id) not in page.replace(f"/{combat.event_id}/", "")  # no UUID labels

    page = do(gm, "combat", combat, "remove_player", remove_player=str(players[0].pk))
    assert b"no longer has a seat" in page.content
    assert any("players 2 → 1" in m for m in audit_for(combat))

    do(gm, "combat", combat, "start_combat_now")
    combat.refresh_from_db()
    assert combat.status == Combat.Status.RUNNING
    page = do(gm, "combat", combat, "remove_player", remove_player=str(players[1].pk))
    assert b"Seats can only be removed while the combat is open" in page.content
    do(gm, "combat", combat, "cancel_combat")
    combat.refresh_from_db()
    assert combat.status == Combat.Status.CANCELLED
    messages = audit_for(combat)
    assert any("status open → running" in m for m in messages)
    assert any("status running → cancelled" in m for m in messages)


def test_suspend_reinstate_and_revoke_token(gm, api_client):
    (player,) = make_players(1)
    token = Token.objects.create(user=player.user)
    do(gm, "player", player, "revoke_token")
    assert not Token.objects.filter(pk=token.pk).exists()
    Token.objects.create(user=player.user)
    do(gm, "player", player, "suspend")
    player.user.refresh_from_db()
    assert not player.user.is_active and not Token.objects.filter(user=player.user).exists()
    page = gm.get(f"/admin/game/player/{player.pk}/change/")
    assert b"suspended" in page.content and b'name="reinstate"' in page.content
    do(gm, "player", player, "reinstate")
    player.user.refresh_from_db()
    assert player.user.is_active
    messages = audit_for(player)
    assert any("active True → False" in m for m in messages)
    assert any("API token active → revoked" in m for m in messages)


def test_a_player_edit_is_audited_with_old_and_new_values(gm):
    (player,) = make_players(1)
    page = gm.get(f"/admin/game/player/{player.pk}/change/")
    assert page.status_code == 200
    data = {
        "name": player.name,
        "hp": 70,
        "level": 2,
        "xp": 0,
        "gold_adjustment": "",
        "gold_note": "",
        "adjustment_token": "ab" * 16,
        "expected_version": player.version,
        "gold_entries-TOTAL_FORMS": 0,
        "gold_entries-INITIAL_FORMS": 0,
    }
    response = gm.post(f"/admin/game/player/{player.pk}/change/", data)
    assert response.status_code == 302, response.content[-3000:]
    assert any("Hp 100 → 70" in m and "Level 1 → 2" in m for m in audit_for(player))


def test_dashboard_and_every_page_load_with_readable_labels(gm):
    zone = ZoneFactory(name="Ashen Gate")
    event = make_event(zone)
    page = gm.get("/admin/").content.decode()
    assert "Nightstorm administration" in page
    for panel in ("health", "next-nightstorms", "running-combats", "outbox", "rewards"):
        assert f'id="panel-{panel}"' in page
    listing = gm.get("/admin/game/nightstormevent/").content.decode()
    assert "Nightstorm in Ashen Gate at" in listing and "UTC" in listing
    assert f"Nightstorm {zone.pk} " not in listing
    page = gm.get(f"/admin/game/zone/{zone.pk}/change/").content.decode()
    assert 'id="panel-recent-events"' in page and "Ashen Gate" in page
    assert gm.get(f"/admin/game/nightstormevent/{event.pk}/change/").status_code == 200
