"""The heartbeat thread: keeps servers talking and checks deadlines.

Every ``ping_interval`` it sends each open connection an application ``ping`` op and a
websocket ping, so a healthy server always has something to answer; the connections
themselves treat any inbound byte as proof of life and drop a socket silent for
``stale_after``. Once a second it lets each session check its deadlines (unanswered
subscribes, books waiting too long for a snapshot).

Design note: DESIGN.md sketched one supervisor thread that also reconnects. Here each
connection's own thread runs its reconnect loop (kazoo/paho style: one loop with a
``finally``), which keeps a dead socket's owner the only thread that touches it; this thread
only watches and nudges.

Thread-safety: ``start``/``stop`` from any thread; ``stop`` never joins itself.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Iterable

from .config import DEFAULT_PING_INTERVAL
from .connection import Connection
from .threads import OwnedThread

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """Owner of the ``sixmm-heartbeat`` thread."""

    def __init__(
        self,
        connections: Callable[[], Iterable[Connection]],
        send_ping: Callable[[Connection], None],
        *,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connections = connections
        self._send_ping = send_ping
        self._ping_interval = ping_interval
        self._tick = min(tick, ping_interval)
        self._clock = clock
        self._owner = OwnedThread("sixmm-heartbeat", self._run)
        self._stop = self._owner.stopping
        self._last_ping: Dict[str, float] = {}
        self.pings_sent = 0

    def start(self) -> None:
        """Start the thread (idempotent)."""
        self._owner.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join within ``timeout`` (idempotent)."""
        self._owner.stop(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = self._clock()
            for conn in list(self._connections()):
                try:
                    self._visit(conn, now)
                except Exception:
                    logger.exception("heartbeat failed on connection %s", conn.name)

    def _visit(self, conn: Connection, now: float) -> None:
        if not conn.is_open:
            self._last_ping.pop(conn.name, None)
            return
        last = self._last_ping.setdefault(conn.name, now)
        if now - last >= self._ping_interval:
            self._last_ping[conn.name] = now
            self._send_ping(conn)
            conn.ping()
            self.pings_sent += 1
        conn.session.on_tick(conn, now)
