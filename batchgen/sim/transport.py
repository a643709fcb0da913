"""Answers that break HTTP on purpose: a reset, a truncated body.

aiohttp has no way to send a malformed answer, so these write to (or close)
the raw transport and hand aiohttp a response that it will fail to send to a
closed connection, which it handles silently.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from aiohttp import web

JSON_TYPE = "application/json; charset=UTF-8"


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection with a TCP reset and no answer. The returned
    response is never sent: aiohttp sees the closed transport and gives up."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.close()
    return web.Response(status=500)


def truncate_answer(request: web.Request, body: bytes) -> web.Response:
    """Promise the whole body in Content-Length, send half, close."""
    transport = request.transport
    if transport is not None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        transport.write(head + body[: len(body) // 2])
        transport.close()
    return web.Response(status=500)
