"""The connection gateway: a line-oriented (telnet-style) asyncio TCP server for game clients.

Protocol (one command per line, UTF-8, CR LF or LF):

    connect <username> <password>   log in: binds this connection to the account's player
    who                             players online with their idle time
    help                            the commands
    quit                            close the connection

Every line refreshes the connection's last signal (a non-critical write). Registering,
binding and disconnecting are critical writes: they run on a small thread pool (they block on
Redis, and `authenticate()` on the database) so the event loop keeps serving other clients.

Defences, so one client cannot hurt the others or grow memory without bound:
- a line longer than CONNECTIONS_MAX_LINE_BYTES closes the connection (the StreamReader limit
  bounds the buffer; asyncio pauses reading past it);
- beyond CONNECTIONS_MAX_CLIENTS a new client is told the server is full and closed;
- every write waits for the socket to drain, at most `drain_timeout` seconds, with a small
  write-buffer high-water mark: a client that never reads is closed instead of buffered;
- a client silent for the idle timeout is closed; three failed logins close the connection;
- bytes that are not UTF-8 or not printable are replaced or dropped, then treated as text.
"""

import asyncio
import contextlib
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import connections

from connections import metrics
from connections.service import ConnectionService
from connections.state import AlreadyBound, StoreUnavailable

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 64 * 1024
MAX_FAILED_LOGINS = 3
BANNER = (
    "Welcome to Nightstorm.\r\n"
    'Type "connect <name> <password>" to log in, "who" to see who is online, "quit" to leave.'
)
HELP = "Commands: connect <name> <password> | who | help | quit"


class _Close(Exception):
    """Stop serving this client (the reason is counted)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    task: asyncio.Task | None
    handle: int | None = None
    player_name: str | None = None
    failed_logins: int = 0
    aborted: bool = False


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def authenticate_player(username: str, password: str) -> tuple[str, str] | None:
    """(player id, player name) for valid credentials of an active account with a player.

    Runs on an executor thread; closes that thread's database connection afterwards so no
    connection outlives the call (logins are rare next to lines).
    """
    from django.contrib.auth import authenticate

    from game.models import Player

    try:
        user = authenticate(username=username, password=password)
        if user is None or not user.is_active:
            return None
        row = Player.objects.filter(user=user).values_list("id", "name").first()
        return (str(row[0]), row[1]) if row else None
    finally:
        connections.close_all()


class Gateway:
    """One listening socket and its clients, all on one event loop."""

    def __init__(
        self,
        service: ConnectionService,
        *,
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
            session.handle = conn.handle
            await self._send(session, BANNER)
            while True:
                line = await self._read_line(reader)
                self.service.touch(session.handle)
                if not await self._command(session, line):
                    break
        except _Close as close:
            metrics.GATEWAY_DROPPED.labels(close.reason).inc()
            session.aborted = close.reason == "slow_reader"
            if not session.aborted:
                with contextlib.suppress(Exception):
                    writer.write(f"{_CLOSE_MESSAGES[close.reason]}\r\n".encode())
        except StoreUnavailable:
            metrics.GATEWAY_DROPPED.labels("store_unavailable").inc()
            with contextlib.suppress(Exception):
                writer.write(b"The game is unavailable right now; try again shortly.\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._sessions.pop(id(session), None)
            metrics.GATEWAY_CLIENTS.set(len(self._sessions))
            if session.aborted:
                writer.transport.abort()  # a client that does not read: discard its buffer
            else:
                writer.close()
            if session.handle is not None:
                try:
                    await self._run(self.service.disconnect, session.handle)
                except StoreUnavailable:
                    log.warning("handle %s left in Redis (store unavailable)", session.handle)

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

    async def _command(self, session: _Session, line: str) -> bool:
        word, _, rest = line.partition(" ")
        word = word.lower()
        if not word:
            return True
        if word == "quit":
            await self._send(session, "Goodbye.")
            return False
        if word == "who":
            await self._send(session, self._who())
        elif word == "help":
            await self._send(session, HELP)
        elif word == "connect":
            await self._connect(session, rest)
        else:
            await self._send(session, 'Huh?  (Type "help" for help.)')
        return True

    async def _connect(self, session: _Session, rest: str) -> None:
        if session.player_name is not None:
            await self._send(session, f"You are already connected as {session.player_name}.")
            return
        username, _, password = rest.strip().partition(" ")
        if not username or not password:
            await self._send(session, "Usage: connect <name> <password>")
            return
        found = await self._run(authenticate_player, username[:150], password[:128])
        if found is None:
            session.failed_logins += 1
            await self._send(
                session, "Either that player does not exist, or has a different password."
            )
            if session.failed_logins >= MAX_FAILED_LOGINS:
                raise _Close("failed_logins")
            return
        player_id, player_name = found
        try:
            await self._run(
                self.service.bind, session.handle, player_id=player_id, player_name=player_name
            )
        except AlreadyBound:
            await self._send(session, "This connection is already bound to another player.")
            return
        except StoreUnavailable:
            # Not logged in (the binding could not be shared); the client may try again.
            await self._send(session, "The game is unavailable right now; try again shortly.")
            return
        session.player_name = player_name
        await self._send(session, f"Connected as {player_name}.")

    def _who(self) -> str:
        now = time.time()
        rows = sorted(
            (c for c in self.service.online() if c.player_name),
            key=lambda c: (c.player_name.lower(), c.handle),
        )
        lines = [f"{'Player Name':<24} {'On For':>7} {'Idle':>5}"]
        lines += [
            f"{c.player_name[:24]:<24} {format_duration(now - c.connected_at):>7} "
            f"{format_duration(c.idle_seconds(now)):>5}"
            for c in rows
        ]
        lines.append(f"{len(rows)} players logged in.")
        return "\r\n".join(lines)

    async def _sweep(self) -> None:
        """Prune connections restored from Redis without a socket here once they go idle."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            keep = {s.handle for s in self._sessions.values() if s.handle is not None}
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
