"""Network-level faults of the sandbox: the ways a socket (not the exchange) misbehaves.

- **half-frame stall**: every open WebSocket gets the header of a text frame, then one payload
  byte per ``interval`` and nothing else (no data, no pongs): the connection looks alive byte
  by byte, but no frame ever completes. After ``seconds`` those sockets are aborted.
- **trickled handshake**: the next upgrades are answered with a ``101`` head sent one byte per
  ``interval`` that never ends, for ``seconds``; then the socket is closed.
- **redirecting upgrade**: the next upgrades are answered ``3xx`` with a ``Location``.

Thread-safety: not thread-safe; runs on the server's event loop (``Sandbox`` marshals calls).
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Awaitable, Callable, List, Optional

from aiohttp import web

if TYPE_CHECKING:
    from .server import Conn, Server

__all__ = ["NetFaults"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_STALLED_FRAME = 1024  # payload length announced by a stalled frame's header


class NetFaults:
    """The pending and running network faults of one sandbox server."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._upgrades: List[Handler] = []
        self._tasks: List[asyncio.Task[None]] = []

    def take_upgrade(self) -> Optional[Handler]:
        """The fault to answer the next upgrade with, if one is pending."""
        return self._upgrades.pop(0) if self._upgrades else None

    def cancel(self) -> None:
        """Stop the running trickles (the server is stopping)."""
        for task in self._tasks:
            task.cancel()
        self._upgrades.clear()

    # -- redirects ------------------------------------------------------------------------

    def redirect_upgrade(self, location: str, status: int = 301, count: int = 1) -> None:
        if not 300 <= status < 400:
            raise ValueError(f"a redirect status is 3xx, not {status}")

        async def answer(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location})

        self._upgrades.extend([answer] * count)

    # -- a 101 that never ends --------------------------------------------------------------

    def trickle_handshake(
        self, count: int = 1, interval: float = 0.2, seconds: float = 60.0
    ) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            transport = request.transport
            head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Trickle: "
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            sent = 0
            while transport is not None and not transport.is_closing() and loop.time() < end:
                transport.write(head[sent : sent + 1] if sent < len(head) else b"z")
                sent += 1
                await asyncio.sleep(interval)
            if transport is not None:
                transport.abort()
            return web.Response(status=500)  # never reaches the client: its socket is gone

        self._upgrades.extend([answer] * count)

    # -- a frame that never completes -------------------------------------------------------

    def stall_half_frame(self, seconds: Optional[float] = None, interval: float = 1.0) -> int:
        """Stall every open WebSocket mid-frame; return how many."""
        stalled: List[Conn] = []
        header = bytes((0x81, 126)) + struct.pack("!H", _STALLED_FRAME)
        for conn in list(self._server.conns.values()):
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            conn.closing = True  # nothing more is queued for it: no data, no pongs
            self._server.forget(conn)
            while not conn.queue.empty():
                conn.queue.get_nowait()
            transport.write(header)
            stalled.append(conn)
        if stalled:
            task = asyncio.get_running_loop().create_task(self._trickle(stalled, seconds, interval))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
        self._server.records.changed()
        return len(stalled)

    async def _trickle(self, conns: List[Conn], seconds: Optional[float], interval: float) -> None:
        loop = asyncio.get_running_loop()
        end = None if seconds is None else loop.time() + seconds
        try:
            for _ in range(_STALLED_FRAME - 1):
                await asyncio.sleep(interval)
                if end is not None and loop.time() >= end:
                    break
                alive = [
                    c for c in conns if c.transport is not None and not c.transport.is_closing()
                ]
                if not alive:
                    return
                for conn in alive:
                    assert conn.transport is not None
                    conn.transport.write(b" ")
        finally:
            for conn in conns:  # the frame can never be completed cleanly
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.abort()
