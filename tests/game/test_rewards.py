"""Rewards are paid exactly once per (combat, player): run twice, crash halfway, dead + retry."""

import contextlib
import threading

import pytest
from django.utils import timezone

from game import registration, rewards
from game.models import Player, Reward
from game.storms import events as nightstorms
from nightstorm import outbox
from nightstorm.models import OutboxJob
from tests.game.factories import ZoneFactory, make_event, make_players
from tests.helpers import race


def _finished_combat_with_rewards(n=2, outcome="victory"):
    event = make_event(ZoneFactory(boss_hp=1000))
    combat = event.combats.order_by("index").first()
    players = make_players(n)
    for p in players:
        registration.register(player_id=p.pk, combat_id=combat.pk)
    nightstorms.start_combat(combat_id=combat.pk)
    from game.models import Registration

    for i, seat in enumerate(Registration.objects.filter(combat=combat).order_by("pk")):
        seat.damage_dealt = 100 * (i + 1)
        seat.save(update_fields=["damage_dealt"])
    nightstorms.finish_combat(combat_id=combat.pk, outcome=outcome)
    return combat, list(Reward.objects.filter(combat=combat).order_by("damage_dealt"))


def _gold(reward):
    return Player.objects.get(pk=reward.player_id).gold


@pytest.mark.django_db
def test_rewards_split_by_damage():
    _, (low, high) = _finished_combat_with_rewards()
    assert (low.gold, low.xp, high.gold, high.xp) == (333, 100, 666, 200)
    assert low.job.dedupe_key == f"game.reward:{low.combat_id}:{low.player_id}"


@pytest.mark.django_db
def test_a_reward_task_run_twice_pays_once():
    _, (reward, _) = _finished_combat_with_rewards()
    assert outbox.run_job(reward.job_id) == "done"
    assert outbox.run_job(reward.job_id) is None
    # Even the handler called again directly (a job re-created by hand) pays nothing more.
    assert rewards.pay_reward({"reward": reward.pk}) is False
    player = Player.objects.get(pk=reward.player_id)
    assert (player.gold, player.xp) == (reward.gold, reward.xp)
    assert Reward.objects.get(pk=reward.pk).paid_at is not None


@pytest.mark.django_db
def test_a_crash_between_crediting_and_marking_pays_once(monkeypatch):
    _, (reward, _) = _finished_combat_with_rewards()

    def crash(_reward):
        raise RuntimeError("worker killed after crediting")

    monkeypatch.setattr(rewards, "_mark_paid", crash)
    assert outbox.run_job(reward.job_id) == "pending"
    assert _gold(reward) == 0  # the credit rolled back with the failed attempt
    job = OutboxJob.objects.get(pk=reward.job_id)
    assert job.attempts == 1 and "worker killed" in job.last_error

    monkeypatch.undo()
    OutboxJob.objects.filter(pk=job.pk).update(run_after=timezone.now())
    assert outbox.run_job(job.pk) == "done"
    assert outbox.run_job(job.pk) is None
    assert _gold(reward) == reward.gold


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_of_one_reward_pay_once():
    _, (reward, _) = _finished_combat_with_rewards()
    outcomes = race(outbox.run_job, [(reward.job_id,)] * 8)
    assert outcomes.count("done") == 1, outcomes
    assert _gold(reward) == reward.gold


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_of_the_handler_itself_pay_once():
    """Without the job's lock (a job re-created by hand, say) the reward's row lock still
    decides: one call pays, the others find it paid."""
    _, (reward, _) = _finished_combat_with_rewards()
    outcomes = race(rewards.pay_reward, [({"reward": reward.pk},)] * 8)
    assert sorted(outcomes) == [False] * 7 + [True], outcomes
    assert _gold(reward) == reward.gold


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_unlocked_runs_of_one_reward_all_try_to_pay_it():
    """The control: runs that read the reward without the job's or the reward's lock all see
    it unpaid and all credit it; only the ledger's unique (kind, reference, player), the last
    line behind the locks, refuses the seven extra credits."""
    from django.db import IntegrityError, transaction

    _, (reward, _) = _finished_combat_with_rewards()
    everyone_read = threading.Barrier(8, timeout=10)

    def unlocked_run(reward_id):
        row = Reward.objects.get(pk=reward_id)
        if row.paid_at is not None:
            return False
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_read.wait()
        with transaction.atomic():
            rewards._credit(row)
            rewards._mark_paid(row)
        return True

    outcomes = race(unlocked_run, [(reward.pk,)] * 8)
    assert sum(isinstance(o, IntegrityError) for o in outcomes) == 7, outcomes
    assert outcomes.count(True) == 1
    assert _gold(reward) == reward.gold


@pytest.mark.django_db
def test_dead_reward_is_retried(monkeypatch):
    _, (reward, _) = _finished_combat_with_rewards()
    OutboxJob.objects.filter(pk=reward.job_id).update(max_attempts=1)
    monkeypatch.setattr(rewards, "_credit", lambda r: (_ for _ in ()).throw(OSError("down")))
    assert outbox.run_job(reward.job_id) == "dead"
    monkeypatch.undo()
    assert outbox.retry_now([reward.job_id]) == 1
    assert outbox.run_job(reward.job_id) == "done"
    assert _gold(reward) == reward.gold


KILL_SCRIPT = """
import os, sys
import django
django.setup()
from game import rewards
from nightstorm import outbox

def die(reward):
    os._exit(9)  # the worker is killed after crediting, before marking the reward paid

rewards._mark_paid = die
outbox.run_job(int(sys.argv[1]))
"""


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_between_crediting_and_marking_pays_once():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.db import connection

    _, (reward, _) = _finished_combat_with_rewards()
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "nightstorm.settings"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(reward.job_id)],
        cwd=root,
        env=env,
        timeout=60,
        capture_output=True,
    )
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    assert _gold(reward) == 0  # the killed transaction never committed
    job = OutboxJob.objects.get(pk=reward.job_id)
    assert (job.state, job.attempts) == ("pending", 0)

    assert outbox.run_job(job.pk) == "done"
    assert outbox.run_job(job.pk) is None
    assert _gold(reward) == reward.gold
