"""The exception hierarchy of sixmm.

Every exception sixmm raises or reports derives from :class:`SixMMError`; most also derive
from the matching builtin, so ``except ConnectionError`` keeps working in legacy code.
No exception text ever carries a secret, a token or a listenKey.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ApiError",
    "AuthError",
    "CallbackError",
    "ConnectionLost",
    "HandshakeRejected",
    "ProtocolError",
    "QueueOverflow",
    "SixMMError",
    "SubscriptionError",
    "TopicSilent",
]


class SixMMError(Exception):
    """Base class of every sixmm error.

    Thread-safety: plain exception values; safe to pass between threads.
    """


class ApiError(SixMMError):
    """The REST API answered with a non-zero ``code`` or an HTTP error.

    ``code`` is the exchange's business code (``None`` when the body carried none),
    ``http_status`` the HTTP status (``None`` for errors that did not come over HTTP).

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(
        self,
        code: Optional[int],
        message: str,
        request_id: Optional[str] = None,
        http_status: Optional[int] = None,
    ) -> None:
        super().__init__(code, message, request_id, http_status)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        #: seconds from the response's ``Retry-After`` header (``None`` when absent)
        self.retry_after: Optional[float] = None

    def __str__(self) -> str:
        parts = [f"code={self.code}" if self.code is not None else "code=None"]
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.request_id:
            parts.append(f"requestId={self.request_id}")
        return f"{self.message} ({', '.join(parts)})"


class AuthError(ApiError, PermissionError):
    """Credentials were rejected (HTTP 401, codes 1001-1004, or a refused private auth).

    Terminal: sixmm stops retrying and reports state ``LOST``.

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(
        self,
        code: Optional[int] = None,
        message: str = "authentication failed",
        request_id: Optional[str] = None,
        http_status: Optional[int] = None,
    ) -> None:
        super().__init__(code, message, request_id, http_status)


class SubscriptionError(SixMMError, RuntimeError):
    """The server refused a subscription (a ``success: false`` ack) for ``topic``.

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"subscription to {topic!r} failed: {reason}")
        self.topic = topic
        self.reason = reason


class ProtocolError(SixMMError, ValueError):
    """A frame or payload did not follow the 6MM protocol (malformed JSON, wrong types).

    Thread-safety: plain exception values; safe to pass between threads.
    """


class ConnectionLost(SixMMError, ConnectionError):
    """A connection dropped, went silent, or could not be (re)established.

    Thread-safety: plain exception values; safe to pass between threads.
    """


class CallbackError(SixMMError):
    """A user callback raised; the original exception is ``__cause__``.

    ``topic`` names the stream whose callback failed. The stream itself goes on.

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(self, topic: str, error: BaseException) -> None:
        super().__init__(f"callback for {topic!r} raised {type(error).__name__}: {error}")
        self.topic = topic
        self.__cause__ = error


class QueueOverflow(SixMMError, BufferError):
    """A bounded dispatch queue was full and its overflow policy dropped ``dropped`` messages
    of ``topic`` (reported, never silent).

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(self, topic: str, dropped: int, maxsize: int) -> None:
        super().__init__(
            f"dispatch queue full (maxsize={maxsize}): dropped {dropped} message(s) of {topic!r}"
        )
        self.topic = topic
        self.dropped = dropped
        self.maxsize = maxsize


class HandshakeRejected(ConnectionLost):
    """The WebSocket upgrade was answered with an HTTP status instead of ``101``.

    ``status`` is that HTTP status (``None`` when the answer was not HTTP); ``retry_after``
    the seconds of its ``Retry-After`` header (``None`` when absent or not in seconds).
    A ``429``/``418``/``503`` with ``Retry-After`` holds every connect to that host in the
    process for at least that long (:mod:`sixmm.ratelimit`).

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(
        self, message: str, status: Optional[int] = None, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None


class TopicSilent(SixMMError, TimeoutError):
    """``topic`` delivered nothing for ``silent_for`` seconds, past its silence bound
    (``bound``, see :class:`sixmm.Liveness`), while its connection went on receiving frames.

    sixmm resubscribes that one topic (a book is unsynced and rebuilt from a fresh snapshot);
    the connection and its other topics are left alone. ``streak`` counts consecutive
    silences of the topic (from 2 on, each waits longer: per-topic back-off).

    Thread-safety: plain exception values; safe to pass between threads.
    """

    def __init__(self, topic: str, silent_for: float, bound: float, streak: int = 1) -> None:
        super().__init__(
            f"topic {topic!r} silent for {silent_for:.1f}s (bound {bound:g}s): resubscribing"
            + (f" (silence {streak} in a row)" if streak > 1 else "")
        )
        self.topic = topic
        self.silent_for = silent_for
        self.bound = bound
        self.streak = streak
