"""Processes killed with SIGKILL mid-flight: a task cluster while it pays rewards, and gunicorn
workers (not the master) while clients bet and register connections.

- The task cluster (two workers) is killed while both of its workers are inside a payout
  (each waits for a row lock the test holds on its player) and the other rewards are paid or
  queued. A cluster started afterwards pays every reward, each exactly once: the killed
  payouts never committed, their tasks are delivered again (after `Q_RETRY`), and a task
  delivered twice finds its job done.
- gunicorn with four workers serves contributions (with Idempotency-Keys) and connection
  registrations and bindings from client threads while workers are SIGKILLed one at a time;
  the master replaces them. Every request whose answer was lost (or a 5xx) is sent again with
  its key until it succeeds. Then every contribution is in the pools exactly once (the pools
  hold their seeds plus the contributions, `jackpot_audit` is clean), an acknowledged answer
  is replayed as it was, and every registration and binding that was acknowledged is in the
  store, one connection per key.

The control: a keyed bet that does its work and records its key in two commits, killed
between them, applies twice when retried.

Also killed elsewhere: an orchestrator mid-tick (tests/game/test_orchestrator.py,
tests/test_deployment.py), a task cluster mid-schedule (tests/schedules/test_cluster.py), a
task worker between crediting and marking a reward (tests/game/test_rewards.py) and the
gateway, whose bindings all survive in Redis (tests/connections/test_gateway.py).
"""

import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Sum
from rest_framework.authtoken.models import Token

from connections.store import HANDLES_KEY, RedisConnectionStore
from game import gold
from game.models import GoldEntry, GoldKind, Player, Registration, Reward
from game.storms import events as nightstorms
from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import Contribution, JackpotPool
from nightstorm.models import IdempotencyRecord, OutboxJob
from tests.game.factories import make_players, make_running_combats
from tests.processes import ROOT, Platform, database_url

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# --- the task cluster ------------------------------------------------------------------------


def test_a_task_cluster_killed_while_paying_rewards_pays_each_once_after_a_restart(
    tmp_path, blocker
):
    combats = make_running_combats(6, seats=10, boss_hp=1000)
    Registration.objects.update(damage_dealt=100)
    for combat in combats:  # 60 rewards, each a job handed to the task queue at the commit
        nightstorms.finish_combat(combat_id=combat.pk, outcome="victory")
    rewards = list(Reward.objects.all())
    assert len(rewards) == 60 and all(r.gold > 0 for r in rewards)
    held = random.sample(rewards, 2)
    for reward in held:  # each payout of these two waits in its gold credit
        blocker.lock("SELECT 1 FROM game_player WHERE id = %s FOR UPDATE", [reward.player_id])

    # A task lost with the cluster is delivered again after Q_RETRY seconds. Tasks are signed
    # with the secret key: the test process queued them.
    platform = Platform(
        tmp_path, Q_WORKERS=2, Q_TIMEOUT=5, Q_RETRY=6, SECRET_KEY=settings.SECRET_KEY
    )
    try:
        platform.manage("cluster", "qcluster")
        blocked = blocker.wait_for_blocked(count=2, timeout=60)  # both workers mid-payout
        platform.signal("cluster", signal.SIGKILL)
        assert platform.procs["cluster"].wait(10) == -signal.SIGKILL
        paid_at_kill = Reward.objects.filter(paid_at__isnull=False).count()
        blocker.release()
        # The killed workers' sessions get the lock, find their client gone and roll back.
        wait_for(lambda: not blocker.blocked(), 10, "the killed payouts' sessions to end")
        ids = [pid for pid, _ in blocked]
        wait_for(
            lambda: (
                not blocker.watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [ids]
                ).fetchone()
            ),
            10,
            "the killed payouts' sessions to end",
        )
        for reward in held:
            assert Reward.objects.get(pk=reward.pk).paid_at is None
            assert Player.objects.get(pk=reward.player_id).gold == 0
        assert paid_at_kill <= 58

        platform.manage("cluster-2", "qcluster")
        wait_for(
            lambda: OutboxJob.objects.filter(state=OutboxJob.State.DONE).count() == 60,
            60,
            "every reward's job done",
            every=0.25,
        )
    finally:
        # Done with it (a SIGTERM to the whole process group can keep a cluster stopping for
        # longer than this test should wait).
        platform.signal("cluster-2", signal.SIGKILL)
        platform.stop()

    for reward in rewards:
        player = Player.objects.get(pk=reward.player_id)
        assert (player.gold, player.xp) == (reward.gold, reward.xp)
        entries = GoldEntry.objects.filter(player=player, kind=GoldKind.REWARD)
        assert list(entries.values_list("reference", flat=True)) == [f"reward:{reward.pk}"]
    assert gold.audit() == []
    print(f"\ncluster killed with {paid_at_kill} of 60 rewards paid, 2 mid-payout")


# --- gunicorn workers --------------------------------------------------------------------------


def workers_of(master: int) -> list[int]:
    """The pids of gunicorn's workers: the master's children."""
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except FileNotFoundError:
        return []


class Ledger:
    """Every request the clients sent, by key: its answers, a lost one as (None, error)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = defaultdict(list)
        self.requests = {}  # key -> (method, path, body, auth)

    def send(self, platform, key, method, path, body, *, keyed=True, **auth):
        headers = {"Idempotency-Key": key} if keyed else {}
        with self.lock:
            self.requests[key] = (method, path, body, auth, keyed)
        try:
            status, data, headers_out = platform.request(method, path, body, **auth, **headers)
        except (OSError, http.client.HTTPException) as exc:  # the worker died under it
            status, data, headers_out = None, repr(exc), {}
        with self.lock:
            self.answers[key].append((status, data, headers_out))
        return status, data

    def lost(self) -> list[str]:
        return [k for k, a in self.answers.items() if a[-1][0] is None or a[-1][0] >= 500]

    def acknowledged(self, key) -> tuple | None:
        """The first success answered for `key`."""
        return next((a for a in self.answers[key] if a[0] and 200 <= a[0] < 300), None)


def test_web_workers_killed_under_load_lose_and_double_nothing(tmp_path, redis_client):
    services.ensure_default_pools()
    players = make_players(6)
    tokens = [Token.objects.create(user_id=p.user_id).key for p in players]
    # A request killed with its worker leaves its key claimed for this long.
    platform = Platform(tmp_path, NIGHTSTORM_IDEMPOTENCY_CLAIM_SECONDS=2)
    platform.web(workers=4)
    master = platform.procs["web"].pid
    ledger, stop = Ledger(), threading.Event()
    bound = {}  # handle -> player name, for every binding acknowledged

    def bettor(n):
        for i in range(10_000):
            if stop.is_set():
                return
            ledger.send(
                platform,
                f"bet-{n}-{i}",
                "POST",
                "/api/v1/jackpots/contributions/",
                {"bet": 1000 + n},
                token=tokens[n],
            )

    def connector(n):
        for i in range(10_000):
            if stop.is_set():
                return
            key = f"conn-{n}-{i}"
            status, conn = ledger.send(
                platform,
                key,
                "POST",
                "/api/v1/connections/",
                {"protocol": "telnet", "remote_addr": f"10.1.{n}.{i % 250}"},
                service=True,
            )
            if status == 201:
                name = players[i % len(players)].name
                bind = f"bind-{conn['handle']}"
                path = f"/api/v1/connections/{conn['handle']}/bind/"
                status, _ = ledger.send(
                    platform, bind, "POST", path, {"player": name}, keyed=False, service=True
                )
                if status == 200:
                    bound[conn["handle"]] = name

    clients = [threading.Thread(target=bettor, args=(n,)) for n in range(6)]
    clients += [threading.Thread(target=connector, args=(n,)) for n in range(2)]
    killed = []
    try:
        for thread in clients:
            thread.start()
        wait_for(lambda: len(ledger.answers) >= 30, 30, "the load to start", every=0.02)
        # A worker killed between two requests loses none: go on (up to eight kills) until
        # one was killed with a request in flight.
        while len(killed) < 4 or (not ledger.lost() and len(killed) < 8):
            time.sleep(0.8)
            victim = random.choice(workers_of(master))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)

    lost = ledger.lost()
    try:
        # Every lost answer is asked for again with its key until it comes.
        deadline = time.monotonic() + 60
        for key in lost:
            method, path, body, auth, keyed = ledger.requests[key]
            while True:
                status, data = ledger.send(platform, key, method, path, body, keyed=keyed, **auth)
                if status and 200 <= status < 300:
                    if key.startswith("bind-"):
                        bound[int(key.removeprefix("bind-"))] = body["player"]
                    break
                assert status in (None, 409, 503), (key, status, data)
                assert time.monotonic() < deadline, (key, ledger.answers[key])
                time.sleep(0.5)
        # An acknowledged answer is replayed as it was.
        for key in [k for k in ledger.answers if k.startswith("bet-")][:10]:
            method, path, body, auth, _ = ledger.requests[key]
            first = ledger.acknowledged(key)
            status, data, headers = platform.request(
                method, path, body, **auth, **{"Idempotency-Key": key}
            )
            assert (status, data) == first[:2] and headers.get("Idempotent-Replayed") == "true"
        # The master replaced every killed worker.
        wait_for(
            lambda: len(workers_of(master)) == 4 and not set(killed) & set(workers_of(master)),
            30,
            "four workers again",
        )
    finally:
        codes = platform.stop()
    assert codes["web"] == 0, platform.log("web")[-3000:]
    assert lost, "no request was in flight in a killed worker"

    # Bets: one contribution per key, each acknowledged one as answered.
    bets = [k for k in ledger.answers if k.startswith("bet-")]
    answered = {ledger.acknowledged(k)[1]["id"] for k in bets}
    assert set(Contribution.objects.values_list("pk", flat=True)) == answered
    assert len(answered) == len(bets)
    credited = Contribution.objects.aggregate(
        minor=Sum("minor_amount"), major=Sum("major_amount"), mega=Sum("mega_amount")
    )
    for pool in JackpotPool.objects.all():
        assert pool.amount == pool.seed_amount + credited[pool.group], pool.group
    assert all(pool.ok for pool in audit_pools()), audit_pools()
    assert not IdempotencyRecord.objects.filter(status_code__isnull=True).exists()

    # Connections: one per key; every acknowledged registration and binding is in the store.
    conns = [k for k in ledger.answers if k.startswith("conn-")]
    handles = {k: ledger.acknowledged(k)[1]["handle"] for k in conns}
    assert len(set(handles.values())) == len(conns)
    assert {int(h) for h in redis_client.smembers(HANDLES_KEY)} == set(handles.values())
    store = RedisConnectionStore(redis_client)
    for handle, name in bound.items():
        assert store.load(handle).player_name == name, handle
    print(
        f"\n{len(killed)} workers killed; {len(lost)} answers lost and retried; "
        f"{len(bets)} bets, {len(conns)} connections, {len(bound)} bindings"
    )


# --- the control ---------------------------------------------------------------------------


def naive_keyed_bet(player_id, key: str) -> None:
    """A keyed bet in two commits: the work, then the key's record."""
    import uuid

    from django.db import transaction

    if IdempotencyRecord.objects.filter(scope="naive", key=key).exists():
        return
    services.contribute(player=player_id, bet=1000, operation_id=f"naive:{uuid.uuid4()}")
    with transaction.atomic():
        IdempotencyRecord.objects.create(scope="naive", key=key, request_hash="-", status_code=201)


KILLED_BET = """
import sys
import django
django.setup()
from tests.faults.test_sigkill import naive_keyed_bet
naive_keyed_bet(sys.argv[1], sys.argv[2])
"""


def test_control_a_naive_keyed_bet_killed_between_its_commits_applies_twice(blocker):
    services.ensure_default_pools()
    (player,) = make_players(1)
    # The key's record will wait for this uncommitted one (same unique key).
    blocker.lock(
        f"INSERT INTO {IdempotencyRecord._meta.db_table} (scope, key, request_hash, claim_token,"
        " body, headers, created_at) VALUES ('naive', 'k', '-', '', '', '{}', now()) RETURNING id"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "nightstorm.settings",
        "NIGHTSTORM_ENV_FILE": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BET, str(player.pk), "k"], cwd=ROOT, env=env
    )
    try:
        blocker.wait_for_blocked(timeout=60)  # the bet committed; its key's record waits
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
    blocker.release()
    assert Contribution.objects.count() == 1

    naive_keyed_bet(player.pk, "k")  # the client retries with its key

    assert Contribution.objects.count() == 2
