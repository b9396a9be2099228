"""A raw WebSocket client for the sandbox tests (websocket-client only, no sixmm code).

No tests here; the ``test_`` prefix only puts the file with the sandbox tests.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional

import websocket


class Closed(websocket.WebSocketConnectionClosedException):
    """The server sent a close frame (``code``, ``reason``)."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"closed by server: {code} {reason}")
        self.code = code
        self.reason = reason


class RawWS:
    """A thin blocking wrapper over ``websocket.create_connection`` with bounded waits."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.frames: List[Any] = []

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def op(self, op: str, req_id: Any, *args: str) -> None:
        self.send({"id": req_id, "op": op, "args": list(args)})

    def recv(self, timeout: float = 5.0) -> Any:
        """The next frame, parsed as JSON when possible (raw text otherwise)."""
        self.ws.settimeout(timeout)
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise Closed(code, data[2:].decode("utf-8", "replace"))
        text = data.decode("utf-8") if opcode == websocket.ABNF.OPCODE_TEXT else data
        try:
            obj = json.loads(text)
        except ValueError:
            obj = text
        self.frames.append(obj)
        return obj

    def recv_until(self, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """Skip frames until one matches ``pred``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no matching frame within timeout")
            try:
                obj = self.recv(remaining)
            except websocket.WebSocketTimeoutException:
                raise AssertionError("no matching frame within timeout") from None
            if pred(obj):
                return obj

    def recv_all(self, quiet: float = 0.2) -> List[Any]:
        """Every frame until none arrives for ``quiet`` seconds."""
        out: List[Any] = []
        while True:
            try:
                out.append(self.recv(quiet))
            except websocket.WebSocketTimeoutException:
                return out

    def recv_through_pong(self, tag: str = "sync", timeout: float = 10.0) -> List[Any]:
        """Every frame the server had queued for us before now: sends a ping op and returns
        the frames received before its pong (the sandbox answers each socket in order).
        Unlike :meth:`recv_all`, no quiet spell has to be guessed, so a loaded machine
        cannot cut the list short."""
        self.op("ping", tag)
        pong = {"id": tag, "event": "pong"}
        out: List[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no pong for {tag!r} within {timeout}s")
            obj = self.recv(remaining)
            if obj == pong:
                return out
            out.append(obj)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


def is_ack(req_id: Any, success: Optional[bool] = None) -> Callable[[Any], bool]:
    def pred(obj: Any) -> bool:
        return (
            isinstance(obj, dict)
            and obj.get("id") == req_id
            and obj.get("event") in ("subscribe", "unsubscribe")
            and (success is None or obj.get("success") is success)
        )

    return pred


def on_topic(topic: str) -> Callable[[Any], bool]:
    return lambda obj: isinstance(obj, dict) and obj.get("topic") == topic


class RawBook:
    """An independent, minimal reimplementation of the PROTOCOL.md §4.1 continuity rules."""

    def __init__(self) -> None:
        self.version: Optional[int] = None
        self.bids: Dict[str, str] = {}
        self.asks: Dict[str, str] = {}
        self.fresh = False

    def apply(self, data: Dict[str, Any]) -> str:
        end = int(data["endVersion"])
        if data.get("type") == "snapshot":
            self.bids = {p: q for p, q in data["bids"]}
            self.asks = {p: q for p, q in data["asks"]}
            self.version, self.fresh = end, True
            return "snapshot"
        assert self.version is not None, "update before snapshot"
        if end <= self.version:
            return "stale"
        start = int(data["startVersion"])
        ok = start <= self.version + 1 <= end if self.fresh else start == self.version + 1
        if not ok:
            return "gap"
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.version, self.fresh = end, False
        return "applied"

    def crossed(self) -> bool:
        if not self.bids or not self.asks:
            return False
        return max(map(Decimal, self.bids)) >= min(map(Decimal, self.asks))
