"""The sandbox's replay source: serve a sixmm recording over the 6MM protocol.

With ``Sandbox(replay=PATH)`` (``python -m sixmm sandbox --replay FILE``) the simulated market
is off; the pushes the recording received are sent, as recorded, to the clients subscribed to
their topics, and the private pushes to every authenticated private connection. Subscribing,
acks, pings, REST and the listenKey work as in the simulated sandbox. The recording starts
playing when the first client subscribes (or authenticates), at ``speed`` times the recorded
pace (``None``: as fast as the loop can send).

A depth subscriber is caught up on subscribing: it gets the recording's latest snapshot of the
topic and the updates since, then the stream. After a version gap in the recording, new
subscribers wait for the recording's next snapshot (a client would only resubscribe in vain).

Reads the recording format directly (JSON Lines, optionally gzip): independent of the client.

Thread-safety: not thread-safe; runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from typing import IO, TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

if TYPE_CHECKING:
    from .server import Conn, Server

__all__ = ["ReplaySource", "recording_symbols"]

logger = logging.getLogger(__name__)


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _events(path: str) -> Iterator[Dict[str, Any]]:
    """Event lines after the header; stops quietly at a truncated end (a crash)."""
    with _open(path) as f:
        header = json.loads(f.readline() or b"{}")
        if not isinstance(header, dict) or header.get("format") != "sixmm-recording":
            raise ValueError(f"{path}: not a sixmm recording")
        while True:
            try:
                line = f.readline()
            except (EOFError, OSError):
                return
            if not line or not line.endswith(b"\n"):
                return
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                yield ev


def recording_symbols(path: str) -> Tuple[str, ...]:
    """The symbols of the public topics a recording subscribed."""
    symbols: List[str] = []
    for ev in _events(path):
        if ev.get("ev") != "sent":
            continue
        try:
            op = json.loads(ev.get("text", ""))
        except ValueError:
            continue
        if isinstance(op, dict) and op.get("op") == "subscribe":
            for topic in op.get("args") or ():
                parts = str(topic).split(".")
                if len(parts) >= 3 and parts[0] == "market" and parts[2] not in symbols:
                    symbols.append(parts[2])
    return tuple(symbols) or ("BTCUSDT",)


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Depth:
    """What a new subscriber of one depth topic needs: the latest snapshot and updates since."""

    __slots__ = ("expect_snapshot", "last_end", "since", "snapshot")

    def __init__(self) -> None:
        self.snapshot: Optional[str] = None
        self.since: List[str] = []
        self.last_end: Optional[int] = None
        self.expect_snapshot = False

    def add(self, text: str, obj: Dict[str, Any]) -> None:
        data = obj.get("data")
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        snap = kind == "snapshot" or obj.get("event") == "snapshot"
        if kind is None and obj.get("event") != "snapshot" and self.expect_snapshot:
            snap = True
        self.expect_snapshot = False
        end = _int(data.get("endVersion"))
        if snap:
            self.snapshot, self.since, self.last_end = text, [], end
            return
        if self.snapshot is None:
            return
        start = _int(data.get("startVersion"))
        prev = _int(data.get("prevEndVersion", data.get("lastEndVersion")))
        last = self.last_end
        if end is not None and last is not None and end <= last:
            return  # stale: a catching-up client would drop it anyway
        if last is not None and (
            (prev is not None and prev != last)
            or (prev is None and start is not None and start > last + 1)
        ):
            self.snapshot, self.since, self.last_end = None, [], None  # a gap
            return
        self.since.append(text)
        self.last_end = end


class ReplaySource:
    """Feeds a recording's pushes to the sandbox's subscribers (one asyncio task)."""

    def __init__(self, server: Server, path: str, speed: Optional[float] = 1.0) -> None:
        self.server = server
        self.path = path
        self.speed = speed
        self.sent = 0
        self.finished = False
        self._go = asyncio.Event()
        self._depth: Dict[str, _Depth] = {}

    def client_arrived(self) -> None:
        """A client subscribed or authenticated: start playing (idempotent)."""
        self._go.set()

    def catch_up(self, conn: Conn, topic: str) -> None:
        """Send a new depth subscriber the latest snapshot and the updates since."""
        state = self._depth.get(topic)
        if state is None or state.snapshot is None:
            return
        conn.send(state.snapshot)
        for text in state.since:
            conn.send(text)

    async def run(self) -> None:
        await self._go.wait()
        wall0 = time.monotonic()
        mono0: Optional[float] = None
        n = 0
        try:
            for ev in _events(self.path):
                if ev.get("ev") != "recv" or "text" not in ev:
                    continue
                mono = int(ev.get("us", 0)) / 1e6
                if mono0 is None:
                    mono0 = mono
                if self.speed is not None:
                    delay = (mono - mono0) / self.speed - (time.monotonic() - wall0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    n += 1
                    if n % 200 == 0:
                        await asyncio.sleep(0)
                self._feed(str(ev["text"]))
        except Exception:
            logger.exception("sandbox replay of %s failed", self.path)
        finally:
            self.finished = True
            self.server.records.changed()

    def _feed(self, text: str) -> None:
        try:
            obj = json.loads(text)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        topic = obj.get("topic")
        if not isinstance(topic, str):
            if obj.get("event") == "subscribe" and obj.get("success") is True:
                for t in obj.get("data") or ():
                    if isinstance(t, str) and t.startswith("market.depth."):
                        self._depth.setdefault(t, _Depth()).expect_snapshot = True
            return  # acks, pongs, auth: the sandbox answers its own clients
        server = self.server
        if topic.startswith("user."):
            for conn in list(server.conns.values()):
                if conn.kind == "private":
                    conn.send(text)
            self.sent += 1
            return
        if topic.startswith("market.depth."):
            self._depth.setdefault(topic, _Depth()).add(text, obj)
        subs = server.subs.get(topic)
        if subs:
            for conn in list(subs.values()):
                conn.send(text)
            self.sent += 1
