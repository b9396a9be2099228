"""The bus entry format, version 1: what a bridge writes into a Redis stream (pure code).

One stream per topic, key ``{prefix}:stream:{topic}`` (default prefix ``sixmm``). Every
entry is a flat map of string fields (any Redis client in any language reads it):

========== ==================================================================================
field      meaning
========== ==================================================================================
``v``      format version, ``"1"``
``type``   ``data`` (a push of a non-book topic), ``update`` (a book increment the bridge
           verified), ``snapshot`` (the bridge's whole synced book), ``gap`` (entries or
           exchange data are missing between ``start`` and ``end``), ``unsynced`` (the bridge's
           book stopped being trustworthy: wait for the next snapshot), ``heartbeat`` (the
           bridge is alive; nothing happened)
``topic``  the exchange topic, e.g. ``market.trade.BTCUSDT``
``session`` the publishing bridge's session id (changes on a restart or a failover)
``seq``    per stream and session: 1, 2, 3... with no hole (a hole means lost entries)
``rx``     when the bridge received it (or wrote it), Unix ms
``ts``     the exchange's timestamp, Unix ms, or empty
``data``   JSON. ``data``: the exchange payload as received (one trade object per entry: a
           push carrying a list becomes one entry per trade). ``update``: the increment the
           bridge's book verified and applied, in the exchange's depth shape with its exact
           strings: ``{"type": "update", "startVersion", "endVersion", ["prevEndVersion"],
           "bids": [[price, qty], ...], "asks": [...]}`` (qty ``"0"``: remove the level).
           ``snapshot``: ``{"endVersion": V, "bids": [...], "asks": [...]}``, best first.
           ``gap``/``unsynced``: absent
``version`` books: the book version after the entry (``update``, ``snapshot``, ``unsynced``)
``tid``    trade streams: the highest trade id in the entry (for de-duplication)
``start``/``end`` ``gap``: the window (Unix ms); ``reason``: why; ``lost``: entries lost
========== ==================================================================================

Other keys: ``{prefix}:snap:{topic}`` holds the entry id of a book stream's latest
``snapshot`` (a late consumer starts there); ``{prefix}:lease:{group}`` holds the session id
of the bridge that publishes for ``group`` (``SET NX PX``, renewed; every write is fenced by
it). A bridge writes a ``heartbeat`` on a stream that had no entry for a second.

Prices and quantities are JSON strings as the exchange sent them, never floats. A consumer
checks continuity by ``(session, seq)``; a book is rebuilt from a ``snapshot`` plus the
``update`` entries after it with the exchange's own version rules (PROTOCOL.md §4.1).
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import attrs

from ..errors import ProtocolError

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "Entry",
    "check_public",
    "decode_entry",
    "encode_entry",
    "lease_key",
    "parse_shard",
    "previous_id",
    "shard_of",
    "snapshot_key",
    "stream_key",
]

FORMAT_VERSION = 1
KINDS = ("data", "update", "snapshot", "gap", "unsynced", "heartbeat")
_KIND_SET = frozenset(KINDS)
DEFAULT_PREFIX = "sixmm"


def stream_key(prefix: str, topic: str) -> str:
    """The stream of ``topic``: ``{prefix}:stream:{topic}``."""
    return f"{prefix}:stream:{topic}"


def snapshot_key(prefix: str, topic: str) -> str:
    """A string key holding the entry id of the latest ``snapshot`` of a book's stream."""
    return f"{prefix}:snap:{topic}"


def lease_key(prefix: str, group: str) -> str:
    """The lease that says which bridge of ``group`` publishes (value: its session id)."""
    return f"{prefix}:lease:{group}"


def check_public(topic: str) -> str:
    """``topic`` if it may be published; ValueError for the private user stream."""
    if not isinstance(topic, str) or not topic or topic != topic.strip():
        raise ValueError(f"invalid topic: {topic!r}")
    if topic == "user" or topic.startswith("user.") or "listenKey" in topic:
        raise ValueError("the private user stream is never published to the bus")
    return topic


def shard_of(topic: str, n: int) -> int:
    """The shard (0..n-1) of ``topic``: CRC-32 of its UTF-8 bytes mod ``n`` (stable across
    processes, machines and Python versions, unlike ``hash()``)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return zlib.crc32(topic.encode("utf-8")) % n


def parse_shard(text: str) -> Tuple[int, int]:
    """``"I/N"`` (1-based: ``1/2`` and ``2/2``) -> ``(index 0..N-1, N)``."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 1/2), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard {text!r}: need 1 <= I <= N")
    return i - 1, n


def previous_id(entry_id: str) -> str:
    """The stream id just before ``entry_id`` (``XREAD`` from it returns ``entry_id`` first)."""
    ms_text, _, seq_text = entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text or 0)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"


@attrs.frozen(slots=True)
class Entry:
    """One decoded bus entry (see the module docstring for the fields).

    Thread-safety: immutable; share freely.
    """

    kind: str
    topic: str
    session: str
    seq: int
    rx: int
    ts: Optional[int] = None
    data: Any = None
    version: Optional[int] = None
    tid: Optional[str] = None
    start: Optional[int] = None
    end: Optional[int] = None
    reason: str = ""
    lost: int = 0
    format: int = FORMAT_VERSION


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_no_float)


def _no_float(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_entry(
    kind: str,
    topic: str,
    session: str,
    seq: int,
    rx: int,
    *,
    ts: Optional[int] = None,
    data: Any = None,
    version: Optional[int] = None,
    tid: Optional[str] = None,
    start: Optional[int] = None,
    end: Optional[int] = None,
    reason: str = "",
    lost: int = 0,
) -> Dict[str, str]:
    """The Redis fields of one entry (every value a string)."""
    if kind not in _KIND_SET:
        raise ValueError(f"unknown entry type {kind!r}")
    fields = {
        "v": str(FORMAT_VERSION),
        "type": kind,
        "topic": topic,
        "session": session,
        "seq": str(seq),
        "rx": str(rx),
        "ts": "" if ts is None else str(ts),
    }
    if data is not None:
        fields["data"] = _dumps(data)
    if version is not None:
        fields["version"] = str(version)
    if tid is not None:
        fields["tid"] = tid
    if start is not None:
        fields["start"] = str(start)
    if end is not None:
        fields["end"] = str(end)
    if reason:
        fields["reason"] = reason
    if lost:
        fields["lost"] = str(lost)
    return fields


def _text(value: Union[str, bytes]) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _int(fields: Mapping[str, str], name: str, required: bool = False) -> Optional[int]:
    text = fields.get(name, "")
    if not text:
        if required:
            raise ProtocolError(f"bus entry without {name!r}")
        return None
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"bus entry field {name!r} is not an integer: {text[:40]!r}") from None


_DECODER = json.JSONDecoder(parse_float=Decimal)


def decode_entry(raw: Mapping[Any, Any]) -> Entry:
    """Decode the fields of one entry; :class:`ProtocolError` if malformed or of a newer
    major format. JSON numbers with a fraction become ``Decimal``, never ``float``."""
    g = raw.get
    if g(b"v") == b"1":  # fast path: bytes as redis-py returns them, format 1
        try:
            kind = g(b"type", b"").decode()
            text = g(b"data")
            data = None if text is None else _DECODER.decode(text.decode())
            ts_b = g(b"ts")
            if kind in _KIND_SET:
                return Entry(
                    kind,
                    g(b"topic", b"").decode(),
                    g(b"session", b"").decode(),
                    int(raw[b"seq"]),
                    int(raw[b"rx"]),
                    int(ts_b) if ts_b else None,
                    data,
                    version=int(raw[b"version"]) if b"version" in raw else None,
                    tid=g(b"tid", b"").decode() or None,
                    start=int(raw[b"start"]) if b"start" in raw else None,
                    end=int(raw[b"end"]) if b"end" in raw else None,
                    reason=g(b"reason", b"").decode(),
                    lost=int(raw[b"lost"]) if b"lost" in raw else 0,
                )
        except (KeyError, ValueError, AttributeError):
            pass  # the slow path names the problem
    return _decode_slow(raw)


def _decode_slow(raw: Mapping[Any, Any]) -> Entry:
    try:
        fields = {_text(k): _text(v) for k, v in raw.items()}
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"bus entry is not UTF-8: {exc}") from None
    get = fields.get
    fmt = _int(fields, "v", required=True)
    if fmt != FORMAT_VERSION:
        raise ProtocolError(f"bus entry format {fmt} (this sixmm reads {FORMAT_VERSION})")
    kind = get("type", "")
    if kind not in _KIND_SET:
        raise ProtocolError(f"unknown bus entry type {kind[:40]!r}")
    text = get("data")
    data = None
    if text is not None:
        try:
            data = _DECODER.decode(text)
        except ValueError as exc:
            raise ProtocolError(f"bus entry data is not JSON: {exc}") from None
    return Entry(
        kind,
        get("topic", ""),
        get("session", ""),
        _int(fields, "seq", required=True),  # type: ignore[arg-type]
        _int(fields, "rx", required=True),  # type: ignore[arg-type]
        ts=_int(fields, "ts"),
        data=data,
        version=_int(fields, "version"),
        tid=get("tid") or None,
        start=_int(fields, "start"),
        end=_int(fields, "end"),
        reason=get("reason", ""),
        lost=_int(fields, "lost") or 0,
    )


def snapshot_data(version: int, bids: Mapping[str, str], asks: Mapping[str, str]) -> Dict[str, Any]:
    """The ``data`` of a ``snapshot`` entry: levels best first, exact strings."""
    return {
        "endVersion": version,
        "bids": [[p, bids[p]] for p in sorted(bids, key=Decimal, reverse=True)],
        "asks": [[p, asks[p]] for p in sorted(asks, key=Decimal)],
    }


def max_trade_id(items: Iterable[Any]) -> Optional[str]:
    """The highest numeric ``tradeId`` (or ``id``/``t``) among trade dicts, or None."""
    best: Optional[int] = None
    for item in items:
        if not isinstance(item, dict):
            continue
        value = item.get("tradeId", item.get("id", item.get("t")))
        tid = trade_number(value)
        if tid is not None and (best is None or tid > best):
            best = tid
    return None if best is None else str(best)


def trade_number(value: Any) -> Optional[int]:
    """A trade id as an int when it is a plain non-negative integer numeral, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 30:
        return int(value)
    return None


def as_list(data: Any) -> List[Any]:
    """A trade push's items: the list itself, or the one object in a list."""
    return data if isinstance(data, list) else [data]
