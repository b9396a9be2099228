"""Policy values and defaults: every tunable number of sixmm lives here."""

from __future__ import annotations

import random
from typing import Callable, Optional

import attrs

__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LISTEN_KEY_RENEW_INTERVAL",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_TOPICS_PER_CONNECTION",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_REST_TIMEOUT",
    "DEFAULT_REST_URL",
    "DEFAULT_SLOW_CALLBACK",
    "DEFAULT_STABLE_AFTER",
    "DEFAULT_STALE_AFTER",
    "DEFAULT_WS_URL",
    "Backoff",
    "RateLimitPolicy",
    "ReportPacing",
]

DEFAULT_WS_URL = "wss://6mm.com/ws"
DEFAULT_REST_URL = "https://api.6mm.com"
DEFAULT_MAX_TOPICS_PER_CONNECTION = 100
#: Frames larger than this are rejected as malformed (a depth snapshot of 5,000 levels per
#: side is ~250 KB; 16 MiB leaves room without letting one frame exhaust memory).
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
#: JSON nesting deeper than this is rejected as malformed (6MM payloads nest 4 levels).
DEFAULT_MAX_JSON_DEPTH = 32
DEFAULT_PING_INTERVAL = 15.0
DEFAULT_STALE_AFTER = 45.0
DEFAULT_LISTEN_KEY_RENEW_INTERVAL = 1800.0
DEFAULT_REST_TIMEOUT = 10.0
#: Seconds to wait for a subscribe ack (or the private stream's auth ack) before resending.
DEFAULT_ACK_TIMEOUT = 10.0
#: Seconds one whole connect attempt (TCP + TLS + upgrade) may take.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: A socket that lived this long resets the backoff (and re-arms the one immediate retry).
DEFAULT_STABLE_AFTER = 30.0
#: A callback slower than this is logged (once per callback).
DEFAULT_SLOW_CALLBACK = 0.25


def _check_positive(instance: object, attribute: attrs.Attribute, value: float) -> None:  # type: ignore[type-arg]
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class Backoff:
    """Reconnect/retry delays: exponential growth with optional full jitter.

    ``delay(attempt)`` is a pure function of the attempt number (0 for the first retry):
    ``min(maximum, initial * factor ** attempt)``, or a uniform draw between 0 and that cap
    when ``jitter`` is on ("full jitter"). ``max_attempts=None`` retries forever; otherwise
    the caller gives up (state ``LOST``) after that many consecutive failures.
    Change a value with ``attrs.evolve(backoff, maximum=10.0)``.

    Thread-safety: immutable; share freely.
    """

    initial: float = attrs.field(default=0.5, validator=_check_positive)
    maximum: float = attrs.field(default=30.0, validator=_check_positive)
    factor: float = attrs.field(default=2.0, validator=_check_positive)
    jitter: bool = True
    max_attempts: Optional[int] = None

    def cap(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (the delay itself when jitter is off)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        exponent = min(attempt, 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        cap = self.cap(attempt)
        return cap * rand() if self.jitter else cap

    def exhausted(self, attempt: int) -> bool:
        """True when ``attempt`` consecutive failures used up ``max_attempts``."""
        return self.max_attempts is not None and attempt >= self.max_attempts


def _check_non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:  # type: ignore[type-arg]
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _check_at_least_one(instance: object, attribute: attrs.Attribute, value: int) -> None:  # type: ignore[type-arg]
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


@attrs.frozen
class RateLimitPolicy:
    """The process-wide limits of :mod:`sixmm.ratelimit`, per host (``host:port``).

    WebSocket connects and listenKey creations each go through a token bucket per host shared
    by every ``StreamManager`` in the process: ``*_burst`` at once, then one every
    ``1 / *_per_second`` seconds. A handshake or REST call answered ``429``/``418``/``503``
    with ``Retry-After`` holds every connect, listenKey call and keepalive call to that host
    for that long, at most ``max_retry_after`` seconds (a hostile server cannot park the
    client for a day). Change it with ``sixmm.ratelimit.configure(RateLimitPolicy(...))``.

    Thread-safety: immutable; share freely.
    """

    connects_per_second: float = attrs.field(default=10.0, validator=_check_positive)
    connect_burst: int = attrs.field(default=20, validator=_check_at_least_one)
    listen_keys_per_second: float = attrs.field(default=1.0, validator=_check_positive)
    listen_key_burst: int = attrs.field(default=3, validator=_check_at_least_one)
    max_retry_after: float = attrs.field(default=300.0, validator=_check_non_negative)


@attrs.frozen
class ReportPacing:
    """How often a repeated failure reaches ``on_error``: the first one, then whenever its
    reason changes, then every ``every``-th failure in a row (connect failures, fresh
    listenKeys refused on arrival).

    Thread-safety: immutable; share freely.
    """

    every: int = attrs.field(default=10, validator=_check_at_least_one)


DEFAULT_RATE_LIMIT = RateLimitPolicy()
DEFAULT_REPORT_PACING = ReportPacing()
