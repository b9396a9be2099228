"""One process-wide limiter per host for connects and listenKey creations, and ``Retry-After``.

Every :class:`~sixmm.StreamManager` and :class:`~sixmm.RestClient` in the process shares
:func:`limiter`: twenty managers recovering from the same outage queue for the same tokens
instead of stampeding the exchange. Per host (``host:port`` of the URL):

- each *kind* (``"connect"``, ``"listen_key"``) has a token bucket (GCRA): ``burst`` at once,
  then one every ``1 / rate`` seconds (:class:`~sixmm.config.RateLimitPolicy`);
- :meth:`HostLimiter.hold` (a ``429``/``418``/``503`` with ``Retry-After``) makes every
  acquire for that host wait until the hold ends, whatever the kind.

Waits are interruptible: :meth:`HostLimiter.acquire` returns ``False`` as soon as the given
``stop`` event is set. Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from .config import DEFAULT_RATE_LIMIT, RateLimitPolicy
from .protocol.redact import scrub

__all__ = ["RATE_LIMIT_STATUSES", "HostLimiter", "configure", "host_of", "limiter"]

logger = logging.getLogger(__name__)

#: HTTP statuses whose ``Retry-After`` holds the host.
RATE_LIMIT_STATUSES = frozenset({418, 429, 503})
KINDS = ("connect", "listen_key")


def host_of(url: str) -> str:
    """The limiter's key for ``url``: ``host:port`` in lower case (default ports filled in)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    return f"{host}:{port}"


class _Host:
    __slots__ = ("granted", "held_until", "holds", "last_hold", "tat", "waited")

    def __init__(self) -> None:
        self.held_until = 0.0
        self.holds = 0
        self.last_hold = ""
        self.tat: Dict[str, float] = {}
        self.granted: Dict[str, int] = {}
        self.waited: Dict[str, float] = {}


class HostLimiter:
    """Token buckets and ``Retry-After`` holds per host (see the module docstring)."""

    def __init__(
        self,
        policy: RateLimitPolicy = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._hosts: Dict[str, _Host] = {}

    @property
    def policy(self) -> RateLimitPolicy:
        return self._policy

    def set_policy(self, policy: RateLimitPolicy) -> None:
        with self._lock:
            self._policy = policy

    def _rate(self, kind: str) -> Tuple[float, int]:
        p = self._policy
        if kind == "listen_key":
            return p.listen_keys_per_second, p.listen_key_burst
        return p.connects_per_second, p.connect_burst

    def _host(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        return entry

    def acquire(
        self,
        host: str,
        kind: str = "connect",
        stop: Optional[threading.Event] = None,
        timeout: Optional[float] = None,
    ) -> bool:
        """Wait for a ``kind`` token of ``host`` and for any hold on it to end.

        Returns ``False`` (no token taken) when ``stop`` is set or ``timeout`` passes first.
        """
        clock = self._clock
        now = clock()
        deadline = None if timeout is None else now + timeout
        with self._lock:
            entry = self._host(host)
            rate, burst = self._rate(kind)
            interval = 1.0 / rate
            tat = max(entry.tat.get(kind, now), now)
            start = max(now, tat - (burst - 1) * interval)
            if deadline is not None and start > deadline:
                return False
            entry.tat[kind] = tat + interval  # reserved: later callers queue behind us
        first = now
        while True:
            with self._lock:
                ready_at = max(start, entry.held_until)
            now = clock()
            if now >= ready_at:
                break
            if deadline is not None and ready_at > deadline:
                return False
            wait = ready_at - now
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)
        with self._lock:
            entry.granted[kind] = entry.granted.get(kind, 0) + 1
            entry.waited[kind] = entry.waited.get(kind, 0.0) + (clock() - first)
        return True

    def hold(self, host: str, seconds: float, why: str = "") -> float:
        """Hold every acquire for ``host`` for ``seconds`` (capped by the policy's
        ``max_retry_after``); return the seconds actually applied."""
        seconds = min(max(0.0, seconds), self._policy.max_retry_after)
        until = self._clock() + seconds
        with self._lock:
            entry = self._host(host)
            entry.held_until = max(entry.held_until, until)
            entry.holds += 1
            entry.last_hold = scrub(why)[:200]
        logger.warning("rate limited by %s (%s): holding for %.1fs", host, scrub(why), seconds)
        return seconds

    def forget(self, host: str) -> None:
        """Drop every hold and bucket of ``host`` (a fresh start, e.g. between tests)."""
        with self._lock:
            self._hosts.pop(host, None)

    def held_for(self, host: str) -> float:
        """Seconds left of the hold on ``host`` (0 when none)."""
        with self._lock:
            entry = self._hosts.get(host)
            return 0.0 if entry is None else max(0.0, entry.held_until - self._clock())

    def stats(self) -> Dict[str, Any]:
        """Per host: ``held_for`` (s), ``holds``, ``last_hold``, and per kind ``granted`` and
        ``waited_s`` (total seconds callers waited)."""
        now = self._clock()
        out: Dict[str, Any] = {}
        with self._lock:
            for host, e in self._hosts.items():
                out[host] = {
                    "held_for": round(max(0.0, e.held_until - now), 3),
                    "holds": e.holds,
                    "last_hold": e.last_hold,
                    **{f"{k}_granted": e.granted.get(k, 0) for k in KINDS},
                    **{f"{k}_waited_s": round(e.waited.get(k, 0.0), 3) for k in KINDS},
                }
        return out


_LIMITER = HostLimiter()


def limiter() -> HostLimiter:
    """The process-wide limiter."""
    return _LIMITER


def configure(policy: RateLimitPolicy) -> None:
    """Replace the process-wide limits (applies to tokens taken from now on)."""
    _LIMITER.set_policy(policy)


class ConnectGate:
    """What one connection asks of the limiter: a connect token before every attempt, and a
    hold on its host when a handshake is answered ``429``/``418``/``503`` with ``Retry-After``.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, url: str, limits: Optional[HostLimiter] = None) -> None:
        self.host = host_of(url)
        self._limiter = limits if limits is not None else _LIMITER

    def wait(self, stop: threading.Event) -> bool:
        """Block until this connection may attempt a connect; False if ``stop`` was set."""
        return self._limiter.acquire(self.host, "connect", stop)

    def rejected(self, error: BaseException) -> None:
        """Note a failed attempt: a rate-limit refusal with ``Retry-After`` holds the host."""
        status = getattr(error, "status", None)
        retry_after = getattr(error, "retry_after", None)
        if status in RATE_LIMIT_STATUSES and isinstance(retry_after, float):
            self._limiter.hold(self.host, retry_after, f"handshake HTTP {status}")

    def held_for(self) -> float:
        return self._limiter.held_for(self.host)
