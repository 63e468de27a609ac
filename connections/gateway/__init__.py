"""The telnet-style gateway: the TCP server (`server`) and its line commands (`commands`)."""

from connections.gateway.commands import Authenticate, CommandInterpreter
from connections.gateway.server import Gateway, GatewayThread

__all__ = ["Authenticate", "CommandInterpreter", "Gateway", "GatewayThread"]
