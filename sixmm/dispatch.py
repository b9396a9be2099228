"""Where user callbacks run: error isolation, timing, and three dispatchers.

:class:`Invoker` calls user callbacks (one ``try/except`` per call, timing, per-topic stats).
A :class:`Dispatcher` decides *where* the invoker runs:

* :class:`InlineDispatcher` -- on the connection's reader thread (fastest; a slow callback
  delays that connection).
* :class:`WorkerDispatcher` -- one worker thread per lane (connection); the reader never runs
  user code; order per lane kept; bounded queue, default overflow policy ``"block"``.
* :class:`QueueDispatcher` -- only on the thread that calls :meth:`QueueDispatcher.drain` (GUIs);
  bounded queue, default overflow policy ``"drop"`` (reported), optional conflation.

Overflow is never silent: every dropped message is counted in ``stats()``, logged (WARNING, at
most once per second per lane) and reported to ``on_error`` as :class:`~sixmm.errors.QueueOverflow`
(at most once per second per lane, one report per topic with the accumulated count), from the
thread that runs callbacks -- the reader thread never runs user code for a queued dispatcher.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from time import monotonic, perf_counter
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from sixmm.errors import CallbackError, QueueOverflow

__all__ = [
    "OVERFLOW_BLOCK",
    "OVERFLOW_DROP",
    "Dispatcher",
    "InlineDispatcher",
    "Invoker",
    "QueueDispatcher",
    "WorkerDispatcher",
]

logger = logging.getLogger(__name__)

Callback = Callable[[Any], Any]

OVERFLOW_BLOCK = "block"
"""Overflow policy: the submitting (reader) thread waits for room -- backpressure."""
OVERFLOW_DROP = "drop"
"""Overflow policy: the new message is dropped, counted, logged and reported."""

_RING = 1024  # recent call durations kept per topic (power of two)
_MASK = _RING - 1
_SLOW_WARN_EVERY = 5.0  # seconds between slow-callback warnings per topic
_REPORT_EVERY = 1.0  # seconds between overflow warnings / reports per lane
_CHUNK = 256  # items a consumer takes per lock acquisition
_IDLE_WAIT = 5.0  # bound on a worker's idle wait (woken explicitly on submit/stop)
_BLOCK_WAIT = 1.0  # bound on one wait of a blocked submitter (re-checks stop)
_REPORT_SLACK = 100  # error reports may exceed maxsize by this much

# put() outcomes
_QUEUED, _CONFLATED, _DROPPED, _IGNORED = range(4)


class _TopicStats:
    __slots__ = ("calls", "errors", "max", "ring", "slow", "unwarned", "warned_at")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.slow = 0
        self.max = 0.0
        self.ring: List[float] = [0.0] * _RING
        self.warned_at = -math.inf
        self.unwarned = 0


def _percentile(sorted_values: List[float], p: float) -> float:
    n = len(sorted_values)
    return sorted_values[max(0, min(n - 1, math.ceil(p * n) - 1))]


class Invoker:
    """Calls user callbacks with error isolation, timing and per-topic statistics.

    A callback that raises ``Exception`` is logged (``logger.exception``, with the topic),
    counted, and passed to ``on_error`` as :class:`~sixmm.errors.CallbackError` (original
    as ``__cause__``); the caller goes on. ``BaseException`` (``KeyboardInterrupt``,
    ``SystemExit``) propagates. A call slower than ``slow_callback`` seconds is counted and
    logged at WARNING (at most every 5 s per topic). Every call's duration goes into a ring of
    the last 1024 per topic; percentiles are computed only in :meth:`stats`.

    Thread-safety: safe. Statistics are updated without a lock (the hot path cannot afford
    one); they are exact when each topic is invoked from one thread at a time (the normal case:
    a topic belongs to one connection) and may lose an increment otherwise -- never more.
    """

    def __init__(
        self,
        on_error: Optional[Callable[[BaseException], None]] = None,
        *,
        slow_callback: float = 0.25,
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

    def invoke(self, topic: str, callback: Callback, arg: Any) -> None:
        """Call ``callback(arg)``; never raises ``Exception``."""
        st = self._topics.get(topic)
        if st is None:
            st = self._topic(topic)
        t0 = perf_counter()
        try:
            callback(arg)
        except Exception as exc:
            self._raised(topic, st, exc, perf_counter() - t0)
            return
        dt = perf_counter() - t0
        n = st.calls + 1
        st.calls = n
        st.ring[n & _MASK] = dt
        if dt > st.max:
            st.max = dt
        if dt >= self._slow:
            self._slow_call(topic, st, dt)

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

    def _raised(self, topic: str, st: _TopicStats, exc: Exception, dt: float) -> None:
        n = st.calls + 1
        st.calls = n
        st.ring[n & _MASK] = dt
        if dt > st.max:
            st.max = dt
        st.errors += 1
        if dt >= self._slow:
            self._slow_call(topic, st, dt)
        logger.exception("callback for %s raised", topic, exc_info=exc)
        self.report(CallbackError(topic, exc))

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


class Dispatcher:
    """Decides where callbacks run (base class; see the three implementations).

    Lifecycle: ``start(invoker)`` (idempotent) -> ``submit(...)`` from reader threads ->
    ``stop(timeout)`` (idempotent, safe from inside a callback; a stopped dispatcher cannot be
    restarted). Before ``start`` and after ``stop``, ``submit`` ignores the message (counted as
    ``ignored`` in stats, logged once at DEBUG).

    Thread-safety: safe; ``submit`` and ``report`` may be called from any number of threads.
    """

    kind = "base"

    def __init__(self) -> None:
        self._invoker: Optional[Invoker] = None
        self._state_lock = threading.Lock()
        self._running = False
        self._stopped = False
        self._ignored = 0

    def start(self, invoker: Invoker) -> None:
        """Start running callbacks through ``invoker``; a second call does nothing."""
        with self._state_lock:
            if self._stopped:
                raise RuntimeError("a stopped dispatcher cannot be restarted; create a new one")
            if self._running:
                return
            self._invoker = invoker
            self._running = True
            self._started()

    def _started(self) -> None:
        """Hook, called under the state lock when the dispatcher starts."""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting messages; see the subclass for what happens to queued ones."""
        with self._state_lock:
            self._running = False
            self._stopped = True

    def submit(
        self,
        lane: str,
        topic: str,
        callbacks: Sequence[Callback],
        arg: Any,
        conflate: bool = False,
    ) -> None:
        """Run every callback in ``callbacks`` with ``arg`` (order kept within ``lane``).

        ``conflate=True`` marks a state-like message (ticker, book update): a newer one for the
        same ``(lane, topic)`` may replace an older one still queued. Never raises."""
        raise NotImplementedError

    def report(self, lane: str, error: BaseException) -> None:
        """Report a library error (malformed frame, failed ack...) to ``on_error`` on the
        thread where this dispatcher runs callbacks for ``lane``."""
        inv = self._invoker
        if inv is not None:
            inv.report(error)
        else:
            logger.debug("dispatcher not started; not reporting %s", type(error).__name__)

    def stats(self) -> Dict[str, Any]:
        """Queue depth (total and per lane), max depth, drops, conflations, lag, policy."""
        return {
            "dispatcher": self.kind,
            "running": self._running,
            "overflow": None,
            "maxsize": None,
            "conflate": False,
            "depth": 0,
            "max_depth": 0,
            "drops": 0,
            "conflations": 0,
            "lag_ms": 0.0,
            "blocked_ms": 0.0,
            "blocked": 0,
            "dropped_on_stop": 0,
            "ignored": self._ignored,
            "lanes": {},
        }

    def _ignore(self, topic: str) -> None:
        self._ignored += 1
        if self._ignored == 1:
            logger.debug("dispatcher not running: ignoring message for %s (and later ones)", topic)


class InlineDispatcher(Dispatcher):
    """Runs callbacks on the submitting (reader) thread: the fastest path, no queue, no thread.

    A slow callback delays its whole connection. ``conflate`` is ignored (nothing is queued).
    ``stop()`` returns at once; a callback already running finishes on its thread.

    Thread-safety: safe.
    """

    kind = "inline"

    def __init__(self) -> None:
        super().__init__()
        self._invoke_all: Optional[Callable[[str, Sequence[Callback], Any], None]] = None

    def _started(self) -> None:
        assert self._invoker is not None
        self._invoke_all = self._invoker.invoke_all

    def stop(self, timeout: float = 5.0) -> None:
        """Stop; later ``submit`` calls are ignored."""
        super().stop(timeout)
        self._invoke_all = None

    def submit(
        self,
        lane: str,
        topic: str,
        callbacks: Sequence[Callback],
        arg: Any,
        conflate: bool = False,
    ) -> None:
        """Run the callbacks now, on this thread."""
        invoke_all = self._invoke_all
        if invoke_all is not None:
            invoke_all(topic, callbacks, arg)
        else:
            self._ignore(topic)


class _Drops:
    __slots__ = ("by_topic", "logged_at", "reported_at", "total", "unlogged")

    def __init__(self) -> None:
        self.total = 0
        self.unlogged = 0
        self.by_topic: Dict[str, int] = {}  # dropped since the last report
        self.logged_at = -math.inf
        self.reported_at = -math.inf


class _Inbox:
    """A bounded FIFO of ``(topic, callbacks, arg, enqueued_at, lane)`` items (a list for a
    conflatable item, so a newer message can replace its payload in place).

    Capacity counts queued plus in-flight items (taken by the consumer, not yet run)."""

    __slots__ = (
        "block_timeout",
        "blocked",
        "blocked_events",
        "blocked_s",
        "closed",
        "conflations",
        "consumer",
        "dropped_on_stop",
        "drops",
        "inflight",
        "items",
        "latest",
        "lock",
        "max_depth",
        "maxsize",
        "name",
        "not_full",
        "overflow",
        "thread",
        "unreported",
        "waiting",
        "wake",
    )

    def __init__(self, name: str, maxsize: int, overflow: str, block_timeout: Optional[float]):
        self.name = name
        self.maxsize = maxsize
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.items: Deque[Any] = deque()
        self.inflight = 0
        self.latest: Dict[Tuple[str, str], List[Any]] = {}
        self.closed = True
        self.waiting = False  # the consumer waits on ``wake`` (released once by a producer)
        self.wake = threading.Lock()
        self.wake.acquire()
        self.blocked = 0  # producers currently waiting for room
        self.blocked_events = 0
        self.blocked_s = 0.0
        self.max_depth = 0
        self.conflations = 0
        self.dropped_on_stop = 0
        self.drops: Dict[str, _Drops] = {}
        self.unreported = 0
        self.consumer: Optional[int] = None  # ident of the thread running this inbox's items
        self.thread: Optional[threading.Thread] = None

    def put(
        self, lane: str, topic: str, callbacks: Any, arg: Any, conflate: bool, slack: int = 0
    ) -> Tuple[int, bool]:
        """The slow path of submit: conflation, a full queue, a closed inbox.

        Returns ``(outcome, was_empty)``."""
        blocked_since: Optional[float] = None
        with self.lock:
            try:
                while True:
                    if self.closed:
                        return _IGNORED, False
                    key = (lane, topic)
                    if conflate:
                        slot = self.latest.get(key)
                        if slot is not None:
                            slot[1] = callbacks
                            slot[2] = arg
                            self.conflations += 1
                            return _CONFLATED, False
                    items = self.items
                    if len(items) + self.inflight < self.maxsize + slack:
                        was_empty = not items
                        if conflate:
                            slot = [topic, callbacks, arg, perf_counter(), lane]
                            self.latest[key] = slot
                            items.append(slot)
                        else:
                            items.append((topic, callbacks, arg, perf_counter(), lane))
                        if self.waiting:
                            self.waiting = False
                            self.wake.release()
                        return _QUEUED, was_empty
                    now = perf_counter()
                    if (
                        self.overflow == OVERFLOW_DROP
                        or slack
                        or threading.get_ident() == self.consumer  # waiting would deadlock
                        or (
                            blocked_since is not None
                            and self.block_timeout is not None
                            and now - blocked_since >= self.block_timeout
                        )
                    ):
                        self._drop(lane, topic)
                        return _DROPPED, False
                    if blocked_since is None:
                        blocked_since = now
                        self.blocked_events += 1
                    self.blocked += 1
                    try:
                        wait = _BLOCK_WAIT
                        if self.block_timeout is not None:
                            wait = min(wait, max(0.0, blocked_since + self.block_timeout - now))
                        self.not_full.wait(wait)
                    finally:
                        self.blocked -= 1
            finally:
                if blocked_since is not None:
                    self.blocked_s += perf_counter() - blocked_since

    def _drop(self, lane: str, topic: str) -> None:
        """Count a dropped message; WARNING at most once per second per lane (lock held)."""
        d = self.drops.get(lane)
        if d is None:
            d = self.drops[lane] = _Drops()
        d.total += 1
        d.unlogged += 1
        d.by_topic[topic] = d.by_topic.get(topic, 0) + 1
        self.unreported += 1
        now = monotonic()
        if now - d.logged_at >= _REPORT_EVERY:
            logger.warning(
                "dispatch queue %s full (maxsize=%d, overflow=%s): dropped %d message(s) "
                "since last warning, last of %s",
                lane,
                self.maxsize,
                self.overflow,
                d.unlogged,
                topic,
            )
            d.logged_at = now
            d.unlogged = 0

    def take(self, limit: int) -> Any:
        """Take up to ``limit`` items to run (lock held); they stay counted as in flight."""
        items = self.items
        n = len(items)
        if n + self.inflight > self.max_depth:
            self.max_depth = n + self.inflight
        chunk: Any
        if n <= limit:
            chunk = items
            self.items = deque()
            if self.latest:
                self.latest.clear()
        else:
            popleft = items.popleft
            chunk = [popleft() for _ in range(limit)]
            if self.latest:
                for item in chunk:
                    if type(item) is list:
                        del self.latest[(item[4], item[0])]
        self.inflight += len(chunk)
        return chunk

    def done(self, n: int) -> None:
        """``n`` taken items have run (lock held): free their room."""
        self.inflight -= n
        if self.blocked:
            self.not_full.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.waiting:
                self.waiting = False
                self.wake.release()
            self.not_full.notify_all()

    def flush_reports(self, report: Callable[[BaseException], None], force: bool) -> None:
        """Report accumulated drops as QueueOverflow, at most once per second per lane."""
        now = monotonic()
        errors: List[QueueOverflow] = []
        with self.lock:
            for d in self.drops.values():
                if d.by_topic and (force or now - d.reported_at >= _REPORT_EVERY):
                    for topic, count in d.by_topic.items():
                        errors.append(QueueOverflow(topic, count, self.maxsize))
                        self.unreported -= count
                    d.by_topic = {}
                    d.reported_at = now
        for error in errors:
            report(error)

    def lag(self, now: float) -> float:
        """Age in seconds of the oldest item not yet started (lock held)."""
        return now - self.items[0][3] if self.items else 0.0


def _check_policy(maxsize: int, overflow: str, block_timeout: Optional[float]) -> None:
    if maxsize < 1:
        raise ValueError("maxsize must be >= 1")
    if overflow not in (OVERFLOW_BLOCK, OVERFLOW_DROP):
        raise ValueError(f"overflow must be {OVERFLOW_BLOCK!r} or {OVERFLOW_DROP!r}")
    if block_timeout is not None and block_timeout < 0:
        raise ValueError("block_timeout must be >= 0 or None")


class _QueuedDispatcher(Dispatcher):
    """Shared parts of the two queued dispatchers."""

    def __init__(
        self, maxsize: int, overflow: str, conflate: bool, block_timeout: Optional[float]
    ) -> None:
        super().__init__()
        _check_policy(maxsize, overflow, block_timeout)
        self._maxsize = maxsize
        self._overflow = overflow
        self._conflate = conflate
        self._block_timeout = block_timeout

    def _inboxes(self) -> List[_Inbox]:
        raise NotImplementedError

    def _lane_stats(self, ib: _Inbox, now: float) -> Dict[str, Dict[str, Any]]:
        raise NotImplementedError

    def _put(
        self, ib: _Inbox, lane: str, topic: str, callbacks: Any, arg: Any, conflate: bool
    ) -> bool:
        """Slow path of submit; True when the consumer should be told the queue is ready."""
        outcome, was_empty = ib.put(lane, topic, callbacks, arg, conflate)
        if outcome == _IGNORED:
            self._ignore(topic)
        return outcome == _QUEUED and was_empty

    def _enqueue_report(self, ib: _Inbox, lane: str, error: BaseException) -> bool:
        outcome, was_empty = ib.put(lane, "", None, error, False, slack=_REPORT_SLACK)
        if outcome == _IGNORED:
            super().report(lane, error)
        return outcome == _QUEUED and was_empty

    def stats(self) -> Dict[str, Any]:
        """See :meth:`Dispatcher.stats`; ``lanes`` maps each lane to its own figures."""
        now = perf_counter()
        out = super().stats()
        out.update(overflow=self._overflow, maxsize=self._maxsize, conflate=self._conflate)
        lanes: Dict[str, Dict[str, Any]] = {}
        for ib in self._inboxes():
            with ib.lock:
                depth = len(ib.items) + ib.inflight
                out["depth"] += depth
                out["max_depth"] = max(out["max_depth"], ib.max_depth, depth)
                out["drops"] += sum(d.total for d in ib.drops.values())
                out["conflations"] += ib.conflations
                out["lag_ms"] = max(out["lag_ms"], ib.lag(now) * 1e3)
                out["blocked_ms"] += ib.blocked_s * 1e3
                out["blocked"] += ib.blocked_events
                out["dropped_on_stop"] += ib.dropped_on_stop
                lanes.update(self._lane_stats(ib, now))
        out["lanes"] = lanes
        return out


class WorkerDispatcher(_QueuedDispatcher):
    """One worker thread per lane (``sixmm-worker-<lane>``, started on the lane's first
    message); the reader thread never runs user code; order within a lane is kept.

    Each lane has a bounded queue of ``maxsize`` messages. ``overflow``:

    * ``"block"`` (default) -- backpressure: the submitting reader waits for room (in bounded
      waits, so ``stop()`` always gets through; time blocked is in ``stats()``), up to
      ``block_timeout`` seconds if set, after which the message is dropped as below. A callback
      submitting to its own full lane cannot wait for itself: that message is dropped.
    * ``"drop"`` -- the new message is dropped, counted, logged and reported as ``QueueOverflow``.

    ``conflate=True`` lets messages submitted with ``conflate=True`` replace a queued older one
    of the same topic (it keeps the older one's place in the queue).

    ``stop(timeout)``: the workers finish what is queued for up to ``0.8 * timeout``, then drop
    the rest (counted as ``dropped_on_stop``, logged); every worker is joined within ``timeout``
    except the calling one (safe from inside a callback).

    Thread-safety: safe.
    """

    kind = "worker"

    def __init__(
        self,
        maxsize: int = 10000,
        *,
        overflow: str = OVERFLOW_BLOCK,
        conflate: bool = False,
        block_timeout: Optional[float] = None,
    ) -> None:
        super().__init__(maxsize, overflow, conflate, block_timeout)
        self._lanes: Dict[str, _Inbox] = {}
        self._deadline = math.inf

    def _inboxes(self) -> List[_Inbox]:
        return list(self._lanes.values())

    def _lane(self, lane: str) -> Optional[_Inbox]:
        with self._state_lock:
            ib = self._lanes.get(lane)
            if ib is None and self._running:
                ib = _Inbox(lane, self._maxsize, self._overflow, self._block_timeout)
                ib.closed = False
                ib.thread = threading.Thread(
                    target=self._work, args=(ib,), name=f"sixmm-worker-{lane}", daemon=True
                )
                self._lanes = {**self._lanes, lane: ib}
                ib.thread.start()
            return ib

    def submit(
        self,
        lane: str,
        topic: str,
        callbacks: Sequence[Callback],
        arg: Any,
        conflate: bool = False,
    ) -> None:
        """Queue the message for the lane's worker (see the class doc for a full queue)."""
        ib = self._lanes.get(lane)
        if ib is None:
            ib = self._lane(lane)
            if ib is None:
                self._ignore(topic)
                return
        if not (conflate and self._conflate):
            with ib.lock:
                items = ib.items
                if len(items) + ib.inflight < ib.maxsize and not ib.closed:
                    items.append((topic, callbacks, arg, perf_counter(), lane))
                    if ib.waiting:
                        ib.waiting = False
                        ib.wake.release()
                    return
        self._put(ib, lane, topic, callbacks, arg, conflate and self._conflate)

    def report(self, lane: str, error: BaseException) -> None:
        """Report ``error`` to ``on_error`` on the lane's worker thread."""
        ib = self._lanes.get(lane) or self._lane(lane)
        if ib is None:
            super().report(lane, error)
        else:
            self._enqueue_report(ib, lane, error)

    def _work(self, ib: _Inbox) -> None:
        inv = self._invoker
        assert inv is not None
        invoke_all = inv.invoke_all
        report = inv.report
        ib.consumer = threading.get_ident()
        n = 0
        try:
            while True:
                chunk: Any = None
                with ib.lock:
                    if n:
                        ib.done(n)
                        n = 0
                    if ib.items:
                        chunk = ib.take(_CHUNK)
                        n = len(chunk)
                    elif ib.closed:
                        break
                    else:
                        ib.waiting = True
                if chunk is None:
                    if ib.unreported:
                        ib.flush_reports(report, force=False)
                    if not ib.wake.acquire(timeout=_IDLE_WAIT):
                        with ib.lock:
                            if ib.waiting:
                                ib.waiting = False
                            else:  # a producer released ``wake`` as we timed out: consume it
                                ib.wake.acquire(blocking=False)
                    continue
                for i, (topic, callbacks, arg, _t, _lane) in enumerate(chunk):
                    if ib.closed and perf_counter() >= self._deadline:
                        self._discard(ib, n - i)
                        break
                    try:
                        if callbacks is None:
                            report(arg)
                        else:
                            invoke_all(topic, callbacks, arg)
                    except BaseException:  # e.g. SystemExit: must not kill the lane
                        logger.exception("worker %s: callback for %s escaped", ib.name, topic)
                if ib.unreported:
                    ib.flush_reports(report, force=False)
        finally:
            with ib.lock:
                if n:
                    ib.done(n)
                ib.closed = True  # normally already; never leave producers waiting on a dead lane
                ib.not_full.notify_all()
            ib.flush_reports(report, force=True)

    def _discard(self, ib: _Inbox, unrun: int) -> None:
        with ib.lock:
            dropped = unrun + len(ib.items)
            ib.items.clear()
            ib.latest.clear()
            ib.dropped_on_stop += dropped
        logger.warning(
            "worker %s: stop timeout reached, dropped %d queued message(s)", ib.name, dropped
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued work for up to ``0.8 * timeout``, drop the rest, join the workers
        (never the calling thread). Idempotent; a later call joins workers still running."""
        t0 = perf_counter()
        with self._state_lock:
            if not self._stopped:
                self._deadline = t0 + max(0.0, timeout) * 0.8
            self._running = False
            self._stopped = True
            lanes = list(self._lanes.values())
        for ib in lanes:
            ib.close()
        me = threading.current_thread()
        for ib in lanes:
            t = ib.thread
            if t is None or t is me:
                continue
            t.join(max(0.0, t0 + timeout - perf_counter()))
            if t.is_alive():
                logger.warning(
                    "%s still running a callback after stop(timeout=%s)", t.name, timeout
                )

    def _lane_stats(self, ib: _Inbox, now: float) -> Dict[str, Dict[str, Any]]:
        t = ib.thread
        return {
            ib.name: {
                "depth": len(ib.items) + ib.inflight,
                "max_depth": max(ib.max_depth, len(ib.items) + ib.inflight),
                "drops": sum(d.total for d in ib.drops.values()),
                "conflations": ib.conflations,
                "lag_ms": ib.lag(now) * 1e3,
                "blocked_ms": ib.blocked_s * 1e3,
                "blocked": ib.blocked_events,
                "dropped_on_stop": ib.dropped_on_stop,
                "alive": t is not None and t.is_alive(),
            }
        }


class QueueDispatcher(_QueuedDispatcher):
    """Callbacks run only on the thread that calls :meth:`drain` -- for GUIs.

    One bounded FIFO of ``maxsize`` messages (order across lanes kept). ``overflow``:

    * ``"drop"`` (default) -- a GUI that stops draining must not stall the network reader: the
      new message is dropped, counted, logged (WARNING, reader side, once per second per lane)
      and reported as ``QueueOverflow`` to ``on_error`` from the next ``drain()``.
    * ``"block"`` -- the reader waits for room (bounded waits; ``block_timeout`` as in
      :class:`WorkerDispatcher`; a submit from inside ``drain()`` never waits).

    ``conflate=True``: a message submitted with ``conflate=True`` (tickers, book updates)
    replaces the queued older one of the same ``(lane, topic)``, so such topics never hold more
    than one slot; trades and user events (``conflate=False``) are never conflated.

    ``on_ready``: called on the reader thread whenever the queue goes from empty to non-empty,
    so a GUI can schedule a drain; it must be cheap and thread-safe (e.g. emit a Qt signal).

    ``stop()`` only closes the queue to new messages: what is queued stays and is still run by
    later ``drain()`` calls (a GUI thus sees the last events); nothing is run on other threads.

    Thread-safety: safe; ``drain`` should be called from one thread (a concurrent or nested
    call returns 0 at once).
    """

    kind = "queue"

    def __init__(
        self,
        maxsize: int = 10000,
        conflate: bool = False,
        *,
        on_ready: Optional[Callable[[], Any]] = None,
        overflow: str = OVERFLOW_DROP,
        block_timeout: Optional[float] = None,
    ) -> None:
        super().__init__(maxsize, overflow, conflate, block_timeout)
        self._inbox = _Inbox("queue", maxsize, overflow, block_timeout)
        self._on_ready = on_ready
        self._drain_lock = threading.Lock()
        self._ready_errors = 0

    def _started(self) -> None:
        with self._inbox.lock:
            self._inbox.closed = False

    def _inboxes(self) -> List[_Inbox]:
        return [self._inbox]

    def submit(
        self,
        lane: str,
        topic: str,
        callbacks: Sequence[Callback],
        arg: Any,
        conflate: bool = False,
    ) -> None:
        """Queue the message for the next ``drain()`` (see the class doc for a full queue)."""
        ib = self._inbox
        if not (conflate and self._conflate):
            with ib.lock:
                items = ib.items
                queued = len(items) + ib.inflight < ib.maxsize and not ib.closed
                if queued:
                    ready = not items
                    items.append((topic, callbacks, arg, perf_counter(), lane))
            if queued:
                if ready and self._on_ready is not None:
                    self._notify_ready()
                return
        if self._put(ib, lane, topic, callbacks, arg, conflate and self._conflate):
            self._notify_ready()

    def report(self, lane: str, error: BaseException) -> None:
        """Report ``error`` to ``on_error`` from the next ``drain()``."""
        if self._enqueue_report(self._inbox, lane, error):
            self._notify_ready()

    def _notify_ready(self) -> None:
        on_ready = self._on_ready
        if on_ready is None:
            return
        try:
            on_ready()
        except Exception:
            self._ready_errors += 1
            if self._ready_errors == 1 or self._ready_errors % 1000 == 0:
                logger.exception("on_ready raised (%d time(s))", self._ready_errors)

    def drain(self, max_items: Optional[int] = None) -> int:
        """Run queued callbacks on this thread; return the number of messages run.

        At most ``max_items`` messages (``None``: those queued when ``drain`` was called)."""
        inv = self._invoker
        if inv is None or not self._drain_lock.acquire(blocking=False):
            return 0
        ib = self._inbox
        invoke_all = inv.invoke_all
        report = inv.report
        done = 0
        n = 0
        chunk: Any = ()
        pos = -1
        try:
            ib.consumer = threading.get_ident()
            with ib.lock:
                limit = len(ib.items) if max_items is None else max_items
            while done < limit:
                with ib.lock:
                    if n:
                        ib.done(n)
                        n = 0
                    if not ib.items:
                        break
                    chunk = ib.take(min(_CHUNK, limit - done))
                    n = len(chunk)
                for pos, (topic, callbacks, arg, _t, _lane) in enumerate(chunk):  # noqa: B007
                    if callbacks is None:
                        report(arg)
                    else:
                        invoke_all(topic, callbacks, arg)
                chunk = ()
                done += n
        finally:
            with ib.lock:
                if chunk:  # a BaseException escaped a callback: requeue what did not run
                    ib.items.extendleft(reversed(list(chunk)[pos + 1 :]))
                if n:
                    ib.done(n)
            ib.consumer = None
            self._drain_lock.release()
        if ib.unreported:
            ib.flush_reports(report, force=False)
        return done

    def stop(self, timeout: float = 5.0) -> None:
        """Close the queue to new messages (queued ones remain drainable). Idempotent."""
        super().stop(timeout)
        self._inbox.close()

    def _lane_stats(self, ib: _Inbox, now: float) -> Dict[str, Dict[str, Any]]:
        lanes: Dict[str, Dict[str, Any]] = {}
        for item in ib.items:
            lane = item[4]
            entry = lanes.get(lane)
            if entry is None:
                entry = lanes[lane] = {"depth": 0, "drops": 0, "lag_ms": (now - item[3]) * 1e3}
            entry["depth"] += 1
        for lane, d in ib.drops.items():
            lanes.setdefault(lane, {"depth": 0, "drops": 0, "lag_ms": 0.0})["drops"] = d.total
        return lanes
