"""The concurrency toolkit beside raw Redis and raw SQL doing the same work.

* lock acquire+release: `distributed_lock` (Lua SET NX PX + fencing token, Lua owner-checked
  release) vs redis-py `SET NX PX` + a Lua compare-and-delete.
* database lease acquire+release vs the same two SQL statements through psycopg.
* optimistic update: `update_versioned` (ORM conditional UPDATE) vs a raw
  `UPDATE … WHERE id = %s AND version = %s` through psycopg.
* throttle check: the default throttles' sliding-window count vs redis-py sending the same
  INCR, EXPIRE and GET in one pipeline; DRF's own rate throttle (read the caller's history,
  write it back) beside it, for information.
"""

import secrets

from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Row, rate, raw_pg

GOAL = 0.67


def bench_redis_lock() -> list[Row]:
    from django_redis import get_redis_connection

    from nightstorm.locks import distributed_lock

    client = get_redis_connection("default")
    release = client.register_script(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
        "return 0"
    )

    def ours():
        with distributed_lock("bench:ours", ttl=5, wait=1, backend="redis"):
            pass

    def raw():
        token = secrets.token_hex(16)
        if client.set("bench:raw", token, nx=True, px=5000):
            release(keys=["bench:raw"], args=[token])

    raw_rate, ours_rate = rate(raw), rate(ours)
    raw_rate = max(raw_rate, rate(raw))  # best of two: the baseline should not be handicapped
    return [
        Row(
            "redis lock acquire+release",
            "ops/s",
            ours_rate,
            raw_rate,
            GOAL,
            note="ours also takes a fencing token in the same script",
        )
    ]


def bench_database_lock() -> list[Row]:
    from nightstorm.locks import distributed_lock

    raw_conn = raw_pg()

    def ours():
        with distributed_lock("bench:db-ours", ttl=5, wait=1, backend="database"):
            pass

    def raw():
        now = timezone.now()
        raw_conn.execute(
            "INSERT INTO nightstorm_lock_lease (key, owner, fence, expires_at) "
            "VALUES (%s, %s, 1, %s) ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
            "fence = nightstorm_lock_lease.fence + 1, expires_at = excluded.expires_at "
            "WHERE nightstorm_lock_lease.expires_at <= %s RETURNING fence",
            ["bench:db-raw", "o", now + timezone.timedelta(seconds=5), now],
        ).fetchall()
        raw_conn.execute(
            "UPDATE nightstorm_lock_lease SET owner = '', expires_at = %s "
            "WHERE key = %s AND owner = %s AND expires_at > %s",
            [now, "bench:db-raw", "o", now],
        )

    rows = [Row("database lease acquire+release", "ops/s", rate(ours), rate(raw), GOAL)]
    raw_conn.close()
    return rows


def bench_optimistic_update() -> list[Row]:
    from django.contrib.auth import get_user_model

    from game.models import Player
    from nightstorm.optimistic import update_versioned

    user, _ = get_user_model().objects.get_or_create(username="bench-optimistic")
    Player.all_objects.filter(user=user).hard_delete()
    ours_row = Player.objects.create(user=user, name="bench-optimistic")
    user2, _ = get_user_model().objects.get_or_create(username="bench-optimistic-raw")
    Player.all_objects.filter(user=user2).hard_delete()
    raw_row = Player.objects.create(user=user2, name="bench-optimistic-raw")
    raw_conn = raw_pg()
    state = {"ours": ours_row.version, "raw": raw_row.version}

    def ours():
        state["ours"] = update_versioned(Player, ours_row.pk, state["ours"], gold=state["ours"])

    def raw():
        cur = raw_conn.execute(
            "UPDATE game_player SET gold = %s, version = version + 1, updated_at = %s "
            "WHERE id = %s AND version = %s",
            [state["raw"], timezone.now(), raw_row.pk, state["raw"]],
        )
        assert cur.rowcount == 1
        state["raw"] += 1

    connection.ensure_connection()
    rows = [Row("optimistic update (conditional UPDATE)", "ops/s", rate(ours), rate(raw), GOAL)]
    raw_conn.close()
    Player.all_objects.filter(pk__in=[ours_row.pk, raw_row.pk]).hard_delete()
    get_user_model().objects.filter(pk__in=[user.pk, user2.pk]).delete()
    return rows


def bench_throttle() -> list[Row]:
    import types

    from django.core.cache import cache
    from django_redis import get_redis_connection
    from rest_framework.throttling import SimpleRateThrottle

    from nightstorm.api.throttling import SlidingWindowThrottle

    client = get_redis_connection("default")
    request = types.SimpleNamespace()

    def throttle(base, key):
        class Throttle(base):
            rate = "100000000/min"  # never refuses: every call is a counted request

            def get_cache_key(self, request, view):
                return key

        return Throttle

    drf_key = f"bench-throttle-drf-{secrets.token_hex(4)}"
    ours_class = throttle(SlidingWindowThrottle, "bench-throttle-ours")
    drf_class = throttle(SimpleRateThrottle, drf_key)

    def ours():
        assert ours_class().allow_request(request, None)

    def drf():
        assert drf_class().allow_request(request, None)

    def raw():
        pipe = client.pipeline(transaction=False)
        pipe.incr("bench:throttle:raw")
        pipe.expire("bench:throttle:raw", 120)
        pipe.get("bench:throttle:raw:previous")
        pipe.execute()

    raw_rate, ours_rate = rate(raw), rate(ours)
    raw_rate = max(raw_rate, rate(raw))
    drf_rate = rate(drf, seconds=1.0)  # its history grows with every call: a short run
    cache.delete(drf_key)
    return [
        Row(
            "throttle check (sliding-window count)",
            "ops/s",
            ours_rate,
            raw_rate,
            GOAL,
            note=f"raw = INCR, EXPIRE, GET pipelined in redis-py; DRF's rate throttle (GET and SET "
            f"of the caller's history) {drf_rate:,.0f} ops/s in the same run, after 1 s of calls",
        )
    ]


def run() -> list[Row]:
    rows = []
    if settings.REDIS_URL:
        rows += bench_redis_lock()
        rows += bench_throttle()
    if connection.vendor == "postgresql":
        rows += bench_database_lock()
        rows += bench_optimistic_update()
    return rows
