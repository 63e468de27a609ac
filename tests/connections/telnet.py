"""A tiny asyncio telnet-style client for the gateway tests."""

import asyncio
import socket

from tests.connections.factories import PASSWORD

BANNER_END = b'"quit" to leave.\r\n'
WHO_END = b"players logged in.\r\n"


async def read_until(reader, marker: bytes, timeout: float = 15.0) -> str:
    return (await asyncio.wait_for(reader.readuntil(marker), timeout)).decode()


async def open_client(port: int, *, rcvbuf: int | None = None):
    if rcvbuf is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
    await read_until(reader, BANNER_END)
    return reader, writer


async def ask(reader, writer, line: str, marker: bytes) -> str:
    writer.write(line.encode() + b"\r\n")
    await writer.drain()
    return await read_until(reader, marker)


async def read_to_eof(reader, timeout: float = 10.0) -> str:
    return (await asyncio.wait_for(reader.read(), timeout)).decode(errors="replace")


async def login(port: int, username: str):
    reader, writer = await open_client(port)
    reply = await ask(reader, writer, f"connect {username} {PASSWORD}", b"\r\n")
    assert reply.startswith("Connected as"), reply
    return reader, writer
