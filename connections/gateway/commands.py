"""The gateway's line commands: the interpreter of one client's lines.

    connect <username> <password>   log in: binds this connection to the account's player
    who                             players online with their idle time
    help                            the commands
    quit                            close the connection

The interpreter knows the protocol and nothing of sockets: it takes a line and answers with
what to send and whether to close. Failed logins are limited twice: three close the
connection, and `LoginLimiter` refuses an address that failed too often across connections
and gateways (a client cannot just reconnect and keep guessing).

Player authentication is injected — a callable
`(username, password) -> (player id, player name) | None`, passed in by `run_gateway` — so the
gateway does not import the game.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from connections.service import ConnectionService
from connections.state import AlreadyBound, StoreUnavailable, format_duration

Authenticate = Callable[[str, str], tuple[str, str] | None]
# Runs a blocking call (store write, authentication) off the event loop.
RunBlocking = Callable[..., Awaitable]

MAX_FAILED_LOGINS = 3
QUIT = "quit"
BANNER = (
    "Welcome to Nightstorm.\r\n"
    'Type "connect <name> <password>" to log in, "who" to see who is online, "quit" to leave.'
)
HELP = "Commands: connect <name> <password> | who | help | quit"
UNKNOWN = 'Huh?  (Type "help" for help.)'
BAD_LOGIN = "Either that player does not exist, or has a different password."
UNAVAILABLE = "The game is unavailable right now; try again shortly."
ADDRESS_LOCKED = "Too many failed logins from your address; try again later."

log = logging.getLogger(__name__)


class LoginLimiter:
    """Failed logins per remote address, counted in the shared cache (Redis in a deployment),
    so every gateway process counts the same attempts; a fixed window of `window` seconds
    from the first failure. At `limit` failures the address is refused, right password or not,
    until the window ends. A fixed window is a little lenient at its edges, which is fine for
    slowing guessing down. Blocking calls: run them off the event loop."""

    def __init__(self, *, limit: int | None = None, window: int | None = None):
        self.limit = limit or settings.CONNECTIONS_LOGIN_FAILURES_PER_ADDRESS
        self.window = window or settings.CONNECTIONS_LOGIN_WINDOW_SECONDS

    @staticmethod
    def _key(address: str) -> str:
        return f"gateway:login-failures:{address}"

    def blocked(self, address: str) -> bool:
        return (cache.get(self._key(address)) or 0) >= self.limit

    def failed(self, address: str) -> int:
        """Count one failure; the number of failures in the window so far."""
        key = self._key(address)
        cache.add(key, 0, timeout=self.window)
        try:
            return cache.incr(key)
        except ValueError:  # the window ended between the two calls
            cache.add(key, 1, timeout=self.window)
            return 1


@dataclass
class Client:
    """What the interpreter remembers about one client between its lines."""

    handle: int | None = None
    player_name: str | None = None
    failed_logins: int = 0
    remote_addr: str = ""


@dataclass(frozen=True)
class Reply:
    """`text` to send (None: nothing); `close`: None to keep serving, `QUIT` after a goodbye,
    or the reason the server drops the client (counted, with its own farewell)."""

    text: str | None = None
    close: str | None = None


class CommandInterpreter:
    def __init__(
        self,
        service: ConnectionService,
        *,
        authenticate: Authenticate,
        run_blocking: RunBlocking,
        limiter: LoginLimiter | None = None,
    ):
        self.service = service
        self.authenticate = authenticate
        self.run_blocking = run_blocking
        self.limiter = limiter or LoginLimiter()

    async def execute(self, client: Client, line: str) -> Reply:
        word, _, rest = line.partition(" ")
        word = word.lower()
        if not word:
            return Reply()
        if word == "quit":
            return Reply("Goodbye.", close=QUIT)
        if word == "who":
            return Reply(self.who())
        if word == "help":
            return Reply(HELP)
        if word == "connect":
            return await self._connect(client, rest)
        return Reply(UNKNOWN)

    async def _connect(self, client: Client, rest: str) -> Reply:
        if client.player_name is not None:
            return Reply(f"You are already connected as {client.player_name}.")
        username, _, password = rest.strip().partition(" ")
        if not username or not password:
            return Reply("Usage: connect <name> <password>")
        address = client.remote_addr
        try:
            if await self.run_blocking(self.limiter.blocked, address):
                return Reply(ADDRESS_LOCKED, close="address_locked")
            found = await self.run_blocking(self.authenticate, username[:150], password[:128])
            if found is None:
                failures = await self.run_blocking(self.limiter.failed, address)
        except (RedisError, OSError):
            # Without the shared count no login is checked (the binding needs Redis anyway).
            log.warning("login limiter unavailable; refusing the login", exc_info=True)
            return Reply(UNAVAILABLE)
        if found is None:
            client.failed_logins += 1
            if failures >= self.limiter.limit:
                return Reply(BAD_LOGIN, close="address_locked")
            closing = client.failed_logins >= MAX_FAILED_LOGINS
            return Reply(BAD_LOGIN, close="failed_logins" if closing else None)
        player_id, player_name = found
        try:
            await self.run_blocking(
                self.service.bind, client.handle, player_id=player_id, player_name=player_name
            )
        except AlreadyBound:
            return Reply("This connection is already bound to another player.")
        except StoreUnavailable:
            # Not logged in (the binding could not be shared); the client may try again.
            return Reply(UNAVAILABLE)
        client.player_name = player_name
        return Reply(f"Connected as {player_name}.")

    def who(self) -> str:
        """Players online as this gateway sees them (its map: the hot path, no Redis)."""
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
