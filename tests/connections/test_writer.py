"""The background writer and the handle allocator across a real os.fork, and dropped writes.

A gunicorn worker is a fork of its master: whatever threads, locks and queues the master's
objects held at the fork are copied into the child, without the threads that owned them.
"""

import logging
import os
import signal
import threading

import pytest
from prometheus_client import REGISTRY

from connections.service import ConnectionService
from connections.store import HANDLE_BLOCK, RedisConnectionStore, conn_key, meta_key
from connections.writer import BackgroundWriter


def run_in_child(fn, timeout: int = 10) -> tuple[int, str]:
    """Run `fn` in a forked child; (exit code, what it returned or raised). A child that
    deadlocks is killed by its alarm instead of hanging the suite."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_fd)
        code, message = 1, "no result"
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(timeout)
            message, code = str(fn()), 0
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_fd, message.encode()[:4000])
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


class GatedStore:
    """Records batches; in the parent process the first batch waits for `gate` so that it is
    in flight at the fork."""

    def __init__(self):
        self.parent = os.getpid()
        self.gate = threading.Event()
        self.batches: list[dict] = []
        self.in_flight = threading.Event()

    def write_batch(self, items):
        if os.getpid() == self.parent:
            self.in_flight.set()
            self.gate.wait(10)
        self.batches.append(items)
        return []


def test_writer_starts_afresh_in_a_forked_child():
    store = GatedStore()
    writer = BackgroundWriter(store, max_pending=100)
    writer.submit(1, fields={"last_signal": "1.0"})
    assert store.in_flight.wait(5)  # the writer thread is inside write_batch
    writer.submit(2, fields={"last_signal": "2.0"})  # pending in the parent
    holding, release = threading.Event(), threading.Event()

    def hold_the_condition():  # a parent thread holds the writer's lock across the fork
        with writer._cond:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_condition)
    holder.start()
    assert holding.wait(5)

    def child():
        inherited = (writer._thread, writer.depth, writer._in_flight)
        writer.submit(3, fields={"last_signal": "3.0"})  # would block on the held lock
        drained = writer.flush(timeout=5)
        writer.close()
        return repr((inherited, drained, store.batches))

    try:
        code, output = run_in_child(child)
    finally:
        release.set()
        store.gate.set()
        holder.join(5)
    assert code == 0, output
    # No thread, nothing pending, nothing in flight inherited; its own write went through its
    # own thread, and the parent's pending write was not sent a second time by the child.
    assert output == repr(((None, 0, False), True, [{3: ({"last_signal": "3.0"}, {})}]))
    assert writer.flush(timeout=5)
    assert store.batches == [
        {1: ({"last_signal": "1.0"}, {})},
        {2: ({"last_signal": "2.0"}, {})},
    ]
    writer.close()


def test_control_a_lock_held_at_the_fork_stays_held_in_the_child():
    """Why the reset is needed: a plain condition held by a parent thread at the fork is held
    forever in the child (its owner does not exist there)."""
    cond = threading.Condition()
    holding, release = threading.Event(), threading.Event()

    def hold():
        with cond:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        code, output = run_in_child(lambda: "free" if cond.acquire(timeout=0.3) else "held")
    finally:
        release.set()
        holder.join(5)
    assert (code, output) == (0, "held")


@pytest.mark.redis
def test_handle_block_is_not_shared_with_a_forked_child(redis_client):
    store = RedisConnectionStore(redis_client)
    first = store.allocate_handle()  # reserves [first, first + HANDLE_BLOCK) for this process

    code, output = run_in_child(store.allocate_handle)

    assert code == 0, output
    assert int(output) >= first + HANDLE_BLOCK  # a block of its own, from Redis
    assert store.allocate_handle() == first + 1


class DroppingStore:
    """A store whose connections are all gone: every write is dropped."""

    def write_batch(self, items):
        return list(items)


def dropped(kind: str) -> float:
    return (
        REGISTRY.get_sample_value("nightstorm_connections_writes_dropped_total", {"kind": kind})
        or 0
    )


def test_dropped_writes_are_counted_and_logged(caplog):
    writer = BackgroundWriter(DroppingStore(), max_pending=100)
    before = dropped("last_signal"), dropped("metadata")
    with caplog.at_level(logging.INFO, logger="connections.writer"):
        writer.submit(41, fields={"last_signal": "1.0"}, meta={"client": "mudlet", "w": "80"})
        assert writer.flush(timeout=5)
    assert (dropped("last_signal"), dropped("metadata")) == (before[0] + 1, before[1] + 2)
    assert writer.dropped == 3 and writer.failures == 0
    assert "write dropped (connection gone): handle=41 keys=last_signal,client,w" in caplog.text
    writer.close()


@pytest.mark.redis
def test_a_write_in_flight_when_the_connection_goes_is_dropped_counted_and_logged(
    redis_client, caplog
):
    owner = ConnectionService(store=RedisConnectionStore(redis_client))
    conn = owner.register(protocol="telnet", remote_addr="10.1.1.1")
    other_store = RedisConnectionStore(redis_client)
    other = ConnectionService(store=other_store)
    gate, taken = threading.Event(), threading.Event()
    real_write = other_store.write_batch

    def held_write(items):  # the batch is taken before the disconnect, sent after it
        taken.set()
        gate.wait(5)
        return real_write(items)

    other_store.write_batch = held_write
    before = dropped("last_signal"), dropped("metadata")
    other.update_metadata(conn.handle, {"late": "yes"})
    assert taken.wait(5)
    other.touch(conn.handle)
    owner.disconnect(conn.handle)
    with caplog.at_level(logging.INFO, logger="connections.writer"):
        gate.set()
        assert other.flush(timeout=5)
    assert (dropped("last_signal"), dropped("metadata")) == (before[0] + 1, before[1] + 1)
    assert other.stats()["writes_dropped"] == 2
    assert f"handle={conn.handle} keys=late" in caplog.text
    assert f"handle={conn.handle} keys=last_signal" in caplog.text
    assert not redis_client.exists(conn_key(conn.handle), meta_key(conn.handle))
    for service in (owner, other):
        service.close()
