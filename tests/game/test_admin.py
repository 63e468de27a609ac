"""Admin for game masters: lists and filters load, actions call the services, and a stale save
of a versioned row is refused."""

import pytest
from django.contrib.auth import get_user_model

from game import registration, rewards
from game.models import Combat, Player, Reward
from game.storms import events as nightstorms
from nightstorm import outbox
from nightstorm.models import OutboxJob
from tests.game.factories import ZoneFactory, make_event, make_players, make_running_combats

pytestmark = pytest.mark.django_db


@pytest.fixture
def gm(client):
    user = get_user_model().objects.create_superuser("gm", "gm@example.com", "pw")
    client.force_login(user)
    return client


def test_changelists_and_filters_load(gm):
    make_running_combats(2, seats=2)
    make_event(ZoneFactory())
    for url in [
        "/admin/game/zone/",
        "/admin/game/player/?zone__region=Testlands",
        "/admin/game/player/?q=p",
        "/admin/game/combat/?status__exact=running",
        "/admin/game/nightstormevent/",
        "/admin/game/journey/",
        "/admin/game/reward/?payment=pending",
        "/admin/game/reward/?payment=dead",
        "/admin/game/reward/?payment=paid",
    ]:
        assert gm.get(url).status_code == 200, url
    combat = Combat.objects.first()
    page = gm.get(f"/admin/game/combat/{combat.pk}/change/")
    assert page.status_code == 200 and b"Players" in page.content


def test_stale_player_save_shows_an_error(gm):
    (player,) = make_players(1, zone=ZoneFactory())
    url = f"/admin/game/player/{player.pk}/change/"
    assert gm.get(url).status_code == 200
    form = {
        "user": player.user_id,
        "name": player.name,
        "zone": player.zone_id,
        "gold": 500,
        "hp": 100,
        "level": 1,
        "xp": 0,
        "expected_version": player.version,
        # the read-only gold ledger inline's management form
        "gold_entries-TOTAL_FORMS": 0,
        "gold_entries-INITIAL_FORMS": 0,
    }
    # Someone else (a reward payout) changes the player after the page was opened.
    Player.objects.filter(pk=player.pk).update(gold=7, version=player.version + 1)
    response = gm.post(url, form)
    assert response.status_code == 200
    assert b"Someone else changed this row" in response.content
    player.refresh_from_db()
    assert player.gold == 7

    form["expected_version"] = player.version
    form["gold_adjustment"] = 493  # gold is changed through the ledger, not in place
    response = gm.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    player.refresh_from_db()
    assert player.gold == 500
    assert list(player.gold_entries.values_list("kind", "amount")) == [("adjustment", 493)]


def test_combat_actions_start_now_and_cancel(gm):
    event = make_event(ZoneFactory())
    first, second, third = event.combats.order_by("index")
    (p,) = make_players(1)
    registration.register(player_id=p.pk, combat_id=first.pk)
    response = gm.post(
        "/admin/game/combat/",
        {"action": "start_now", "_selected_action": [str(first.pk), str(second.pk)]},
    )
    assert response.status_code == 302
    assert Combat.objects.get(pk=first.pk).status == "running"
    assert Combat.objects.get(pk=second.pk).status == "cancelled"
    gm.post("/admin/game/combat/", {"action": "cancel", "_selected_action": [str(first.pk)]})
    assert Combat.objects.get(pk=first.pk).status == "cancelled"
    gm.post(
        "/admin/game/nightstormevent/", {"action": "start_now", "_selected_action": [str(event.pk)]}
    )
    assert Combat.objects.get(pk=third.pk).status == "cancelled"


def test_dead_reward_retry_action(gm, monkeypatch):
    event = make_event(ZoneFactory())
    combat = event.combats.first()
    (p,) = make_players(1)
    registration.register(player_id=p.pk, combat_id=combat.pk)
    nightstorms.start_combat(combat_id=combat.pk)
    nightstorms.finish_combat(combat_id=combat.pk, outcome="defeat")
    reward = Reward.objects.get(combat=combat)
    OutboxJob.objects.filter(pk=reward.job_id).update(max_attempts=1)
    monkeypatch.setattr(rewards, "_credit", lambda r: (_ for _ in ()).throw(OSError("down")))
    assert outbox.run_job(reward.job_id) == "dead"
    monkeypatch.undo()
    dead = gm.get("/admin/game/reward/?payment=dead")
    assert str(p.name).encode() in dead.content
    gm.post("/admin/game/reward/", {"action": "retry", "_selected_action": [str(reward.pk)]})
    assert OutboxJob.objects.get(pk=reward.job_id).state == "pending"
    assert outbox.run_job(reward.job_id) == "done"
    assert Reward.objects.get(pk=reward.pk).paid_at is not None


def test_combat_capacity_cannot_drop_below_the_seats_taken(gm):
    zone = ZoneFactory()
    combat = make_event(zone).combats.order_by("index").first()
    for player in make_players(4, zone=zone):
        registration.register(player_id=player.pk, combat_id=combat.pk)
    combat.refresh_from_db()
    url = f"/admin/game/combat/{combat.pk}/change/"
    form = {
        "capacity": 3,
        "expected_version": combat.version,
        "registrations-TOTAL_FORMS": 0,
        "registrations-INITIAL_FORMS": 0,
        "turns-TOTAL_FORMS": 0,
        "turns-INITIAL_FORMS": 0,
    }
    response = gm.post(url, form)
    assert response.status_code == 200
    assert b"4 players already hold seats" in response.content
    combat.refresh_from_db()
    assert combat.capacity == 10

    form["capacity"] = 4
    assert gm.post(url, form).status_code == 302
    combat.refresh_from_db()
    assert combat.capacity == 4


def test_a_combat_page_shows_its_turns(gm):
    from game.models import CombatTurn
    from tests.game.factories import make_running_combats

    (combat,) = make_running_combats(1, seats=2)
    now = combat.started_at
    CombatTurn.objects.create(combat=combat, turn=1, due_at=now, ran_at=now, boss_hp=99_123)
    page = gm.get(f"/admin/game/combat/{combat.pk}/change/")
    assert page.status_code == 200
    assert b"Turn log (latest first)" in page.content and b"99123" in page.content
