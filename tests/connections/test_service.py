"""ConnectionService in-process mode (no Redis): the same API the gateway uses."""

import pytest

from connections.service import ConnectionService
from connections.state import (
    CONNECTED,
    LOGGED_IN,
    AlreadyBound,
    ConnectionNotFound,
    InvalidMetadata,
    MetadataTooLarge,
    clean_metadata,
)
from nightstorm.errors import InvalidInput


def test_register_get_and_online(local_service):
    a = local_service.register(protocol="telnet", remote_addr="10.0.0.1", now=100.0)
    b = local_service.register(protocol="websocket", remote_addr="10.0.0.2", now=101.0)
    assert a.handle != b.handle
    assert local_service.get(a.handle) is a
    assert a.state == CONNECTED and a.player_id is None
    assert {c.handle for c in local_service.online()} == {a.handle, b.handle}
    assert local_service.online(shared=True) == local_service.online()  # nothing shared


def test_bind_is_idempotent_for_the_same_player_and_refuses_another(local_service):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    bound = local_service.bind(conn.handle, player_id="p-1", player_name="Ann")
    assert (bound.state, bound.player_id, bound.player_name) == (LOGGED_IN, "p-1", "Ann")
    assert local_service.bind(conn.handle, player_id="p-1", player_name="Ann") is bound
    with pytest.raises(AlreadyBound) as refused:
        local_service.bind(conn.handle, player_id="p-2", player_name="Bob")
    assert refused.value.status == 409 and refused.value.code == "already_bound"
    assert local_service.get(conn.handle).player_id == "p-1"


def test_unknown_handle(local_service):
    with pytest.raises(ConnectionNotFound) as missing:
        local_service.bind(999, player_id="p", player_name="P")
    assert missing.value.status == 404
    with pytest.raises(ConnectionNotFound):
        local_service.update_metadata(999, {"a": "b"})
    with pytest.raises(ConnectionNotFound):
        local_service.lookup(999)
    assert local_service.disconnect(999) is False
    assert local_service.touch(999) is False


def test_state_changes_are_validated(local_service):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    assert local_service.set_state(conn.handle, LOGGED_IN).state == LOGGED_IN
    with pytest.raises(InvalidInput) as bad:
        local_service.set_state(conn.handle, "flying")
    assert bad.value.code == "invalid_state"


def test_touch_and_metadata(local_service):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1", now=100.0)
    assert local_service.touch(conn.handle, now=150.0)
    assert conn.last_signal == 150.0 and conn.idle_seconds(now=160.0) == 10.0
    local_service.update_metadata(conn.handle, {"client": "mudlet", "width": 80, "ratio": 1.5})
    assert conn.metadata == {"client": "mudlet", "width": "80", "ratio": "1.5"}
    local_service.update_metadata(conn.handle, {"width": 120})
    assert conn.metadata["width"] == "120"


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        "text",
        {"": "x"},
        {"has space": "x"},
        {"k" * 65: "x"},
        {"nested": {"a": 1}},
        {"list": [1]},
        {"flag": True},
        {"none": None},
        {"nan": float("nan")},
        {"long": "x" * 1025},
    ],
)
def test_metadata_validation(local_service, bad):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    with pytest.raises(InvalidMetadata) as refused:
        local_service.update_metadata(conn.handle, bad)
    assert refused.value.status == 400
    assert conn.metadata == {}


def test_metadata_key_count_is_bounded(local_service):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    local_service.update_metadata(conn.handle, {f"k{i}": i for i in range(32)})
    with pytest.raises(MetadataTooLarge):
        local_service.update_metadata(conn.handle, {"one_more": 1})
    local_service.update_metadata(conn.handle, {"k0": "replaced"})  # existing keys still change
    assert len(conn.metadata) == 32
    with pytest.raises(MetadataTooLarge):
        clean_metadata({f"k{i}": i for i in range(33)})


def test_disconnect_forgets(local_service):
    conn = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    assert local_service.disconnect(conn.handle) is True
    assert local_service.get(conn.handle) is None
    assert local_service.disconnect(conn.handle) is False


def test_prune_idle_spares_kept_handles(local_service):
    old = local_service.register(protocol="telnet", remote_addr="10.0.0.1", now=0.0)
    watched = local_service.register(protocol="telnet", remote_addr="10.0.0.2", now=0.0)
    fresh = local_service.register(protocol="telnet", remote_addr="10.0.0.3", now=1000.0)
    pruned = local_service.prune_idle(idle_timeout=300, keep={watched.handle}, now=1000.0)
    assert pruned == 1
    assert local_service.handles() == {watched.handle, fresh.handle}
    assert old.handle not in local_service.handles()


def test_reconcile_without_redis_is_a_no_op(local_service):
    local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    report = local_service.reconcile()
    assert (report.loaded, report.pruned) == (1, 0)
    assert local_service.stats() == {"mode": "in_process", "local_connections": 1}


def test_from_settings_without_redis(settings):
    settings.REDIS_URL = ""
    assert ConnectionService.from_settings().store is None


def test_idempotent_register_in_process(local_service):
    from nightstorm.errors import IdempotencyKeyReused

    key = ("token", "digest")
    first = local_service.register(protocol="telnet", remote_addr="10.0.0.1", idempotency=key)
    local_service.update_metadata(first.handle, {"seen": "yes"})
    again = local_service.register(protocol="telnet", remote_addr="10.0.0.1", idempotency=key)
    assert again is first and again.metadata == {"seen": "yes"}
    with pytest.raises(IdempotencyKeyReused):
        local_service.register(
            protocol="telnet", remote_addr="10.0.0.1", idempotency=("token", "x")
        )
    local_service.disconnect(first.handle)
    back = local_service.register(protocol="telnet", remote_addr="10.0.0.1", idempotency=key)
    assert back.handle == first.handle and back.metadata == {}
    other = local_service.register(protocol="telnet", remote_addr="10.0.0.1")
    assert local_service.handles() == {first.handle, other.handle}
