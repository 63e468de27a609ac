"""Connection store: hash writes beside the legacy JSON read-modify-write (the gateway's
written-behind path and the web tier's synchronous one), registrations beside a raw pipeline,
reconciliation of 10,000 connections beside raw HGETALLs.

Uses the Redis of REDIS_URL (a database of its own: the benchmark empties it before and after).
"""

import json
import multiprocessing
import os
import statistics
import threading
import time

from bench.common import Row, latencies_ms, percentile, rate

CONNECTIONS = 10_000
SAMPLES = 3000
THREADS = 8
# Web workers are processes (gunicorn's), each with request threads.
PROCESSES = int(os.environ.get("BENCH_CONNECTIONS_PROCESSES", "4"))


def _legacy_doc(handle: int) -> str:
    # About the 500 bytes the legacy design wrote on every update.
    return json.dumps(
        {
            "handle": handle,
            "state": "logged_in",
            "player": "6f1c2b7e-4b8e-4f2a-9a57-2f3c8e1d9b10",
            "player_name": f"Player{handle}",
            "protocol": "telnet",
            "remote_addr": "203.0.113.17",
            "connected_at": time.time(),
            "metadata": {
                "LastConnectionSignal": str(time.time()),
                "client": "Mudlet 4.17.2",
                "terminal": "xterm-256color",
                "width": "120",
                "height": "40",
                "charset": "UTF-8",
                "screenreader": "0",
                "colour": "ansi256",
                "note": "x" * 180,
            },
        }
    )


def _legacy_update(client, key: str, field: str, value: str) -> None:
    """The legacy path: GET the whole document, change one key, SET it back."""
    doc = json.loads(client.get(key))
    doc["metadata"][field] = value
    client.set(key, json.dumps(doc))


def _legacy_update_watched(client, key: str, field: str, value: str) -> int:
    """The legacy path with its optimistic lock (WATCH + retry): returns the retries."""
    import redis

    retries = 0
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                doc = json.loads(pipe.get(key))
                doc["metadata"][field] = value
                pipe.multi()
                pipe.set(key, json.dumps(doc))
                pipe.execute()
                return retries
            except redis.WatchError:
                retries += 1


def _threads_rate(fn, seconds: float = 2.0) -> float:
    stop, counts = threading.Event(), [0] * THREADS

    def work(i):
        while not stop.is_set():
            fn(i)
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def _processes_rate(make_call, seconds: float = 2.0) -> float:
    """PROCESSES forked processes at once, each running `_threads_rate` on the call
    `make_call(process_index)` returns: the calls per second of them all together."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()

    def child(index: int) -> None:
        call = make_call(index)
        start.wait(timeout=60)
        results.put(_threads_rate(lambda i: call(), seconds))
        results.close()
        results.join_thread()
        os._exit(0)  # no interpreter teardown in a forked copy of the benchmark

    procs = [ctx.Process(target=child, args=(i,)) for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    total = sum(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    return total


def run() -> list[Row]:
    from django.conf import settings
    from django_redis import get_redis_connection

    from connections.service import ConnectionService
    from connections.store import (
        HANDLES_KEY,
        RedisConnectionStore,
        conn_key,
        encode_time,
        legacy_key,
        meta_key,
        player_key,
    )
    from connections.web import SharedConnections

    if not settings.REDIS_URL:
        raise RuntimeError("bench_connections needs REDIS_URL")
    client = get_redis_connection("default")
    client.flushdb()
    rows = []
    try:
        store = RedisConnectionStore(client)
        service = ConnectionService(store=store)
        web = SharedConnections(RedisConnectionStore(client))

        # --- metadata update: hash path beside the JSON read-modify-write -------------------
        conn = service.register(protocol="telnet", remote_addr="203.0.113.17")
        client.set(legacy_key(999_999_999), _legacy_doc(999_999_999))
        counter = iter(range(10**9))

        def hash_write():
            store.write_now(conn.handle, meta={"client": f"v{next(counter)}"})

        def json_write():
            _legacy_update(client, legacy_key(999_999_999), "client", f"v{next(counter)}")

        def caller_update():
            service.update_metadata(conn.handle, {"client": f"v{next(counter)}"})

        def web_update():
            web.update_metadata(conn.handle, {"client": f"v{next(counter)}"})

        # Interleaved rounds, so a noisy neighbour slows every path alike.
        hash_ms, json_ms, caller_ms, web_ms = [], [], [], []
        for _ in range(6):
            hash_ms += latencies_ms(hash_write, SAMPLES // 6)
            json_ms += latencies_ms(json_write, SAMPLES // 6)
            caller_ms += latencies_ms(caller_update, SAMPLES // 6)
            web_ms += latencies_ms(web_update, SAMPLES // 6)
        service.flush()
        hash_bytes = len(f"client v{SAMPLES}") + 40
        json_bytes = len(client.get(legacy_key(999_999_999))) * 2
        rows += [
            Row(
                "connections: metadata update p50, one guarded HSET vs GET+JSON+SET",
                "ms",
                statistics.median(hash_ms),
                statistics.median(json_ms),
                goal=5.0,
                higher_is_better=False,
                note=f"one client; payload ~{hash_bytes} B vs ~{json_bytes} B per update",
            ),
            Row(
                "connections: metadata update p99, one guarded HSET vs GET+JSON+SET",
                "ms",
                percentile(hash_ms, 99),
                percentile(json_ms, 99),
                goal=5.0,
                higher_is_better=False,
            ),
            Row(
                "connections: metadata update p50 as the caller sees it (written behind)",
                "ms",
                statistics.median(caller_ms),
                statistics.median(json_ms),
                goal=5.0,
                higher_is_better=False,
                note="ConnectionService.update_metadata: map + coalescing queue",
            ),
            Row(
                "connections: metadata update p99 as the caller sees it (written behind)",
                "ms",
                percentile(caller_ms, 99),
                percentile(json_ms, 99),
                goal=5.0,
                higher_is_better=False,
            ),
            Row(
                "connections: web metadata PATCH p50, check+HSET+read back in one script",
                "ms",
                statistics.median(web_ms),
                statistics.median(json_ms),
                goal=1.0,
                higher_is_better=False,
                note="SharedConnections.update_metadata: synchronous, answers what Redis holds",
            ),
            Row(
                "connections: web metadata PATCH p99, check+HSET+read back in one script",
                "ms",
                percentile(web_ms, 99),
                percentile(json_ms, 99),
                goal=1.0,
                higher_is_better=False,
            ),
        ]

        # Throughput of the path the service really uses: the coalescing background writer
        # (pipelined batches of guarded HSETs) over 1,000 connections.
        handles = [
            service.register(protocol="telnet", remote_addr="203.0.113.17").handle
            for _ in range(1000)
        ]
        updates = 50_000
        started = time.perf_counter()
        for i in range(updates):
            service.update_metadata(handles[i % 1000], {f"k{i % 7}": str(i)})
        service.flush(timeout=60)
        writer_rate = updates / (time.perf_counter() - started)
        json_rate_single = rate(json_write, seconds=1.0)
        rows.append(
            Row(
                "connections: metadata updates/s through the background writer vs GET+JSON+SET",
                "ops/s",
                writer_rate,
                json_rate_single,
                goal=5.0,
                note="50,000 updates on 1,000 connections, until flushed to Redis",
            )
        )

        # Contention: 8 threads updating one connection. The legacy design needed WATCH and
        # a retry loop to stay correct; the hash path needs neither.
        retries = [0]

        def hash_contended(i):
            store.write_batch({conn.handle: ({}, {f"t{i}": str(next(counter))})})

        def json_contended(i):
            retries[0] += _legacy_update_watched(
                client, legacy_key(999_999_999), f"t{i}", str(next(counter))
            )

        hash_rate = _threads_rate(hash_contended)
        json_rate = _threads_rate(json_contended)
        rows.append(
            Row(
                f"connections: metadata updates/s, {THREADS} threads on one connection "
                "(HSET vs WATCH+JSON+retry)",
                "ops/s",
                hash_rate,
                json_rate,
                goal=5.0,
                note=f"the JSON path retried {retries[0]} times",
            )
        )

        # --- registrations: ConnectionService (critical write) beside a raw pipeline ---------
        raw_handles = iter(range(500_000_000, 600_000_000))

        def ours_register():
            service.register(protocol="telnet", remote_addr="203.0.113.17")

        def web_register():
            web.register(protocol="telnet", remote_addr="203.0.113.17")

        def raw_register_in(handles):
            def call():
                handle, now = next(handles), encode_time(time.time())
                pipe = client.pipeline(transaction=True)
                pipe.hset(
                    conn_key(handle),
                    mapping={
                        "state": "connected",
                        "protocol": "telnet",
                        "remote_addr": "203.0.113.17",
                        "connected_at": now,
                        "last_signal": now,
                    },
                )
                pipe.sadd(HANDLES_KEY, handle)
                pipe.execute()

            return call

        raw_register = raw_register_in(raw_handles)

        ours_rates, web_rates, raw_rates = [], [], []
        for _ in range(4):  # interleaved rounds; best of each
            ours_rates.append(rate(ours_register, seconds=0.5))
            web_rates.append(rate(web_register, seconds=0.5))
            raw_rates.append(rate(raw_register, seconds=0.5))
        ours_rate, web_rate, raw_rate = max(ours_rates), max(web_rates), max(raw_rates)
        rows += [
            Row(
                "connections: registrations/s, one thread (MULTI HSET+SADD before returning)",
                "ops/s",
                ours_rate,
                raw_rate,
                note="ratio = ConnectionService.register / raw redis-py pipeline; no goal: one "
                "thread waits for every round trip, so the raw pipeline's own rate is its "
                f"ceiling, and the 10,000/s goal is the {PROCESSES} x {THREADS} row's",
            ),
            Row(
                "connections: web registrations/s, one thread (INCR+HSET+SADD in one script)",
                "ops/s",
                web_rate,
                raw_rate,
                note="SharedConnections.register: allocates in Redis, answers what it stored; "
                "no goal, as above",
            ),
        ]
        # Web workers register from many request threads at once: concurrent calls share a
        # round trip (each still in Redis before it returns). Raw: each thread its own pipeline.
        web_threads = _threads_rate(lambda i: web_register())
        raw_threads = _threads_rate(lambda i: raw_register())
        rows.append(
            Row(
                f"connections: web registrations/s, {THREADS} threads (calls share round trips)",
                "ops/s",
                web_threads,
                raw_threads,
                note="SharedConnections.register group commit; raw = MULTI HSET+SADD per call; "
                "no goal: one process's threads share its interpreter lock, the platform's "
                f"goal of 10,000/s is the {PROCESSES} x {THREADS} row's",
            )
        )

        # The same across web workers: PROCESSES processes of THREADS threads. Raw: the same
        # processes and threads, each call its own MULTI pipeline.
        def raw_in(index: int):
            return raw_register_in(iter(range(600_000_000 + index * 10_000_000, 10**10)))

        web_procs = _processes_rate(lambda index: web_register)
        raw_procs = _processes_rate(raw_in)
        rows.append(
            Row(
                f"connections: web registrations/s, {PROCESSES} processes x {THREADS} threads",
                "ops/s",
                web_procs,
                raw_procs,
                goal=10_000,
                goal_is_absolute=True,
                note="as web workers: each process's threads share round trips (group commit); "
                "raw = MULTI HSET+SADD per call in the same processes and threads",
            )
        )
        service.close()
        client.flushdb()

        # --- reconciliation of 10,000 connections -------------------------------------------
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for handle in range(1, CONNECTIONS + 1):
            pipe.hset(
                conn_key(handle),
                mapping={
                    "state": "logged_in",
                    "protocol": "telnet",
                    "remote_addr": "203.0.113.17",
                    "connected_at": encode_time(now - 60),
                    "last_signal": encode_time(now - 5),
                    "player": f"player-{handle}",
                    "player_name": f"Player{handle}",
                },
            )
            pipe.hset(meta_key(handle), mapping={"client": "Mudlet", "width": "120"})
            pipe.sadd(HANDLES_KEY, handle)
            pipe.sadd(player_key(f"player-{handle}"), handle)
            if handle % 1000 == 0:
                pipe.execute()
        pipe.execute()

        def ours_reconcile():
            fresh = ConnectionService(store=RedisConnectionStore(client, legacy_reads=False))
            report = fresh.reconcile(idle_timeout=300)
            assert report.loaded == CONNECTIONS, report
            return report.seconds * 1000

        def ours_reconcile_rollout():
            fresh = ConnectionService(store=RedisConnectionStore(client, legacy_reads=True))
            return fresh.reconcile(idle_timeout=300).seconds * 1000

        def raw_hgetall():
            started = time.perf_counter()
            handles = client.smembers(HANDLES_KEY)
            pipe = client.pipeline(transaction=False)
            for handle in handles:
                pipe.hgetall(conn_key(int(handle)))
                pipe.hgetall(meta_key(int(handle)))
            replies = pipe.execute()
            assert len(replies) == 2 * CONNECTIONS
            return (time.perf_counter() - started) * 1000

        ours_all, rollout_all, raw_all = [], [], []
        for _ in range(5):  # interleaved rounds; median of each
            ours_all.append(ours_reconcile())
            rollout_all.append(ours_reconcile_rollout())
            raw_all.append(raw_hgetall())
        ours_ms, rollout_ms, raw_ms = map(statistics.median, (ours_all, rollout_all, raw_all))
        rows += [
            Row(
                f"connections: reconcile {CONNECTIONS:,} connections into memory",
                "ms",
                ours_ms,
                raw_ms,
                goal=200,
                higher_is_better=False,
                goal_is_absolute=True,
                note="baseline: SMEMBERS + one pipelined HGETALL pair per connection, unparsed",
            ),
            Row(
                f"connections: reconcile {CONNECTIONS:,} connections, legacy keys also scanned",
                "ms",
                rollout_ms,
                raw_ms,
                goal=200,
                higher_is_better=False,
                goal_is_absolute=True,
                note="during a rollout: SCAN connection:* as well",
            ),
        ]
    finally:
        client.flushdb()
    return rows
