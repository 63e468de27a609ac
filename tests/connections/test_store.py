"""The shared store on a real Redis: layout, atomic critical writes, background writes,
reconciliation."""

import contextlib
import json
import logging
import threading
import time

import pytest
from prometheus_client import REGISTRY

from connections.service import ConnectionService
from connections.state import LOGGED_IN, AlreadyBound, ConnectionNotFound
from connections.store import (
    HANDLES_KEY,
    RedisConnectionStore,
    conn_key,
    meta_key,
    player_key,
)
from tests.helpers import race

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_client):
    return RedisConnectionStore(redis_client)


@pytest.fixture
def svc(store):
    service = ConnectionService(store=store)
    yield service
    service.close()


def strings(mapping):
    return {k.decode(): v.decode() for k, v in mapping.items()}


def test_register_reaches_redis_before_returning(svc, redis_client):
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1", now=1000.5)
    fields = strings(redis_client.hgetall(conn_key(conn.handle)))
    assert fields == {
        "state": "connected",
        "protocol": "telnet",
        "remote_addr": "10.1.1.1",
        "connected_at": "1000.500000",
        "last_signal": "1000.500000",
    }
    assert redis_client.sismember(HANDLES_KEY, conn.handle)


def test_handles_are_unique_across_processes(store, redis_client):
    other = ConnectionService(store=RedisConnectionStore(redis_client))
    mine = ConnectionService(store=store)
    handles = [mine.register(protocol="t", remote_addr="1.1.1.1").handle for _ in range(5)]
    handles += [other.register(protocol="t", remote_addr="1.1.1.1").handle for _ in range(5)]
    assert len(set(handles)) == 10


def test_bind_writes_player_and_index_atomically(svc, redis_client):
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1")
    svc.bind(conn.handle, player_id="p-1", player_name="Ann")
    fields = strings(redis_client.hgetall(conn_key(conn.handle)))
    assert (fields["player"], fields["player_name"], fields["state"]) == ("p-1", "Ann", LOGGED_IN)
    assert redis_client.smembers(player_key("p-1")) == {str(conn.handle).encode()}
    other_process = ConnectionService(store=RedisConnectionStore(redis_client))
    with pytest.raises(AlreadyBound):  # refused by Redis, not by a local copy
        other_process.bind(conn.handle, player_id="p-2", player_name="Bob")
    with pytest.raises(ConnectionNotFound):
        other_process.bind(123456, player_id="p-2", player_name="Bob")
    assert not redis_client.exists(conn_key(123456))


def test_concurrent_binds_of_one_connection_have_one_winner(store, redis_client):
    """Sixteen processes race to bind the same handle to sixteen players: one wins."""
    handle = ConnectionService(store=store).register(protocol="t", remote_addr="1.1.1.1").handle
    services = [ConnectionService(store=RedisConnectionStore(redis_client)) for _ in range(16)]

    def bind(i):
        return services[i].bind(handle, player_id=f"p-{i}", player_name=f"P{i}")

    outcomes = race(bind, [(i,) for i in range(16)])
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, AlreadyBound) for o in outcomes if isinstance(o, Exception))
    owner = strings(redis_client.hgetall(conn_key(handle)))["player"]
    assert owner == winners[0].player_id
    indexed = [i for i in range(16) if redis_client.sismember(player_key(f"p-{i}"), handle)]
    assert indexed == [int(owner.split("-")[1])]


def test_control_a_bind_checked_then_written_in_python_has_many_winners(store, redis_client):
    """The control: the same sixteen binds as a read of `player`, then HSET and SADD from
    Python (what the BIND script makes one step). Every bind reads the connection unbound
    before any writes, so all sixteen "win" and sixteen players' indexes claim the handle."""
    handle = ConnectionService(store=store).register(protocol="t", remote_addr="1.1.1.1").handle
    everyone_read = threading.Barrier(16, timeout=10)

    def naive_bind(i):
        key = conn_key(handle)
        if redis_client.hget(key, "player"):
            raise AlreadyBound()
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_read.wait()
        redis_client.hset(key, mapping={"player": f"p-{i}", "state": LOGGED_IN})
        redis_client.sadd(player_key(f"p-{i}"), handle)
        return f"p-{i}"

    outcomes = race(naive_bind, [(i,) for i in range(16)])
    assert sorted(outcomes) == sorted(f"p-{i}" for i in range(16)), outcomes
    indexed = [i for i in range(16) if redis_client.sismember(player_key(f"p-{i}"), handle)]
    assert len(indexed) == 16  # fifteen of them point at a connection bound to someone else


def test_background_writes_are_coalesced_and_flushed(svc, redis_client):
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1", now=1.0)
    for i in range(500):
        svc.touch(conn.handle, now=2.0 + i)
    svc.update_metadata(conn.handle, {"client": "mudlet", "width": 80})
    assert svc.flush(timeout=5)
    assert strings(redis_client.hgetall(conn_key(conn.handle)))["last_signal"] == "501.000000"
    assert strings(redis_client.hgetall(meta_key(conn.handle))) == {
        "client": "mudlet",
        "width": "80",
    }
    assert svc.stats()["queue_depth"] == 0


def test_late_background_write_does_not_resurrect_a_disconnected_connection(svc, redis_client):
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1")
    other_process = ConnectionService(store=RedisConnectionStore(redis_client))
    other_process.touch(conn.handle)  # queued in another process...
    other_process.update_metadata(conn.handle, {"late": "yes"})
    svc.disconnect(conn.handle)  # ...while this one disconnects
    assert other_process.flush(timeout=5)
    assert not redis_client.exists(conn_key(conn.handle), meta_key(conn.handle))
    assert not redis_client.sismember(HANDLES_KEY, conn.handle)
    other_process.close()


def test_concurrent_metadata_updates_lose_nothing(store, redis_client, settings):
    """Four processes, 50 keys each, on one connection at once: every key lands (the JSON
    read-modify-write this replaces loses most of them)."""
    settings.CONNECTIONS_MAX_METADATA_KEYS = 1000
    handle = ConnectionService(store=store).register(protocol="t", remote_addr="1.1.1.1").handle
    services = [ConnectionService(store=RedisConnectionStore(redis_client)) for _ in range(4)]

    def write(i):
        for k in range(50):
            services[i].update_metadata(handle, {f"s{i}k{k}": k})
        services[i].flush(timeout=10)

    assert race(write, [(i,) for i in range(4)]) == [None] * 4
    assert redis_client.hlen(meta_key(handle)) == 200
    for service in services:
        service.close()


def test_control_metadata_as_a_json_read_modify_write_loses_keys(redis_client):
    """The control: the same four writers, each keeping the metadata as one JSON document it
    reads, changes and writes back. All four read the document before any writes it back
    (the barrier holds that window open once), so the keys of three are lost for good."""
    doc_key = "nightstorm:test:meta-json"
    everyone_read = threading.Barrier(4, timeout=10)

    def write(i):
        for k in range(50):
            doc = json.loads(redis_client.get(doc_key) or "{}")
            doc[f"s{i}k{k}"] = k
            if k == 0:
                with contextlib.suppress(threading.BrokenBarrierError):
                    everyone_read.wait()
            redis_client.set(doc_key, json.dumps(doc))

    assert race(write, [(i,) for i in range(4)]) == [None] * 4
    assert len(json.loads(redis_client.get(doc_key))) <= 200 - 3


def test_other_process_reads_and_writes_through_redis(svc, redis_client):
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1")
    web = ConnectionService(store=RedisConnectionStore(redis_client))
    assert web.get(conn.handle) is None  # hot path: local map only
    seen = web.lookup(conn.handle)
    assert (seen.handle, seen.remote_addr) == (conn.handle, "10.1.1.1")
    bound = web.bind(conn.handle, player_id="p-9", player_name="Nine")
    assert bound.player_name == "Nine"
    web.update_metadata(conn.handle, {"via": "rest"})
    web.flush()
    assert [c.metadata for c in web.online(shared=True)] == [{"via": "rest"}]
    assert web.disconnect(conn.handle) is True
    with pytest.raises(ConnectionNotFound):
        web.lookup(conn.handle)
    web.close()


def test_reconcile_loads_bindings_and_prunes_idle(store, redis_client, caplog):
    game = ConnectionService(store=store)
    now = time.time()
    live, idle = [], []
    for i in range(30):
        conn = game.register(protocol="telnet", remote_addr=f"10.0.0.{i}", now=now - 10)
        game.bind(conn.handle, player_id=f"p-{i}", player_name=f"P{i}")
        game.update_metadata(conn.handle, {"slot": i})
        live.append(conn.handle)
    for _ in range(10):
        idle.append(game.register(protocol="telnet", remote_addr="10.9.9.9", now=now - 999).handle)
    game.flush()
    redis_client.sadd(HANDLES_KEY, 987654)  # a stray member with nothing behind it

    restarted = ConnectionService(store=RedisConnectionStore(redis_client))
    before = REGISTRY.get_sample_value("nightstorm_connections_reconcile_seconds_count") or 0
    with caplog.at_level(logging.INFO, logger="connections.service"):
        report = restarted.reconcile(idle_timeout=300)
    assert (report.loaded, report.pruned, report.strays) == (30, 10, 1)
    assert report.seconds > 0
    assert "reconciled 30 connections" in caplog.text
    assert REGISTRY.get_sample_value("nightstorm_connections_reconcile_seconds_count") == before + 1
    assert restarted.handles() == set(live)
    sample = restarted.get(live[7])
    assert (sample.player_name, sample.state, sample.metadata) == ("P7", LOGGED_IN, {"slot": "7"})
    assert redis_client.scard(HANDLES_KEY) == 30
    assert not any(redis_client.exists(conn_key(h)) for h in idle)


def test_pruning_is_conditional_on_the_stored_signal(svc, redis_client):
    """A stale local copy must not prune a connection another process keeps alive."""
    conn = svc.register(protocol="telnet", remote_addr="10.1.1.1", now=time.time() - 1000)
    other = ConnectionService(store=RedisConnectionStore(redis_client))
    other.touch(conn.handle)  # fresh activity seen elsewhere
    other.flush()
    assert svc.prune_idle(idle_timeout=300) == 0
    assert redis_client.exists(conn_key(conn.handle))
    assert svc.get(conn.handle).idle_seconds() < 60  # refreshed from Redis
    other.close()


def test_full_queue_is_counted_and_logged(store, redis_client, caplog):
    service = ConnectionService(store=store, queue_size=5)
    conn = service.register(protocol="telnet", remote_addr="10.1.1.1")
    taken, release = threading.Event(), threading.Event()
    real_write = store.write_batch

    def held_write(items):  # hold the writer thread so the queue fills up
        taken.set()
        release.wait(30)
        return real_write(items)

    store.write_batch = held_write
    service.update_metadata(conn.handle, {"first": 1})
    assert taken.wait(30)  # the writer took it and blocks
    before = (
        REGISTRY.get_sample_value(
            "nightstorm_connections_write_queue_full_total", {"kind": "metadata"}
        )
        or 0
    )
    with caplog.at_level(logging.WARNING, logger="connections.writer"):
        service.update_metadata(conn.handle, {f"k{i}": i for i in range(8)})
    after = REGISTRY.get_sample_value(
        "nightstorm_connections_write_queue_full_total", {"kind": "metadata"}
    )
    assert after == before + 3
    assert "queue full" in caplog.text and f"handle={conn.handle}" in caplog.text
    release.set()
    service.flush()
    assert redis_client.hlen(meta_key(conn.handle)) == 6
    service.close()
