"""The HTTP port's socket: its connections send without Nagle's algorithm, on either loop.

With Nagle on, a response's body (written after its headers) waited for the client's
delayed ACK of the headers: a Connect call took 48 ms instead of 5.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from service.api.event_loop import new_event_loop
from service.api.http.server import listening_socket

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "service": new_event_loop,  # uvloop's where installed
}


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("loop", LOOPS)
def test_connections_the_event_loop_accepts_have_tcp_nodelay(loop: str) -> None:
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    accepted: list[bool] = []

    async def main() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(_nodelay(writer.get_extra_info("socket")))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(reader.read(), timeout=5)  # the server closes it
            writer.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())
    assert accepted == [True]


def test_a_plainly_accepted_connection_inherits_tcp_nodelay() -> None:
    with listening_socket("127.0.0.1", 0) as sock:
        sock.listen()
        with socket.create_connection(sock.getsockname(), timeout=5):
            conn, _ = sock.accept()
            with conn:
                assert _nodelay(conn)
