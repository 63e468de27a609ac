"""Legacy JSON keys -> hash layout: reads accept both, the command converts, twice = once."""

import json
import time

import pytest
from django.core.management import call_command

from connections.service import ConnectionService
from connections.store import (
    HANDLES_KEY,
    SEQ_KEY,
    RedisConnectionStore,
    conn_key,
    legacy_key,
    meta_key,
    player_key,
)
from connections.store.legacy import legacy_handles

pytestmark = pytest.mark.redis

NOW = time.time()


def legacy_doc(handle, *, player=True, signal_age=5):
    doc = {
        "handle": handle,
        "state": "logged_in" if player else "connected",
        "player": f"p-{handle}" if player else None,
        "player_name": f"Legacy{handle}" if player else None,
        "protocol": "telnet",
        "remote_addr": f"10.2.0.{handle}",
        "connected_at": NOW - 100,
        "metadata": {"LastConnectionSignal": str(NOW - signal_age), "client": f"c{handle}"},
    }
    return json.dumps(doc)


@pytest.fixture
def legacy_fixture(redis_client):
    """20 legacy keys: 15 bound, 3 unbound, 1 already partly in the hash layout, 1 broken."""
    global NOW
    NOW = time.time()
    for handle in range(1, 16):
        redis_client.set(legacy_key(handle), legacy_doc(handle))
    for handle in range(16, 19):
        redis_client.set(legacy_key(handle), legacy_doc(handle, player=False))
    # Handle 19: the new code already wrote a newer last signal and a metadata key.
    redis_client.set(legacy_key(19), legacy_doc(19, signal_age=50))
    redis_client.hset(conn_key(19), "last_signal", f"{NOW:.6f}")
    redis_client.hset(meta_key(19), "client", "newer")
    redis_client.set(legacy_key(20), "{not json")
    return redis_client


def snapshot(client) -> dict:
    state = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            state[key] = client.get(key)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "set":
            state[key] = client.smembers(key)
    return state


def test_reads_accept_the_legacy_layout_during_a_rollout(legacy_fixture):
    service = ConnectionService(store=RedisConnectionStore(legacy_fixture))
    conn = service.lookup(3)
    assert (conn.player_id, conn.player_name, conn.metadata) == ("p-3", "Legacy3", {"client": "c3"})
    assert conn.idle_seconds() == pytest.approx(5, abs=2)
    merged = service.lookup(19)
    assert merged.metadata == {"client": "newer"} and merged.idle_seconds() < 5
    report = ConnectionService(store=RedisConnectionStore(legacy_fixture)).reconcile()
    assert report.loaded == 19 and report.pruned == 0
    assert legacy_fixture.exists(legacy_key(20))  # unreadable: left for the migration report
    # New writes to a legacy-only connection land in the hash layout and win on read.
    service.bind(17, player_id="p-17", player_name="Late")
    service.update_metadata(17, {"client": "new"})
    service.flush()
    assert service.lookup(17).player_name == "Late"
    assert service.lookup(17).metadata == {"client": "new"}
    service.close()


def test_dry_run_changes_nothing(legacy_fixture, capsys):
    before = snapshot(legacy_fixture)
    call_command("migrate_connection_state", "--dry-run", "--no-progress")
    out = capsys.readouterr().out
    assert "dry run: 20 legacy keys: 19 would convert (1 merged" in out
    assert "1 invalid left in place" in out
    assert snapshot(legacy_fixture) == before


def test_migration_converts_and_is_idempotent(legacy_fixture, capsys):
    call_command("migrate_connection_state")
    out = capsys.readouterr().out
    assert "20 legacy keys: 19 converted (1 merged into existing hashes), 1 invalid" in out
    client = legacy_fixture
    assert legacy_handles(client) == [20]  # only the broken key is left
    fields = {k.decode(): v.decode() for k, v in client.hgetall(conn_key(4)).items()}
    assert fields["player"] == "p-4" and fields["state"] == "logged_in"
    assert fields["remote_addr"] == "10.2.0.4"
    assert client.hgetall(meta_key(4)) == {b"client": b"c4"}
    assert client.sismember(player_key("p-4"), 4)
    assert client.scard(HANDLES_KEY) == 19
    assert client.hget(conn_key(19), "last_signal").decode() == f"{NOW:.6f}"  # newer kept
    assert client.hgetall(meta_key(19)) == {b"client": b"newer"}
    assert "player" not in {k.decode() for k in client.hgetall(conn_key(17))}
    assert int(client.get(SEQ_KEY)) >= 20  # new handles start above the converted ones

    restored = ConnectionService(store=RedisConnectionStore(client))
    assert restored.reconcile().loaded == 19
    assert restored.get(9).player_name == "Legacy9"

    before = snapshot(client)
    call_command("migrate_connection_state")
    out = capsys.readouterr().out
    assert "1 legacy keys: 0 converted" in out
    assert snapshot(client) == before
    restored.close()


def test_keys_of_the_untagged_layout_move_to_the_tagged_names(redis_client, capsys):
    """A store written before the {conn} hash tag: its keys move over; where new code already
    wrote the tagged key, the newer value wins (hash fields, allocator), sets merge."""
    old = "ns:conn:"
    redis_client.hset(f"{old}5", mapping={"state": "logged_in", "player": "p-5", "protocol": "t"})
    redis_client.hset(f"{old}5:meta", "client", "c5")
    redis_client.sadd(f"{old}handles", 5, 6)
    redis_client.sadd(f"{old}player:p-5", 5)
    redis_client.set(f"{old}seq", 3000)
    redis_client.set(f"{old}idem:abc", "5 digest", ex=600)
    redis_client.hset(conn_key(6), mapping={"state": "connected", "protocol": "new"})
    redis_client.hset(f"{old}6", mapping={"state": "logged_in", "protocol": "old", "x": "1"})
    redis_client.sadd(HANDLES_KEY, 7)
    redis_client.set(SEQ_KEY, 1000)

    call_command("migrate_connection_state", "--no-progress")
    assert "7 keys of the untagged layout moved" in capsys.readouterr().out
    assert list(redis_client.scan_iter(match=f"{old}*")) == []
    assert redis_client.hgetall(conn_key(5))[b"player"] == b"p-5"
    assert redis_client.hgetall(meta_key(5)) == {b"client": b"c5"}
    assert redis_client.hgetall(conn_key(6)) == {
        b"state": b"connected",
        b"protocol": b"new",
        b"x": b"1",
    }
    assert redis_client.smembers(HANDLES_KEY) == {b"5", b"6", b"7"}
    assert redis_client.smembers(player_key("p-5")) == {b"5"}
    assert int(redis_client.get(SEQ_KEY)) == 3000
    assert 0 < redis_client.ttl("ns:{conn}:idem:abc") <= 600
    assert ConnectionService(store=RedisConnectionStore(redis_client)).lookup(5).player_id == "p-5"

    call_command("migrate_connection_state", "--no-progress")
    assert "0 keys of the untagged layout moved" in capsys.readouterr().out
