"""Redis stops mid-flight and comes back empty (a private redis-server on a port of its own;
never the shared one).

- The HTTP API on gunicorn: combat registrations, jackpot contributions and connection
  registrations (each with an Idempotency-Key) run on client threads while Redis stops and
  restarts. A request that reaches Redis while it is down (the throttle's counters in the
  cache, the connection store) is answered 503 with a `code`, never 500; it left nothing in
  PostgreSQL (no registration, no contribution, no idempotency claim); the same request with
  the same key succeeds once Redis is back, and applies once.
- Lock-guarded work (the Nightstorm schedule check and a game master's pause/resume, under
  `nightstorm.locks.distributed_lock`): Redis stops while a pause holds the lock; the pause
  still commits (its write is fenced in PostgreSQL) and its lease simply expires; while Redis
  is down the check is refused with `lock_unavailable` and changes nothing; a resume issued
  during the outage waits for Redis and goes through when it is back, with a fencing token
  above every earlier one although Redis lost all its keys. The control: fencing tokens from a
  plain counter in Redis start again at 1 after the restart, and the lock-guarded writes are
  refused until the counter climbs back past the last token PostgreSQL accepted.

The connection store's own outage behaviour (the gateway, background writes, reads) is in
tests/connections/test_outage.py and test_web_group_commit.py.
"""

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis
from django.db.models import Count, Q
from django_q.models import Schedule
from rest_framework.authtoken.models import Token

from connections.store import HANDLES_KEY
from game.models import Combat, Registration
from game.storms import controls
from game.storms import schedules as ns
from jackpot import services
from jackpot.ledger import audit_pools
from jackpot.models import Contribution
from nightstorm import locks
from nightstorm.errors import LockUnavailable, StaleFencingToken
from nightstorm.models import FenceMark, IdempotencyRecord
from tests.faults.conftest import redis_url
from tests.game.factories import ZoneFactory, make_event, make_players
from tests.jackpot.factories import UserFactory
from tests.processes import Platform

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

# Who meets Redis on each path: the throttle (cache) for accounts, the store for connections.
EXPECTED_CODES = {
    "register": {"redis_unavailable"},
    "contribute": {"redis_unavailable"},
    "connect": {"store_unavailable"},  # a service token: not throttled, the store refuses
    "connect_staff": {"redis_unavailable", "store_unavailable"},
}
CONTRIBUTIONS = "/api/v1/jackpots/contributions/"
CONNECTIONS = "/api/v1/connections/"


@dataclass
class Op:
    """One request of a client, sent with its Idempotency-Key, and every answer it got."""

    kind: str
    key: str
    path: str
    body: dict | None
    auth: dict
    answers: list = field(default_factory=list)  # (status, body, Redis restarted by then)

    def send(self, platform: Platform, restarted: threading.Event) -> int:
        status, body, _ = platform.request(
            "POST", self.path, self.body, **self.auth, **{"Idempotency-Key": self.key}
        )
        # Read after the answer: a request sent during the outage may be served after it.
        self.answers.append((status, body, restarted.is_set()))
        return status

    @property
    def ok(self) -> bool:
        return bool(self.answers) and 200 <= self.answers[-1][0] < 300


@pytest.mark.slow
def test_requests_meeting_a_stopped_redis_are_503_change_nothing_and_succeed_when_it_is_back(
    private_redis, tmp_path
):
    zone = ZoneFactory()
    combats = list(make_event(zone).combats.order_by("index"))
    players = make_players(24, zone=zone)
    tokens = [Token.objects.create(user_id=p.user_id).key for p in players]
    staff = Token.objects.create(user=UserFactory(is_staff=True)).key
    services.ensure_default_pools()

    ops = []
    for n in range(24):  # round-robin, so every kind runs before, during and after the outage
        seat = f"/api/v1/combats/{combats[n % len(combats)].pk}/registrations/"
        ops.append(Op("register", f"seat-{n}", seat, None, {"token": tokens[n]}))
        bet = {"bet": 1000 + n}
        ops.append(Op("contribute", f"bet-{n}", CONTRIBUTIONS, bet, {"token": tokens[n]}))
        remote = {"protocol": "telnet", "remote_addr": f"10.0.0.{n}"}
        if n % 2:
            ops.append(Op("connect", f"conn-{n}", CONNECTIONS, remote, {"service": True}))
        else:
            ops.append(Op("connect_staff", f"conn-{n}", CONNECTIONS, remote, {"token": staff}))

    platform = Platform(tmp_path, REDIS_URL=redis_url(private_redis))
    platform.web(workers=2)
    restarted = threading.Event()
    pending = iter(ops)
    take = threading.Lock()
    sent = itertools.count(1)
    progress = [0]

    def client():
        while True:
            with take:
                op = next(pending, None)
            if op is None:
                return
            op.send(platform, restarted)
            progress[0] = next(sent)
            time.sleep(0.01)

    def wait_for_progress(n: int) -> None:
        deadline = time.monotonic() + 60
        while progress[0] < n and time.monotonic() < deadline:
            time.sleep(0.005)

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_for_progress(len(ops) // 4)
        private_redis.stop()
        wait_for_progress(len(ops) * 3 // 4)
        restarted.set()
        private_redis.start()  # same port, empty
        for thread in threads:
            thread.join(60)
        check_the_outage(ops)

        # Redis is back: the same workers answer the refused requests, retried with their
        # keys, and each applies once.
        for op in ops:
            if not op.ok:
                assert op.send(platform, restarted) == 201, op.answers[-1]
        again = [op for op in ops if op.kind.startswith("connect") and op.answers[-1][2]][:4]
        replays = [
            platform.request("POST", op.path, op.body, **op.auth, **{"Idempotency-Key": op.key})
            for op in again
        ]
    finally:
        if private_redis.proc is None:
            private_redis.start()
        codes = platform.stop()
    assert codes["web"] == 0, platform.log("web")[-3000:]
    assert Registration.objects.count() == 24
    assert sorted(Contribution.objects.values_list("bet", flat=True)) == [
        1000 + n for n in range(24)
    ]
    assert_seats_match_registrations()
    assert all(pool.ok for pool in audit_pools()), audit_pools()
    # One connection per key among those registered since the restart (the restart emptied
    # Redis); a key sent again gets its handle back.
    live = {
        op.answers[-1][1]["handle"]
        for op in ops
        if op.kind.startswith("connect") and op.answers[-1][2]
    }
    stored = redis.Redis(port=private_redis.port).smembers(HANDLES_KEY)
    assert {int(h) for h in stored} == live
    for op, (status, body, _) in zip(again, replays, strict=True):
        assert status == 201 and body["handle"] == op.answers[-1][1]["handle"]


def check_the_outage(ops: list[Op]) -> None:
    # Every answer: a success, or a 503 naming what was down. Never a 500.
    refused = dict.fromkeys(EXPECTED_CODES, 0)
    for op in ops:
        ((status, body, _),) = op.answers
        if status >= 300:
            assert status == 503 and body["code"] in EXPECTED_CODES[op.kind], (op.kind, body)
            refused[op.kind] += 1
    assert all(refused.values()), refused

    # Nothing of a refused request is in PostgreSQL: rows and claims only for the successes.
    done = {kind: sum(op.ok for op in ops if op.kind == kind) for kind in EXPECTED_CODES}
    assert Registration.objects.count() == done["register"]
    assert Contribution.objects.count() == done["contribute"]
    assert not IdempotencyRecord.objects.filter(status_code__isnull=True).exists()
    assert IdempotencyRecord.objects.count() == sum(done.values())
    assert_seats_match_registrations()
    assert all(pool.ok for pool in audit_pools())


def assert_seats_match_registrations():
    for combat in Combat.objects.annotate(
        active=Count("registrations", filter=Q(registrations__active=True))
    ):
        assert combat.seats == combat.active <= combat.capacity


# --- lock-guarded work -----------------------------------------------------------------------


def fence() -> int:
    return FenceMark.objects.get(key=ns.LOCK_KEY).fence


def schedule_rows() -> list[tuple]:
    return list(Schedule.objects.order_by("name").values_list("name", "repeats", "next_run"))


def test_lock_guarded_schedule_work_across_a_redis_stop_and_an_empty_restart(
    on_private_redis, blocker, in_thread, caplog
):
    server = on_private_redis
    codes = [ZoneFactory().code for _ in range(3)]
    assert len(ns.check_schedules().created) == 3
    first = fence()

    # A game master's pause holds the lock and waits for the schedule row; Redis stops.
    blocker.lock(
        f"SELECT 1 FROM {Schedule._meta.db_table} WHERE name = %s FOR UPDATE",
        [ns.schedule_name(codes[0])],
    )
    with caplog.at_level(logging.WARNING, logger="nightstorm.locks"):
        pausing = in_thread(controls.pause, zone_code=codes[0])
        ((_, query),) = blocker.wait_for_blocked()
        assert "FOR UPDATE" in query
        server.stop()
        blocker.release()
        assert pausing.result(timeout=30) == {"paused": (False, True)}
    # Its write was fenced in PostgreSQL, not in Redis: it committed; the lease it could not
    # release expires with its TTL.
    assert Schedule.objects.get(name=ns.schedule_name(codes[0])).repeats == ns.PAUSED_REPEATS
    paused_with = fence()
    assert paused_with > first
    assert "Redis refused the release" in caplog.text

    # While Redis is down: refused in time, with a code, and nothing changed.
    before = schedule_rows()
    with pytest.raises(LockUnavailable) as refused:
        ns.check_schedules(wait=0.5)
    assert (refused.value.code, refused.value.status) == ("lock_unavailable", 503)
    assert schedule_rows() == before and fence() == paused_with

    # A resume issued during the outage waits for the lock and gets it once Redis is back,
    # empty: its token is still above every earlier one, so its fenced write is accepted.
    resuming = in_thread(controls.resume, zone_code=codes[0])
    time.sleep(0.5)
    assert not resuming.done()
    server.start()
    assert resuming.result(timeout=30)["paused"] == (True, False)
    assert fence() > paused_with
    assert not ns.is_paused(Schedule.objects.get(name=ns.schedule_name(codes[0])))
    assert not ns.check_schedules().changed


# KEYS[1] lock, KEYS[2] fence; a plain counter, kept only as long as Redis keeps its data.
_NAIVE_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""


class CounterFencedBackend(locks.RedisBackend):
    """The naive lock: its fencing token is INCR on a Redis key."""

    def __init__(self, client):
        super().__init__(client)
        self._acquire = client.register_script(_NAIVE_ACQUIRE)


def test_control_counter_fences_restart_at_one_and_refuse_every_guarded_write_after_a_restart(
    on_private_redis,
):
    from django_redis import get_redis_connection

    server = on_private_redis
    code = ZoneFactory().code
    locks._backends["redis"] = CounterFencedBackend(get_redis_connection("default"))
    ns.check_schedules()
    controls.pause(zone_code=code)
    ns.check_schedules()
    assert fence() == 3

    server.stop()
    server.start()  # empty: the counter starts again

    with pytest.raises(StaleFencingToken):  # token 1
        controls.resume(zone_code=code)
    with pytest.raises(StaleFencingToken):  # token 2
        ns.check_schedules()
    assert ns.is_paused(Schedule.objects.get(name=ns.schedule_name(code)))
