"""Per-topic liveness: how long each channel may stay quiet, and the pure watch that judges it.

The exchange documents no push cadence, so the default bounds are an [assumed] rule and
deliberately conservative (a false alarm costs one resubscribe; a missed one costs a book
that says ``synced`` while it is frozen):

==================  ==============================  ========================================
channel             default silence bound           why
==================  ==============================  ========================================
``depth``           60 s                            a book's increments flow while anything
                                                    on the book changes; a minute of nothing
                                                    on a listed symbol means a dead feed
``ticker``          60 s                            a rolling 24h summary is pushed on a
                                                    cadence (seconds), whether or not it
                                                    traded
``tickers``         60 s                            the same, for every symbol at once
``kline`` ``{iv}``  the interval + 60 s             a kline is pushed at least when its
                                                    interval closes (1m: 120 s, 1d: 1 d 60 s)
``trade``           none                            an event channel: a quiet market has no
                                                    trades, and that is normal
``user``            none                            private events come only when you trade
unknown channels    none                            sixmm knows nothing of their cadence
==================  ==============================  ========================================

A topic that keeps going silent after being resubscribed is not resubscribed in a loop: the
``n``-th consecutive silence (no steady data since the previous resubscribe) waits
``bound + repeat_backoff.cap(n - 1)`` (60, 120, 240... s more, up to 15 min more by default).

The session checks once a second; a silence is confirmed at two consecutive checks, so it is
reported between ``bound`` and ``bound`` + 2 s after the topic's last message, never before.

Pure: no sockets, threads or clocks; callers pass ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping, Optional

import attrs

from sixmm.config import Backoff

__all__ = [
    "DEFAULT_LIVENESS",
    "KLINE_SECONDS",
    "Liveness",
    "Silence",
    "TopicWatch",
    "check_silence_after",
]

#: Seconds per kline interval (a month counted as 31 days: the longest one).
KLINE_SECONDS: Mapping[str, float] = MappingProxyType(
    {
        "1m": 60.0,
        "5m": 300.0,
        "15m": 900.0,
        "30m": 1800.0,
        "1h": 3600.0,
        "4h": 14400.0,
        "1d": 86400.0,
        "1w": 604800.0,
        "1M": 2678400.0,
    }
)


def _bound(instance: object, attribute: attrs.Attribute, value: Optional[float]) -> None:  # type: ignore[type-arg]
    if value is not None and not (value > 0):
        raise ValueError(f"{attribute.name} must be > 0 or None, got {value!r}")


def _channels(value: Optional[Mapping[str, Optional[float]]]) -> Mapping[str, Optional[float]]:
    items = dict(value or {})
    for name, bound in items.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel names must be non-empty strings, got {name!r}")
        if bound is not None and not (bound > 0):
            raise ValueError(f"bound for channel {name!r} must be > 0 or None, got {bound!r}")
    return MappingProxyType(items)


_REPEAT_BACKOFF = Backoff(initial=60.0, maximum=900.0, factor=2.0, jitter=False)


@attrs.frozen(slots=True)
class Liveness:
    """How long each channel may stay silent before its topic is resubscribed.

    Each bound is in seconds; ``None`` means "never judged silent". ``kline_grace`` is added
    to the kline interval (``None``: klines are never judged). ``channels`` overrides the
    bound of any channel by its wire name, including channels sixmm has no model for
    (``{"funding": 600.0}``). ``repeat_backoff`` spaces the resubscribes of a topic that keeps
    going silent. Per subscription, ``silence_after=`` on ``subscribe``/``ticker``/``depth``/
    ``order_book``... overrides all of this for one topic (``math.inf``: never).
    Change a value with ``attrs.evolve(DEFAULT_LIVENESS, depth=30.0)``.

    Thread-safety: immutable; share freely.
    """

    depth: Optional[float] = attrs.field(default=60.0, validator=_bound)
    ticker: Optional[float] = attrs.field(default=60.0, validator=_bound)
    tickers: Optional[float] = attrs.field(default=60.0, validator=_bound)
    kline_grace: Optional[float] = attrs.field(default=60.0, validator=_bound)
    trade: Optional[float] = attrs.field(default=None, validator=_bound)
    unknown: Optional[float] = attrs.field(default=None, validator=_bound)
    channels: Mapping[str, Optional[float]] = attrs.field(
        factory=dict, converter=_channels, eq=False, hash=False
    )
    repeat_backoff: Backoff = attrs.field(factory=lambda: _REPEAT_BACKOFF)

    def bound(self, topic: str) -> Optional[float]:
        """The silence bound of a public ``topic`` (its wire name), or ``None``."""
        parts = topic.split(".")
        channel = parts[1] if len(parts) > 1 and parts[0] == "market" else None
        if channel is not None and channel in self.channels:
            return self.channels[channel]
        if channel == "depth":
            return self.depth
        if channel == "ticker":
            return self.ticker
        if channel == "tickers":
            return self.tickers
        if channel == "trade":
            return self.trade
        if channel == "kline":
            seconds = KLINE_SECONDS.get(parts[-1]) if len(parts) == 4 else None
            if seconds is None or self.kline_grace is None:
                return None
            return seconds + self.kline_grace
        return self.unknown


DEFAULT_LIVENESS = Liveness()
"""The defaults above (conservative, [assumed])."""


def check_silence_after(value: Optional[float]) -> Optional[float]:
    """Validate a per-subscription ``silence_after``: ``None`` (the policy's), > 0, or inf."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"silence_after must be a number of seconds or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"silence_after must be > 0 (math.inf: never), got {value!r}")
    return float(value)


@attrs.frozen(slots=True)
class Silence:
    """A topic was silent for ``silent_for`` seconds, past its ``bound`` (plus the back-off
    of its ``streak``-th consecutive silence, ``waited`` in all).

    Thread-safety: immutable; share freely.
    """

    topic: str
    silent_for: float
    bound: float
    waited: float
    streak: int


class TopicWatch:
    """The liveness state of one topic, fed the topic's message count and ``now`` once a tick.

    ``arm(now, count)`` when the server accepted the subscription; ``disarm()`` while it is
    not (connection closed, resubscribe in flight). ``check(...)`` returns a :class:`Silence`
    when the topic delivered nothing for longer than its bound (plus back-off) while the
    connection received frames after the topic's last data, at two consecutive checks (so a
    stall that delays everything is not taken for one dead topic); the caller resubscribes
    and re-arms on the next ack. Messages are counted, not timed, so the reader's per-message
    path costs nothing: ``last_seen`` is the first tick that saw the count move, never earlier
    than the real last message, so a silence is never reported early.

    Thread-safety: not thread-safe; the session calls it under its lock.
    """

    __slots__ = (
        "armed",
        "bound",
        "last_count",
        "last_seen",
        "silences",
        "since_arm",
        "streak",
        "suspect",
        "topic",
    )

    def __init__(self, topic: str, bound: Optional[float]) -> None:
        self.topic = topic
        self.bound = None if bound is None or math.isinf(bound) else float(bound)
        self.armed = False
        self.last_count = 0
        self.last_seen = 0.0
        self.since_arm = 0  # messages since arming (a resubscribe's first: maybe its snapshot)
        self.streak = 0  # consecutive silences without steady data in between
        self.silences = 0
        self.suspect = False  # past the bound at the previous check: confirm at this one

    def arm(self, now: float, count: int) -> None:
        """Start (or restart) judging from ``now``."""
        self.armed = True
        self.last_count = count
        self.last_seen = now
        self.since_arm = 0
        self.suspect = False

    def disarm(self) -> None:
        self.armed = False
        self.suspect = False

    def deadline(self, backoff: Backoff) -> Optional[float]:
        """Seconds of silence allowed now (the bound plus the current streak's back-off)."""
        if self.bound is None:
            return None
        extra = backoff.cap(self.streak - 1) if self.streak > 0 else 0.0
        return self.bound + extra

    def check(self, now: float, count: int, last_rx: float, backoff: Backoff) -> Optional[Silence]:
        """Judge the topic at ``now``; ``count`` is its message count, ``last_rx`` when the
        connection last received a frame (same clock)."""
        if not self.armed:
            return None
        if count != self.last_count:
            self.suspect = False
            self.since_arm += count - self.last_count
            self.last_count = count
            self.last_seen = now
            if self.since_arm >= 2:  # steady data again, not just the answer to a resubscribe
                self.streak = 0
            return None
        allowed = self.deadline(backoff)
        if allowed is None:
            return None
        silent_for = now - self.last_seen
        if silent_for <= allowed or last_rx <= self.last_seen:
            self.suspect = False
            return None  # within bound, or the whole connection is quiet (its own check)
        if not self.suspect:
            # Confirm on the next check: a server (or reader) that stalled past the bound
            # delivers a pong a moment before the topic's data; one tick later it is there.
            self.suspect = True
            return None
        assert self.bound is not None
        self.streak += 1
        self.silences += 1
        self.armed = False  # re-armed when the resubscribe is acknowledged
        return Silence(self.topic, silent_for, self.bound, allowed, self.streak)

    def stats(self, now: float) -> Mapping[str, Any]:
        return {
            "silence_bound": self.bound,
            "silences": self.silences,
            "silence_streak": self.streak,
            "quiet_for": round(now - self.last_seen, 3) if self.armed else None,
        }
