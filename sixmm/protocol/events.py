"""Typed events produced by :func:`sixmm.protocol.frames.decode` — one per inbound frame."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import attrs

__all__ = ["Ack", "AuthResult", "Event", "Malformed", "Pong", "PrivatePush", "Push"]


@attrs.frozen(slots=True)
class Ack:
    """A subscribe/unsubscribe acknowledgement.

    ``op`` is ``"subscribe"`` or ``"unsubscribe"``; ``id`` is the request id as a string
    (``None`` if the server sent none); ``topics`` are the topics this ack speaks for (empty
    when the server named none: then it speaks for every topic of the request).
    """

    id: Optional[str]
    op: str
    success: bool
    topics: Tuple[str, ...]
    message: Optional[str]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)


@attrs.frozen(slots=True)
class Pong:
    """Answer to a ``ping`` op."""

    id: Optional[str]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)


class Push:
    """A public push: ``{"topic", "event": "data", "ts", "data"}``.

    ``snapshot`` is True when the envelope itself says the payload is a snapshot
    (``"event": "snapshot"``), False otherwise. A plain slotted class, not attrs: one is built
    per message, and attrs' frozen ``__init__`` costs three times as much. Treat as immutable.
    """

    __slots__ = ("data", "raw", "snapshot", "topic", "ts")

    def __init__(
        self,
        topic: str,
        ts: Optional[int],
        data: Any,
        snapshot: bool = False,
        raw: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.topic = topic
        self.ts = ts
        self.data = data
        self.snapshot = snapshot
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Push):
            return NotImplemented
        mine = (self.topic, self.ts, self.data, self.snapshot)
        return mine == (other.topic, other.ts, other.data, other.snapshot)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Push(topic={self.topic!r}, ts={self.ts!r}, snapshot={self.snapshot!r})"


@attrs.frozen(slots=True)
class AuthResult:
    """The private channel's auth acknowledgement (``{"event": "auth", ...}``)."""

    success: bool
    user_id: Optional[str]
    message: Optional[str]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)


@attrs.frozen(slots=True)
class PrivatePush:
    """A private push: ``{"topic": "user.<id>", "ts", "data": {"eventType": ...}}``."""

    topic: Optional[str]
    ts: Optional[int]
    event_type: Optional[str]
    data: Any = attrs.field(repr=False)
    raw: Dict[str, Any] = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(slots=True)
class Malformed:
    """A frame that could not be understood. ``text`` is the frame, truncated for logs."""

    reason: str
    text: str


Event = Union[Ack, Pong, Push, AuthResult, PrivatePush, Malformed]
