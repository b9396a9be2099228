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


@attrs.frozen(slots=True)
class Push:
    """A public push: ``{"topic", "event": "data", "ts", "data"}``.

    ``snapshot`` is True when the envelope itself says the payload is a snapshot
    (``"event": "snapshot"``), False otherwise.
    """

    topic: str
    ts: Optional[int]
    data: Any = attrs.field(repr=False)
    snapshot: bool = False
    raw: Dict[str, Any] = attrs.field(default=None, repr=False, eq=False)


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
