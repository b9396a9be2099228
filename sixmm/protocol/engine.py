"""What the session engines say, and the parts the public and private engines share.

An engine (:class:`~sixmm.protocol.public_engine.PublicEngine`,
:class:`~sixmm.protocol.user_engine.UserEngine`) is fed what happened -- ``opened(now)``, one
inbound message ``receive(payload, now)``, ``closed(reason, now)``, ``tick(now)`` -- and answers
with *actions*, appended in order to its ``actions`` list, which the shell drains after every
call (:meth:`EngineBase.take`). Data deliveries are the one exception: on the hot path they go
straight to the ``deliver`` sink (a dispatcher's ``submit``), one call per item, because a list
per frame would cost more than the frame's own parsing. ``next_deadline()`` says when the engine
next needs a ``tick`` (``None``: nothing pending).

Pure: no threads, sockets or clocks. ``now`` is monotonic seconds; wall time (for gap windows
and lag) is ``now + wall_offset``, an offset the shell sets. The engines are not thread-safe:
their shell calls them from one thread at a time (it holds a lock).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Dict, FrozenSet, List, Optional

import attrs

__all__ = [
    "Close",
    "Deliver",
    "EngineBase",
    "Fail",
    "Gap",
    "KeyAccepted",
    "KeyRejected",
    "Ready",
    "Refused",
    "Report",
    "Restart",
    "Send",
    "Streaming",
    "TopicNotice",
    "check_state",
]

#: ``deliver(lane, topic, callbacks, item, conflate)``: the dispatcher's ``submit``.
Deliver = Callable[[str, str, Any, Any, bool], None]


@attrs.frozen(slots=True)
class Send:
    """Send this text frame (a subscribe, unsubscribe or ping request)."""

    text: str


@attrs.frozen(slots=True)
class Report:
    """Tell ``on_error`` (already paced by the engine where a flood is possible)."""

    error: BaseException


@attrs.frozen(slots=True)
class Gap:
    """An outage window closed on ``topic`` (Unix ms): tell ``on_gap``."""

    topic: str
    start: int
    end: int


@attrs.frozen(slots=True)
class Ready:
    """The server answered the subscription of ``route`` (accepted, or refused: see
    ``route.error``): wake whoever waits on it."""

    route: Any


@attrs.frozen(slots=True)
class Refused:
    """The server refused ``route``'s subscribe: drop it from the desired set."""

    route: Any


@attrs.frozen(slots=True)
class TopicNotice:
    """Tell ``on_state`` about one topic (it went silent and is being healed)."""

    topic: str
    reason: str


@attrs.frozen(slots=True)
class Streaming:
    """The server accepted this socket (an ack, data, or the auth ack): ``CONNECTED``."""

    reason: str


@attrs.frozen(slots=True)
class Restart:
    """Drop this socket and reconnect (the connection's restart rules apply)."""

    reason: str


@attrs.frozen(slots=True)
class Close:
    """End this socket now, as if the server had closed it (then the usual backoff)."""

    reason: str


@attrs.frozen(slots=True)
class Fail:
    """Stop the connection for good with this terminal error."""

    error: BaseException


@attrs.frozen(slots=True)
class KeyRejected:
    """The private stream refused its listenKey (or closed before auth): check it over REST."""

    reason: str


@attrs.frozen(slots=True)
class KeyAccepted:
    """The private stream authenticated with the current listenKey."""


class StateError(RuntimeError):
    """An engine was asked to make a transition its table forbids (a bug in the shell)."""


def check_state(table: Dict[Any, FrozenSet[Any]], old: Any, new: Any) -> None:
    """Raise :class:`StateError` unless ``old -> new`` is in ``table``."""
    if new not in table.get(old, frozenset()):
        raise StateError(f"illegal session transition {old.name} -> {new.name}")


class SocketState(enum.Enum):
    """Where an engine's socket is, as the engine sees it."""

    CLOSED = "closed"  # no socket (before the first, or between two)
    OPEN = "open"  # open, not yet accepted (subscribes or auth pending)
    STREAMING = "streaming"  # accepted: acks, data or the auth ack seen


_REPORTS_PER_SECOND = 5


class EngineBase:
    """Actions, paced reports and the socket state shared by both engines."""

    #: socket state -> the states it may move to
    TRANSITIONS: Dict[SocketState, FrozenSet[SocketState]] = {
        SocketState.CLOSED: frozenset({SocketState.OPEN, SocketState.CLOSED}),
        SocketState.OPEN: frozenset({SocketState.STREAMING, SocketState.CLOSED}),
        SocketState.STREAMING: frozenset({SocketState.CLOSED}),
    }

    def __init__(self, deliver: Deliver, lane: str, wall_offset: float) -> None:
        self.actions: List[Any] = []
        self.deliver = deliver
        self.lane = lane
        self.wall_offset = wall_offset
        self.state = SocketState.CLOSED
        self._report_window = (float("-inf"), 0)

    def take(self) -> List[Any]:
        """The actions produced since the last call, in order (and forget them)."""
        actions, self.actions = self.actions, []
        return actions

    def wall_ms(self, now: float) -> int:
        """Unix milliseconds at monotonic ``now``."""
        return int((now + self.wall_offset) * 1000)

    def _move(self, new: SocketState) -> None:
        check_state(self.TRANSITIONS, self.state, new)
        self.state = new

    def _streaming(self, reason: str) -> None:
        if self.state is SocketState.OPEN:
            self._move(SocketState.STREAMING)
            self.actions.append(Streaming(reason))

    def _report(self, error: BaseException, now: float) -> None:
        """Report to ``on_error``, at most a few per second (the rest are only counted)."""
        start, count = self._report_window
        if now - start >= 1.0:
            start, count = now, 0
        if count < _REPORTS_PER_SECOND:
            self.actions.append(Report(error))
        self._report_window = (start, count + 1)

    @property
    def is_open(self) -> bool:
        return self.state is not SocketState.CLOSED

    def next_deadline(self) -> Optional[float]:  # pragma: no cover - overridden
        raise NotImplementedError
