"""The fight rules and the orchestrator: one turn per combat per tick, however many run."""

import contextlib
import itertools
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from game import fight, registration
from game.models import Combat, CombatTurn, NightstormEvent, Registration, Reward
from game.storms import events as nightstorms
from game.storms import orchestrator
from game.storms.orchestrator import Orchestrator, period_end, process_active_combats
from nightstorm.models import Heartbeat, OutboxJob
from tests.game.factories import ZoneFactory, make_event, make_players, make_running_combats
from tests.game.turnlog import check_turn_log
from tests.helpers import race


def naive_claim(ids, now):
    """The turn claim without its guard: no row lock (so no SKIP LOCKED) and no re-check that
    the combat is still due. Only the tests use it, to show what the guard prevents."""
    return orchestrator.read_due(Combat.objects.filter(pk__in=ids, status=Combat.Status.RUNNING))


def test_a_replayed_turn_gives_the_same_result():
    fighters = [fight.Fighter(key=i, hp=100, level=1 + i % 3) for i in range(10)]
    args = dict(
        combat_id="c-1", turn=4, boss_hp=900, boss_attack=12, fighters=fighters, max_turns=30
    )
    first = fight.resolve_turn(**args)
    assert fight.resolve_turn(**args) == first
    assert first.boss_hp < 900
    assert fight.resolve_turn(**{**args, "turn": 5}) != first


def test_fight_outcomes_and_reward_split():
    one = [fight.Fighter(key=1, hp=100, level=1)]
    assert (
        fight.resolve_turn(
            combat_id="x", turn=1, boss_hp=1, boss_attack=5, fighters=one, max_turns=30
        ).outcome
        == fight.VICTORY
    )
    weak = [fight.Fighter(key=1, hp=1, level=1)]
    assert (
        fight.resolve_turn(
            combat_id="x", turn=1, boss_hp=10_000, boss_attack=5, fighters=weak, max_turns=30
        ).outcome
        == fight.DEFEAT
    )
    assert (
        fight.resolve_turn(
            combat_id="x", turn=30, boss_hp=10_000, boss_attack=1, fighters=one, max_turns=30
        ).outcome
        == fight.TIMEOUT
    )
    shares = fight.split_rewards(outcome=fight.VICTORY, boss_max_hp=1000, damage={1: 30, 2: 10})
    assert shares == {1: (750, 30), 2: (250, 10)}
    assert fight.split_rewards(outcome=fight.DEFEAT, boss_max_hp=1000, damage={1: 5}) == {1: (0, 5)}


@pytest.mark.django_db
def test_one_turn_per_tick_period():
    combats = make_running_combats(3, seats=2)
    t0 = period_end(timezone.now())
    report = process_active_combats(now=t0)
    assert (report.due, report.advanced) == (3, 3)
    assert set(Combat.objects.values_list("turn", flat=True)) == {1}
    # Same period: nothing is due any more.
    assert process_active_combats(now=t0 + timedelta(seconds=1)).advanced == 0
    # Next period: one more turn each.
    assert process_active_combats(now=period_end(t0)).advanced == 3
    assert set(
        Combat.objects.filter(pk__in=[c.pk for c in combats]).values_list("turn", flat=True)
    ) == {2}
    seat = Registration.objects.filter(combat=combats[0]).order_by("-damage_dealt").first()
    assert seat.damage_dealt > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch_size", [1, 25])
def test_two_orchestrators_advance_each_combat_once_per_tick(batch_size):
    combats = make_running_combats(40, seats=3)
    ids = [c.pk for c in combats]
    t = period_end(timezone.now())
    for tick in range(1, 4):
        reports = race(
            lambda now: process_active_combats(now=now, parallelism=2, batch_size=batch_size),
            [(t,), (t,)],
        )
        assert not [r for r in reports if isinstance(r, Exception)], reports
        assert sum(r.advanced for r in reports) == 40, [r.advanced for r in reports]
        turns = Counter(Combat.objects.filter(pk__in=ids).values_list("turn", flat=True))
        assert turns == {tick: 40}, turns
        t = period_end(t)
    check = check_turn_log(ids, period=orchestrator.tick_seconds())
    assert check.turns == 120 and not check.problems, check.problems[:5]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_the_guard_two_orchestrators_double_turns(monkeypatch):
    """The control: the same race with the test-local naive claim advances combats twice in
    one tick (the unique turn log refuses a turn number twice, so the loser's replay moves on
    to the next turn), and the turn-log check sees it."""
    # Two orchestrators x two batches: all four first claims read before any batch writes.
    first_claims, calls = threading.Barrier(4, timeout=10), itertools.count()

    def claim_together(ids, now):
        rows = naive_claim(ids, now)
        if next(calls) < 4:
            with contextlib.suppress(threading.BrokenBarrierError):
                first_claims.wait()
        return rows

    monkeypatch.setattr(orchestrator, "_claim", claim_together)
    combats = make_running_combats(40, seats=3)
    ids = [c.pk for c in combats]
    t = period_end(timezone.now())
    reports = race(
        lambda now: process_active_combats(now=now, parallelism=2, batch_size=25), [(t,), (t,)]
    )
    advanced = sum(r.advanced for r in reports if not isinstance(r, Exception))
    assert advanced > 40, [r if isinstance(r, Exception) else r.advanced for r in reports]
    check = check_turn_log(ids, period=orchestrator.tick_seconds())
    assert check.doubled, check.problems


@pytest.mark.django_db
def test_every_turn_is_logged_with_its_due_and_run_times(settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 5
    (combat,) = make_running_combats(1, seats=2)
    first_due = Combat.objects.get(pk=combat.pk).next_turn_at
    t = period_end(timezone.now())
    process_active_combats(now=t)
    process_active_combats(now=t + timedelta(seconds=2))  # same period: no turn
    process_active_combats(now=period_end(t) + timedelta(seconds=1))
    rows = list(CombatTurn.objects.filter(combat=combat).order_by("turn"))
    assert [r.turn for r in rows] == [1, 2]
    assert rows[0].due_at == first_due and rows[0].ran_at == t
    assert rows[1].due_at == period_end(t)  # due at the end of the period turn 1 ran in
    assert rows[1].ran_at == period_end(t) + timedelta(seconds=1)
    combat.refresh_from_db()
    assert rows[1].boss_hp == combat.boss_hp < combat.boss_max_hp
    assert combat.next_turn_at == period_end(rows[1].ran_at)


@pytest.mark.django_db
def test_the_lateness_of_every_turn_is_measured():
    from prometheus_client import REGISTRY

    def observed():
        return REGISTRY.get_sample_value("nightstorm_tick_lateness_seconds_count") or 0

    def late_sum():
        return REGISTRY.get_sample_value("nightstorm_tick_lateness_seconds_sum") or 0

    combats = make_running_combats(3, seats=1)
    now = timezone.now()  # the tick's clock, given: the lateness is exact on any machine
    Combat.objects.filter(pk__in=[c.pk for c in combats]).update(
        next_turn_at=now - timedelta(seconds=7)
    )
    count, total = observed(), late_sum()
    report = process_active_combats(now=now)
    assert report.advanced == 3
    assert observed() - count == 3
    assert late_sum() - total == pytest.approx(21)
    assert report.lateness_max == pytest.approx(7)


@pytest.mark.django_db
def test_the_orchestrator_beats_while_it_runs_and_retires_on_the_way_out(settings):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    make_running_combats(2, seats=1)
    beats = []
    runner = Orchestrator(name="orchestrator:test:1")

    def on_tick(report):
        beats.append(Heartbeat.objects.get(name=runner.name).beat_at)

    summary = runner.run(ticks=2, on_tick=on_tick)
    assert (summary.ticks, summary.errors, summary.advanced) == (2, 0, 4)
    assert len(beats) == 2 and beats[0] < beats[1]
    assert not Heartbeat.objects.filter(name=runner.name).exists()
    assert "2 tick(s), 4 turn(s) advanced" in summary.line()


@pytest.mark.django_db
def test_a_failing_tick_is_counted_and_the_loop_goes_on(settings, monkeypatch):
    settings.NIGHTSTORM_COMBAT_TICK_SECONDS = 1
    calls = []
    real = orchestrator.process_active_combats

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return real(**kwargs)

    monkeypatch.setattr(orchestrator, "process_active_combats", flaky)
    make_running_combats(1, seats=1)
    summary = Orchestrator().run(ticks=2)
    assert (summary.errors, summary.ticks, summary.advanced) == (1, 1, 1)


@pytest.mark.django_db
def test_a_combat_that_ends_writes_rewards_and_frees_seats(settings):
    settings.NIGHTSTORM_COMBAT_MAX_TURNS = 30
    (combat,) = make_running_combats(1, seats=3, boss_hp=25)
    report = process_active_combats(now=period_end(timezone.now()))
    assert report.finished == 1
    combat.refresh_from_db()
    assert (combat.status, combat.outcome) == ("finished", "victory")
    assert NightstormEvent.objects.get(pk=combat.event_id).state == "finished"
    assert combat.next_turn_at is None
    assert not Registration.objects.filter(combat=combat, active=True).exists()
    rewards = list(Reward.objects.filter(combat=combat))
    assert len(rewards) == 3
    assert sum(r.gold for r in rewards) <= 25
    assert sum(r.xp for r in rewards) == 25
    jobs = OutboxJob.objects.filter(kind="game.pay_reward")
    assert jobs.count() == 3
    assert {r.job_id for r in rewards} == set(jobs.values_list("pk", flat=True))
    # A finished combat is not processed again.
    assert process_active_combats(now=period_end(timezone.now()) + timedelta(hours=1)).due == 0


@pytest.mark.django_db
def test_turn_limit_ends_in_timeout(settings):
    settings.NIGHTSTORM_COMBAT_MAX_TURNS = 2
    (combat,) = make_running_combats(1, seats=1, boss_hp=100_000)
    t = period_end(timezone.now())
    process_active_combats(now=t)
    process_active_combats(now=period_end(t))
    combat.refresh_from_db()
    assert (combat.status, combat.outcome, combat.turn) == ("finished", "timeout", 2)


@pytest.mark.django_db
def test_a_broken_combat_does_not_stop_the_others(monkeypatch):
    combats = make_running_combats(4, seats=1)
    bad = combats[2].pk
    real = fight.resolve_turn

    def flaky(**kwargs):
        if kwargs["combat_id"] == bad:
            raise RuntimeError("boom")
        return real(**kwargs)

    monkeypatch.setattr(fight, "resolve_turn", flaky)
    report = process_active_combats(now=period_end(timezone.now()), batch_size=4)
    assert (report.advanced, report.failed) == (3, 1)
    assert Combat.objects.get(pk=bad).turn == 0


@pytest.mark.django_db
def test_lifecycle_open_start_cancel_finish_idempotent():
    zone = ZoneFactory()
    slot = timezone.now().replace(microsecond=0)
    event = nightstorms.open_nightstorm(zone=zone, slot=slot)
    again = nightstorms.open_nightstorm(zone=zone.code, slot=slot)
    assert again.pk == event.pk
    combats = list(event.combats.order_by("index"))
    assert len(combats) == 3 and all(c.capacity == 10 for c in combats)
    players = make_players(2)
    registration.register(player_id=players[0].pk, combat_id=combats[0].pk)
    registration.register(player_id=players[1].pk, combat_id=combats[0].pk)

    assert nightstorms.start_event(event_id=event.pk) == {"running": 1, "cancelled": 2}
    assert nightstorms.start_event(event_id=event.pk) == {"running": 0, "cancelled": 0}
    statuses = dict(Combat.objects.filter(event=event).values_list("index", "status"))
    assert statuses == {1: "running", 2: "cancelled", 3: "cancelled"}
    assert Registration.objects.filter(combat=combats[0], hp=100).count() == 2
    assert NightstormEvent.objects.get(pk=event.pk).state == "running"

    assert nightstorms.finish_combat(combat_id=combats[0].pk, outcome="defeat") == "finished"
    assert nightstorms.finish_combat(combat_id=combats[0].pk, outcome="defeat") == "finished"
    assert Reward.objects.filter(combat=combats[0]).count() == 2
    assert NightstormEvent.objects.get(pk=event.pk).state == "finished"
    assert not Registration.objects.filter(active=True).exists()
    assert nightstorms.cancel_combat(combat_id=combats[0].pk) == "finished"


@pytest.mark.django_db
def test_due_events_start_from_the_tick():
    event = make_event(ZoneFactory(), slot=timezone.now() - timedelta(hours=1))
    (player,) = make_players(1)
    registration.register(player_id=player.pk, combat_id=event.combats.first().pk)
    assert nightstorms.start_due_events() == 1
    assert Combat.objects.filter(event=event, status="running").count() == 1
    summary = Orchestrator().run(ticks=1)
    assert (summary.ticks, summary.advanced) == (1, 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_open_nightstorm_tolerates_the_race():
    zone = ZoneFactory()
    slot = timezone.now().replace(microsecond=0)
    outcomes = race(lambda: nightstorms.open_nightstorm(zone=zone, slot=slot), [()] * 8)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert len({o.pk for o in outcomes}) == 1
    assert NightstormEvent.objects.count() == 1
    assert Combat.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch_size", [1, 25])
def test_a_batch_is_two_statements_whatever_its_size(batch_size, django_assert_num_queries):
    """Pinned: the listing, then per batch BEGIN, the claim with every read, one write,
    COMMIT."""
    make_running_combats(batch_size, seats=3)
    with django_assert_num_queries(5):
        report = process_active_combats(
            now=period_end(timezone.now()), parallelism=1, batch_size=batch_size
        )
    assert report.advanced == batch_size
