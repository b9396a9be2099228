"""Connection states: the three users see, and the detailed ones that stay internal.

The internal state machine is a table; :func:`check_transition` is the only judge of it, and an
illegal transition is a bug that raises.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet, Optional

import attrs

__all__ = ["ConnState", "GapEvent", "StateEvent", "StreamState", "check_transition", "public_state"]


class StreamState(str, enum.Enum):
    """What a user needs to know about a connection.

    - ``CONNECTED``: data is flowing; books that report ``synced`` are correct.
    - ``SUSPENDED``: reconnecting; books are not synced, do not trade on them.
    - ``LOST``: stopped, or a terminal failure (rejected credentials, retries exhausted).

    Thread-safety: immutable values; share freely.
    """

    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"
    LOST = "LOST"


class ConnState(enum.Enum):
    """Internal life cycle of one connection."""

    IDLE = "idle"  # created, not started
    CONNECTING = "connecting"  # opening the socket (first time or after a backoff)
    OPEN = "open"  # socket open, subscriptions being (re)sent / auth awaited
    STREAMING = "streaming"  # acks/auth received: data flowing
    BACKOFF = "backoff"  # socket lost, waiting before the next attempt
    CLOSED = "closed"  # stopped for good (stop() or a terminal failure)


_TRANSITIONS: Dict[ConnState, FrozenSet[ConnState]] = {
    ConnState.IDLE: frozenset({ConnState.CONNECTING, ConnState.CLOSED}),
    ConnState.CONNECTING: frozenset({ConnState.OPEN, ConnState.BACKOFF, ConnState.CLOSED}),
    ConnState.OPEN: frozenset({ConnState.STREAMING, ConnState.BACKOFF, ConnState.CLOSED}),
    ConnState.STREAMING: frozenset({ConnState.BACKOFF, ConnState.CLOSED}),
    ConnState.BACKOFF: frozenset({ConnState.CONNECTING, ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}

_PUBLIC: Dict[ConnState, Optional[StreamState]] = {
    ConnState.IDLE: None,
    ConnState.CONNECTING: StreamState.SUSPENDED,
    ConnState.OPEN: StreamState.SUSPENDED,
    ConnState.STREAMING: StreamState.CONNECTED,
    ConnState.BACKOFF: StreamState.SUSPENDED,
    ConnState.CLOSED: StreamState.LOST,
}


def check_transition(current: ConnState, new: ConnState) -> None:
    """Raise ``RuntimeError`` if ``current -> new`` is not in the table."""
    if new not in _TRANSITIONS[current]:
        raise RuntimeError(f"illegal connection state transition {current.name} -> {new.name}")


def public_state(state: ConnState) -> Optional[StreamState]:
    """The user-visible state for an internal one (``None`` before the first connect)."""
    return _PUBLIC[state]


@attrs.frozen
class StateEvent:
    """Passed to ``on_state``: a connection's user-visible state changed.

    ``connection`` is the connection's name (e.g. ``"sixmm-public-0"``, ``"sixmm-user"``);
    ``reason`` says why in words (``"connected"``, ``"dropped: ..."``, ``"stale: no frame for
    45.0s"``, ``"listenKey renewed"``...). ``topic`` is set when the event is about one
    topic rather than the connection: a silent topic resubscribed (``state`` is then the
    connection's unchanged state, ``reason`` the silence, as in ``TopicSilent``).

    Thread-safety: immutable values; share freely.
    """

    state: StreamState
    reason: str
    connection: str
    #: The one topic the event is about (a silent topic being resubscribed), else ``None``.
    topic: Optional[str] = None


@attrs.frozen
class GapEvent:
    """An outage window on ``topic``: messages between ``start`` and ``end`` (Unix ms) may be
    missing. Backfill trades, klines or user events over REST if they matter to you.

    Thread-safety: immutable values; share freely.
    """

    topic: str
    start: int
    end: int
