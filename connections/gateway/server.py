"""The connection gateway: a line-oriented (telnet-style) asyncio TCP server for game clients.

This module owns the sockets; what a line means is `connections.gateway.commands`. It is the
one process that keeps connections in memory (`ConnectionService`): it registers a connection
when a socket opens and disconnects it when the socket closes. Every line refreshes the
connection's last signal (a non-critical write). Registering, binding, disconnecting and
authenticating run on a small thread pool (they block on Redis or the database) so the event
loop keeps serving other clients.

Defences, so one client cannot hurt the others or grow memory without bound:
- a line longer than CONNECTIONS_MAX_LINE_BYTES closes the connection (the StreamReader limit
  bounds the buffer; asyncio pauses reading past it);
- beyond CONNECTIONS_MAX_CLIENTS a new client is told the server is full and closed;
- every write waits for the socket to drain, at most `drain_timeout` seconds, with a small
  write-buffer high-water mark: a client that never reads is closed instead of buffered;
- a client silent for the idle timeout is closed; three failed logins close the connection,
  and an address with CONNECTIONS_LOGIN_FAILURES_PER_ADDRESS failed logins in the window
  (counted across connections and gateways) is refused logins until the window ends;
- bytes that are not UTF-8 or not printable are replaced or dropped, then treated as text.
"""

import asyncio
import contextlib
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings

from connections import metrics
from connections.gateway.commands import (
    BANNER,
    QUIT,
    UNAVAILABLE,
    Authenticate,
    Client,
    CommandInterpreter,
)
from connections.service import ConnectionService
from connections.state import StoreUnavailable

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 64 * 1024


class _Close(Exception):
    """Stop serving this client (the reason is counted)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    task: asyncio.Task | None
    client: Client = field(default_factory=Client)
    aborted: bool = False


class Gateway:
    """One listening socket and its clients, all on one event loop.

    `authenticate(username, password) -> (player id, player name) | None` checks a login; it
    runs on the thread pool (`run_gateway` passes `connections.players.authenticate_player`).
    """

    def __init__(
        self,
        service: ConnectionService,
        *,
        authenticate: Authenticate,
        host: str = "127.0.0.1",
        port: int = 0,
        max_clients: int | None = None,
        max_line_bytes: int | None = None,
        idle_timeout: float | None = None,
        drain_timeout: float = 5.0,
        workers: int = 8,
        sweep_interval: float = 30.0,
    ):
        self.service = service
        self.host, self.port = host, port
        self.max_clients = max_clients or settings.CONNECTIONS_MAX_CLIENTS
        self.max_line_bytes = max_line_bytes or settings.CONNECTIONS_MAX_LINE_BYTES
        self.idle_timeout = idle_timeout or settings.CONNECTIONS_IDLE_TIMEOUT_SECONDS
        self.drain_timeout = drain_timeout
        self.sweep_interval = sweep_interval
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway")
        self._sessions: dict[int, _Session] = {}  # by id(session)
        self._tasks: set[asyncio.Task] = set()  # every client coroutine, until it has finished
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._closing = False
        self.commands = CommandInterpreter(
            service, authenticate=authenticate, run_blocking=self._run
        )

    @property
    def client_count(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_client, self.host, self.port, limit=self.max_line_bytes, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("gateway listening on %s:%s", self.host, self.port)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, say goodbye, disconnect every client of this gateway from the store."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions.values())
        for session in sessions:
            metrics.GATEWAY_DROPPED.labels("shutdown").inc()
            with contextlib.suppress(Exception):
                session.writer.write(b"Server shutting down. Goodbye.\r\n")
            session.writer.close()
        # Includes clients that already left but are still disconnecting from the store.
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout / 2)
            if pending:
                # Clients that do not read keep a closing transport open (it waits to flush):
                # drop their buffers so their readers see EOF and disconnect from the store.
                for session in list(self._sessions.values()):
                    session.writer.transport.abort()
                await asyncio.wait(pending, timeout=timeout / 2)
        if self._server is not None:
            await self._server.wait_closed()
        await self._run(self.service.flush)
        self._executor.shutdown(wait=True)
        log.info("gateway stopped; %d clients disconnected", len(sessions))

    # --- one client --------------------------------------------------------------------------

    async def _serve_client(self, reader, writer) -> None:
        session = _Session(writer=writer, task=asyncio.current_task())
        self._tasks.add(session.task)
        session.task.add_done_callback(self._tasks.discard)
        if self._closing or len(self._sessions) >= self.max_clients:
            metrics.GATEWAY_DROPPED.labels("full").inc()
            with contextlib.suppress(Exception):
                writer.write(b"The server is full; try again later.\r\n")
                writer.close()
            return
        self._sessions[id(session)] = session
        metrics.GATEWAY_CLIENTS.set(len(self._sessions))
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = writer.get_extra_info("peername")
        try:
            conn = await self._run(
                self.service.register, protocol="telnet", remote_addr=peer[0] if peer else ""
            )
            session.client.handle = conn.handle
            session.client.remote_addr = peer[0] if peer else ""
            await self._send(session, BANNER)
            while True:
                line = await self._read_line(reader)
                self.service.touch(conn.handle)
                reply = await self.commands.execute(session.client, line)
                if reply.text is not None:
                    await self._send(session, reply.text)
                if reply.close == QUIT:
                    break
                if reply.close is not None:
                    raise _Close(reply.close)
        except _Close as close:
            metrics.GATEWAY_DROPPED.labels(close.reason).inc()
            session.aborted = close.reason == "slow_reader"
            if not session.aborted:
                with contextlib.suppress(Exception):
                    writer.write(f"{_CLOSE_MESSAGES[close.reason]}\r\n".encode())
        except StoreUnavailable:
            metrics.GATEWAY_DROPPED.labels("store_unavailable").inc()
            with contextlib.suppress(Exception):
                writer.write(f"{UNAVAILABLE}\r\n".encode())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._sessions.pop(id(session), None)
            metrics.GATEWAY_CLIENTS.set(len(self._sessions))
            if session.aborted:
                writer.transport.abort()  # a client that does not read: discard its buffer
            else:
                writer.close()
            handle = session.client.handle
            if handle is not None:
                try:
                    await self._run(self.service.disconnect, handle)
                except StoreUnavailable:
                    log.warning("handle %s left in Redis (store unavailable)", handle)

    async def _read_line(self, reader) -> str:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
        except TimeoutError:
            raise _Close("idle") from None
        except asyncio.LimitOverrunError:
            raise _Close("line_too_long") from None
        except ValueError:  # readuntil on a buffer already past the limit
            raise _Close("line_too_long") from None
        text = raw.decode("utf-8", errors="replace")
        return "".join(ch for ch in text if ch.isprintable()).strip()

    async def _send(self, session: _Session, text: str) -> None:
        session.writer.write(text.encode("utf-8") + b"\r\n")
        try:
            await asyncio.wait_for(session.writer.drain(), self.drain_timeout)
        except TimeoutError:
            raise _Close("slow_reader") from None

    async def _sweep(self) -> None:
        """Prune connections restored from Redis without a socket here once they go idle."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            keep = {s.client.handle for s in self._sessions.values() if s.client.handle is not None}
            try:
                pruned = await self._run(
                    self.service.prune_idle, idle_timeout=self.idle_timeout, keep=keep
                )
                if pruned:
                    log.info("pruned %d idle connections without a socket here", pruned)
            except StoreUnavailable:
                log.warning("idle sweep skipped: connection store unavailable")

    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


_CLOSE_MESSAGES = {
    "idle": "You have been idle too long. Goodbye.",
    "line_too_long": "Line too long. Goodbye.",
    "failed_logins": "Too many failed logins. Goodbye.",
    "address_locked": "Too many failed logins from your address. Goodbye.",
}


class GatewayThread:
    """Runs a gateway on its own event loop in a background thread (tests, embedding)."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gateway-loop", daemon=True)

    def start(self, timeout: float = 10.0) -> "GatewayThread":
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError(f"gateway did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._stop = asyncio.Event()
            self.loop.run_until_complete(self.gateway.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_until_complete(self._stop.wait())
            self.loop.run_until_complete(self.gateway.shutdown())
        finally:
            self.loop.close()
