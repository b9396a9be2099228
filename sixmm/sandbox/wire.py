"""The sandbox's own encoding of the 6MM wire format (deliberately independent of the client).

Topic grammar, JSON frames for acks/pushes, and the depth-message variants selected by
``depth_style``. Pure functions, no I/O.

Thread-safety: stateless functions; safe from any thread.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Dict, List, Optional, Tuple

from .market import INTERVALS, DepthEvent

__all__ = [
    "ACK_STYLES",
    "AUTH_FAILURES",
    "DEPTH_STYLES",
    "MALFORMED_FRAMES",
    "TRADE_STYLES",
    "ack_frame",
    "depth_frame",
    "dumps",
    "push_frame",
    "validate_topic",
]

ACK_STYLES: Tuple[str, ...] = ("doc", "msg_field", "numeric_ids")
TRADE_STYLES: Tuple[str, ...] = ("list", "object")
AUTH_FAILURES: Tuple[str, ...] = ("frame", "close")
DEPTH_STYLES: Tuple[str, ...] = (
    "doc",
    "no_type",
    "string_versions",
    "object_levels",
    "prev_field",
    "unverified",
    "envelope_snapshot",
)


def dumps(obj: Any) -> str:
    """Compact JSON, as the exchange sends it."""
    return json.dumps(obj, separators=(",", ":"))


def validate_topic(topic: Any, symbols: Collection[str]) -> Optional[str]:
    """Return ``None`` if ``topic`` is a valid public topic, else the reason it is not."""
    if not isinstance(topic, str):
        return "topic must be a string"
    parts = topic.split(".")
    if topic == "market.tickers":
        return None
    if parts[0] == "user":
        return "private topics are not subscribable; connect with listenKey or token"
    if len(parts) < 3 or parts[0] != "market":
        return f"invalid topic: {topic}"
    channel, symbol = parts[1], parts[2]
    if channel in ("depth", "trade", "ticker", "funding"):
        if len(parts) != 3:
            return f"invalid topic: {topic}"
    elif channel == "kline":
        if len(parts) != 4:
            return f"invalid topic: {topic}"
        if parts[3] not in INTERVALS:
            return f"invalid interval: {parts[3]}"
    else:
        return f"unknown channel: {channel}"
    if symbol not in symbols:
        return f"unknown symbol: {symbol}"
    return None


def _levels(levels: List[Tuple[str, str]], as_objects: bool) -> List[Any]:
    if as_objects:
        return [{"price": p, "quantity": q} for p, q in levels]
    return [[p, q] for p, q in levels]


def depth_frame(ev: DepthEvent, style: str, ts: int) -> str:
    """The full JSON frame for one depth event in the given ``style``."""
    snapshot = ev.kind == "snapshot"
    data: Dict[str, Any] = {"symbol": ev.symbol}
    if style in ("doc", "string_versions", "object_levels", "prev_field", "unverified"):
        data["type"] = ev.kind
    if snapshot or style not in ("prev_field", "unverified"):
        data["startVersion"] = ev.start
    elif style == "prev_field":
        data["prevEndVersion"] = ev.start - 1
    data["endVersion"] = ev.end
    if style == "string_versions":
        for key in ("startVersion", "endVersion"):
            data[key] = str(data[key])
    as_objects = style == "object_levels"
    data["bids"] = _levels(ev.bids, as_objects)
    data["asks"] = _levels(ev.asks, as_objects)
    event = "snapshot" if (snapshot and style == "envelope_snapshot") else "data"
    return dumps({"topic": f"market.depth.{ev.symbol}", "event": event, "ts": ts, "data": data})


def push_frame(topic: str, ts: int, data: Any) -> str:
    """A public push envelope."""
    return dumps({"topic": topic, "event": "data", "ts": ts, "data": data})


def ack_frame(
    req_id: Any,
    op: str,
    success: bool,
    topics: List[Any],
    message: str = "",
    style: str = "doc",
) -> str:
    """A subscribe/unsubscribe ack; the reason only on failure.

    ``style``: ``"doc"`` (reason in ``message``), ``"msg_field"`` (reason in ``msg``),
    ``"numeric_ids"`` (an all-digit string id comes back as a JSON number).
    """
    if style == "numeric_ids" and isinstance(req_id, str) and req_id.isdigit():
        req_id = int(req_id)
    obj: Dict[str, Any] = {"id": req_id, "event": op, "success": success, "data": topics}
    if not success:
        obj["msg" if style == "msg_field" else "message"] = message
    return dumps(obj)


MALFORMED_FRAMES: Tuple[str, ...] = (
    "{not json",
    "[1, 2, 3]",
    '{"topic": 42, "event": "data", "ts": "x", "data": null}',
    '{"topic": "market.depth.BTCUSDT", "event": "data", "ts": 1, "data": {"bids": "oops"}}',
    '"just a string"',
    '{"id": 7, "event": "subscribe", "success": "maybe"}',
)
"""The default garbage sent by ``Sandbox.send_malformed()``."""
