"""The Invoker: calls user callbacks with error isolation, timing and per-topic stats."""

from __future__ import annotations

import logging
import math
import threading
from array import array
from time import monotonic, perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence

from sixmm.config import DEFAULT_SLOW_CALLBACK
from sixmm.errors import CallbackError

__all__ = ["Callback", "Invoker"]

logger = logging.getLogger(__name__)

Callback = Callable[[Any], Any]

_RING = 1024  # recent call durations kept per topic (power of two)
_MASK = _RING - 1
_SLOW_WARN_EVERY = 5.0  # seconds between slow-callback warnings per topic
_ERROR_LOG_EVERY = 5.0  # seconds between logged tracebacks per topic and exception type


class _TopicStats:
    __slots__ = ("calls", "errors", "logged", "max", "ring", "slow", "unwarned", "warned_at")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.slow = 0
        self.max = 0.0
        # a C array of doubles: 8 KiB per topic, no float object per stored duration
        self.ring = array("d", bytes(8 * _RING))
        self.warned_at = -math.inf
        self.unwarned = 0
        # exception type -> [when its traceback was last logged, errors not logged since]
        self.logged: Optional[Dict[type, List[float]]] = None


def _percentile(sorted_values: List[float], p: float) -> float:
    n = len(sorted_values)
    return sorted_values[max(0, min(n - 1, math.ceil(p * n) - 1))]


class Invoker:
    """Calls user callbacks with error isolation, timing and per-topic statistics.

    A callback that raises ``Exception`` is counted and passed to ``on_error`` as
    :class:`~sixmm.errors.CallbackError` (original as ``__cause__``) every time, and logged
    with its traceback (``logger.exception``, with the topic) at most every 5 s per topic and
    exception type, the next log line saying how many were not logged; the caller goes on.
    ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``) propagates. A call slower than
    ``slow_callback`` seconds is counted and logged at WARNING (at most every 5 s per topic).
    Every call's duration goes into a ring of the last 1024 per topic; percentiles are computed
    only in :meth:`stats`.

    Thread-safety: safe. Statistics are updated without a lock (the hot path cannot afford
    one); they are exact when each topic is invoked from one thread at a time (the normal case:
    a topic belongs to one connection) and may lose an increment otherwise -- never more.
    """

    def __init__(
        self,
        on_error: Optional[Callable[[BaseException], None]] = None,
        *,
        slow_callback: float = DEFAULT_SLOW_CALLBACK,
    ) -> None:
        if not slow_callback > 0:
            raise ValueError("slow_callback must be > 0 seconds")
        self._on_error = on_error
        self._slow = float(slow_callback)
        self._topics: Dict[str, _TopicStats] = {}
        self._lock = threading.Lock()  # guards creating topic entries

    @property
    def slow_callback(self) -> float:
        """The time budget of one callback call, in seconds."""
        return self._slow

    def _topic(self, topic: str) -> _TopicStats:
        with self._lock:
            st = self._topics.get(topic)
            if st is None:
                st = self._topics[topic] = _TopicStats()
            return st

    def forget(self, topic: str) -> None:
        """Drop the statistics of ``topic`` (its last callback went away)."""
        with self._lock:
            self._topics.pop(topic, None)

    def invoke(self, topic: str, callback: Callback, arg: Any) -> None:
        """Call ``callback(arg)``; never raises ``Exception``."""
        self.invoke_all(topic, (callback,), arg)

    def invoke_all(self, topic: str, callbacks: Sequence[Callback], arg: Any) -> None:
        """Call every callback of ``topic`` with ``arg``, in order; same semantics as
        :meth:`invoke` for each (the dispatchers' fast path: one Python call per message)."""
        st = self._topics.get(topic)
        if st is None:
            st = self._topic(topic)
        slow = self._slow
        for callback in callbacks:
            t0 = perf_counter()
            try:
                callback(arg)
            except Exception as exc:
                self._raised(topic, st, exc, perf_counter() - t0)
                continue
            dt = perf_counter() - t0
            n = st.calls + 1
            st.calls = n
            st.ring[n & _MASK] = dt
            if dt > st.max:
                st.max = dt
            if dt >= slow:
                self._slow_call(topic, st, dt)

    def _inline_submit(
        self, running: List[bool], ignore: Callable[[str], None]
    ) -> Callable[..., None]:
        """An ``InlineDispatcher.submit`` with :meth:`invoke_all` inlined and every lookup in a
        closure cell: one Python call per message instead of two (~40 ns saved). Keep the loop
        identical to :meth:`invoke_all`."""
        topics = self._topics
        new_topic = self._topic
        raised = self._raised
        slow_call = self._slow_call
        slow = self._slow
        clock = perf_counter

        def submit(
            lane: str, topic: str, callbacks: Sequence[Callback], arg: Any, conflate: bool = False
        ) -> None:
            if not running[0]:
                ignore(topic)
                return
            st = topics.get(topic)
            if st is None:
                st = new_topic(topic)
            for callback in callbacks:
                t0 = clock()
                try:
                    callback(arg)
                except Exception as exc:
                    raised(topic, st, exc, clock() - t0)
                    continue
                dt = clock() - t0
                n = st.calls + 1
                st.calls = n
                st.ring[n & _MASK] = dt
                if dt > st.max:
                    st.max = dt
                if dt >= slow:
                    slow_call(topic, st, dt)

        return submit

    def _raised(self, topic: str, st: _TopicStats, exc: Exception, dt: float) -> None:
        n = st.calls + 1
        st.calls = n
        st.ring[n & _MASK] = dt
        if dt > st.max:
            st.max = dt
        st.errors += 1
        if dt >= self._slow:
            self._slow_call(topic, st, dt)
        self._log_error(topic, st, exc)
        self.report(CallbackError(topic, exc))

    @staticmethod
    def _log_error(topic: str, st: _TopicStats, exc: Exception) -> None:
        # A callback that raises on every message must not flood the log with tracebacks.
        logged = st.logged
        if logged is None:
            logged = st.logged = {}
        now = monotonic()
        entry = logged.get(type(exc))
        if entry is None:
            entry = logged[type(exc)] = [-math.inf, 0.0]
        if now - entry[0] < _ERROR_LOG_EVERY:
            entry[1] += 1
            return
        unlogged = int(entry[1])
        entry[0], entry[1] = now, 0.0
        if unlogged:
            logger.exception(
                "callback for %s raised (%d more %s not logged since the last one)",
                topic,
                unlogged,
                type(exc).__name__,
                exc_info=exc,
            )
        else:
            logger.exception("callback for %s raised", topic, exc_info=exc)

    def _slow_call(self, topic: str, st: _TopicStats, dt: float) -> None:
        st.slow += 1
        st.unwarned += 1
        now = monotonic()
        if now - st.warned_at >= _SLOW_WARN_EVERY:
            logger.warning(
                "slow callback for %s: %.3f s (budget %.3f s); %d slow call(s) since last warning",
                topic,
                dt,
                self._slow,
                st.unwarned,
            )
            st.warned_at = now
            st.unwarned = 0

    def report(self, error: BaseException) -> None:
        """Pass ``error`` to ``on_error`` (logged at DEBUG when there is none). An ``on_error``
        that raises is logged, never propagated."""
        handler = self._on_error
        if handler is None:
            logger.debug("no on_error handler; not reporting %s: %s", type(error).__name__, error)
            return
        try:
            handler(error)
        except Exception:
            logger.exception("on_error handler raised while handling %s", type(error).__name__)

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per topic: ``calls``, ``errors``, ``slow``, ``p50_ms``, ``p99_ms`` (over the last
        1024 calls), ``max_ms`` (ever)."""
        with self._lock:
            entries = list(self._topics.items())
        out: Dict[str, Dict[str, Any]] = {}
        for topic, st in entries:
            calls = st.calls
            ring = st.ring[:]
            recent = sorted(ring if calls >= _RING else ring[1 : calls + 1])
            out[topic] = {
                "calls": calls,
                "errors": st.errors,
                "slow": st.slow,
                "p50_ms": _percentile(recent, 0.50) * 1e3 if recent else 0.0,
                "p99_ms": _percentile(recent, 0.99) * 1e3 if recent else 0.0,
                "max_ms": st.max * 1e3,
            }
        return out
