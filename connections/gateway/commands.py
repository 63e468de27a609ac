"""The gateway's line commands: the interpreter of one client's lines.

    connect <username> <password>   log in: binds this connection to the account's player
    who                             players online with their idle time
    help                            the commands
    quit                            close the connection

The interpreter knows the protocol and nothing of sockets: it takes a line and answers with
what to send and whether to close. Player authentication is injected — a callable
`(username, password) -> (player id, player name) | None`, passed in by `run_gateway` — so the
gateway does not import the game.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


@dataclass
class Client:
    """What the interpreter remembers about one client between its lines."""

    handle: int | None = None
    player_name: str | None = None
    failed_logins: int = 0


@dataclass(frozen=True)
class Reply:
    """`text` to send (None: nothing); `close`: None to keep serving, `QUIT` after a goodbye,
    or the reason the server drops the client (counted, with its own farewell)."""

    text: str | None = None
    close: str | None = None


class CommandInterpreter:
    def __init__(
        self, service: ConnectionService, *, authenticate: Authenticate, run_blocking: RunBlocking
    ):
        self.service = service
        self.authenticate = authenticate
        self.run_blocking = run_blocking

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
        found = await self.run_blocking(self.authenticate, username[:150], password[:128])
        if found is None:
            client.failed_logins += 1
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
