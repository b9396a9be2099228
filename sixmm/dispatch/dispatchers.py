"""The dispatchers: inline, a worker thread per lane, and a queue drained by the user."""

from __future__ import annotations

import functools
import logging
import math
import threading
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence

from sixmm.dispatch.inbox import (
    IGNORED,
    OVERFLOW_BLOCK,
    OVERFLOW_DROP,
    QUEUED,
    Inbox,
)
from sixmm.dispatch.invoker import Callback, Invoker
from sixmm.threads import OwnedThread

__all__ = [
    "OVERFLOW_BLOCK",
    "OVERFLOW_DROP",
    "Dispatcher",
    "InlineDispatcher",
    "QueueDispatcher",
    "WorkerDispatcher",
]

logger = logging.getLogger(__name__)

_IDLE_WAIT = 5.0  # bound on a worker's idle wait (woken explicitly on submit/stop)
_REPORT_SLACK = 100  # error reports may exceed maxsize by this much


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
        """A snapshot: ``dispatcher`` (kind), ``running``, ``overflow`` policy, ``maxsize``,
        ``conflate``; ``depth`` (queued + running now), ``max_depth`` (ever), ``drops``
        (overflow), ``conflations``, ``lag_ms`` (age of the oldest message not yet started),
        ``blocked_ms``/``blocked`` (time and times a reader waited for room),
        ``dropped_on_stop``, ``ignored`` (submitted while not running), and ``lanes``: per
        lane figures (depth, drops, lag_ms, ...)."""
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
        self._gate = [False]

    def _started(self) -> None:
        assert self._invoker is not None
        self._gate[0] = True
        # The hot path: an instance attribute shadows the ``submit`` method, so a reader's
        # ``dispatcher.submit(...)`` is one call straight into the invoker's inlined loop.
        self.__dict__["submit"] = self._invoker._inline_submit(self._gate, self._ignore)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop; later ``submit`` calls are ignored."""
        super().stop(timeout)
        self._gate[0] = False
        self.__dict__.pop("submit", None)

    def submit(
        self,
        lane: str,
        topic: str,
        callbacks: Sequence[Callback],
        arg: Any,
        conflate: bool = False,
    ) -> None:
        """Run the callbacks now, on this thread (once started; ignored otherwise)."""
        invoker = self._invoker
        if self._gate[0] and invoker is not None:
            invoker.invoke_all(topic, callbacks, arg)
        else:
            self._ignore(topic)


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

    def _inboxes(self) -> List[Inbox]:
        raise NotImplementedError

    def _put(
        self, ib: Inbox, lane: str, topic: str, callbacks: Any, arg: Any, conflate: bool
    ) -> int:
        outcome = ib.put(lane, topic, callbacks, arg, conflate)
        if outcome == IGNORED:
            self._ignore(topic)
        return outcome

    def _enqueue_report(self, ib: Inbox, lane: str, error: BaseException) -> int:
        outcome = ib.put(lane, "(error report)", None, error, False, slack=_REPORT_SLACK)
        if outcome == IGNORED:
            super().report(lane, error)
        return outcome

    def _run(self, ib: Inbox, limit: float, deadline: Callable[[], bool]) -> int:
        """Consumer loop body: pop and run up to ``limit`` items; returns how many ran.

        ``deadline()`` is consulted only once the inbox is closed (stop): when it says so,
        the rest of the queue is dropped and counted."""
        inv = self._invoker
        assert inv is not None
        invoke_all = inv.invoke_all
        report = inv.report
        popleft = ib.items.popleft
        ran = 0
        while ran < limit:
            try:
                item = popleft()
            except IndexError:
                break
            ran += 1
            if type(item) is list:
                topic, callbacks, arg = ib.claim(item)
            else:
                topic, callbacks, arg, _t, _lane = item
            if callbacks is None:
                report(arg)
            else:
                invoke_all(topic, callbacks, arg)
            if ib.blocked and len(ib.items) <= ib.low_water:  # hysteresis: no ping-pong
                ib.room_freed()
            if ib.closed and deadline():
                n = ib.discard()
                logger.warning("%s: stop timeout reached, dropped %d queued message(s)", ib.name, n)
                break
        return ran

    def stats(self) -> Dict[str, Any]:
        """See :meth:`Dispatcher.stats`; ``lanes`` maps each lane to its own figures."""
        now = perf_counter()
        out = super().stats()
        out.update(overflow=self._overflow, maxsize=self._maxsize, conflate=self._conflate)
        lanes: Dict[str, Dict[str, Any]] = {}
        for ib in self._inboxes():
            items, fig = ib.snapshot(now)
            for key in ("depth", "drops", "conflations", "blocked", "dropped_on_stop"):
                out[key] += fig[key]
            out["blocked_ms"] += fig["blocked_ms"]
            out["max_depth"] = max(out["max_depth"], fig["max_depth"])
            out["lag_ms"] = max(out["lag_ms"], fig["lag_ms"])
            lanes.update(self._lane_stats(ib, items, fig))
        out["lanes"] = lanes
        return out

    def _lane_stats(
        self, ib: Inbox, items: List[Any], fig: Dict[str, Any]
    ) -> Dict[str, Dict[str, Any]]:
        raise NotImplementedError


def _never() -> bool:
    return False


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

    A ``BaseException`` escaping a callback (``SystemExit``) is logged; the lane goes on.

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
        self._lanes: Dict[str, Inbox] = {}
        self._deadline = math.inf

    def _inboxes(self) -> List[Inbox]:
        return list(self._lanes.values())

    def _lane(self, lane: str) -> Optional[Inbox]:
        with self._state_lock:
            ib = self._lanes.get(lane)
            if ib is None and self._running:
                ib = Inbox(lane, self._maxsize, self._overflow, self._block_timeout)
                ib.closed = False
                ib.thread = OwnedThread(f"sixmm-worker-{lane}", functools.partial(self._work, ib))
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
        if not (conflate and self._conflate) and not ib.closed:
            items = ib.items
            depth = len(items) + ib.busy
            if depth < ib.maxsize:
                items.append((topic, callbacks, arg, perf_counter(), lane))
                if depth >= ib.max_depth:
                    ib.max_depth = depth + 1
                if ib.waiting:
                    ib.wake_consumer()
                return
        self._put(ib, lane, topic, callbacks, arg, conflate and self._conflate)

    def report(self, lane: str, error: BaseException) -> None:
        """Report ``error`` to ``on_error`` on the lane's worker thread."""
        ib = self._lanes.get(lane) or self._lane(lane)
        if ib is None:
            super().report(lane, error)
        else:
            self._enqueue_report(ib, lane, error)

    def _past_deadline(self) -> bool:
        return perf_counter() >= self._deadline

    def _work(self, ib: Inbox) -> None:
        inv = self._invoker
        assert inv is not None
        ib.consumer = threading.get_ident()
        items = ib.items
        try:
            while True:
                ib.busy = 1
                try:
                    self._run(ib, math.inf, self._past_deadline)
                except BaseException:  # e.g. SystemExit from a callback: keep the lane alive
                    logger.exception("worker %s: a callback escaped", ib.name)
                    continue
                ib.busy = 0
                if ib.blocked:
                    ib.room_freed()
                if ib.unreported:
                    ib.flush_reports(inv.report, force=False)
                if ib.closed and not items:
                    break
                ib.waiting = True  # then re-check: a producer appends, then reads ``waiting``
                if not items and not ib.closed:
                    ib.wake.acquire(timeout=_IDLE_WAIT)
                ib.waiting = False
        finally:
            ib.busy = 0
            ib.close()  # normally already; never leave producers waiting on a dead lane
            ib.flush_reports(inv.report, force=True)

    def close_lane(self, lane: str, timeout: float = 5.0) -> None:
        """Retire one lane (a connection gone for good; call once nothing more is submitted
        to it): its worker runs what is queued, then exits; joined within ``timeout`` unless
        called from that worker. A later message for the same lane starts a new worker."""
        with self._state_lock:
            lanes = dict(self._lanes)
            ib = lanes.pop(lane, None)
            self._lanes = lanes
        if ib is None:
            return
        ib.close()
        if ib.thread is not None:
            ib.thread.stop(timeout, busy="still running a callback after close_lane()")

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
        for ib in lanes:
            if ib.thread is not None:
                left = max(0.0, t0 + timeout - perf_counter())
                ib.thread.stop(left, busy="still running a callback after stop()")

    def _lane_stats(
        self, ib: Inbox, items: List[Any], fig: Dict[str, Any]
    ) -> Dict[str, Dict[str, Any]]:
        return {ib.name: dict(fig, alive=ib.thread is not None and ib.thread.alive)}


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

    ``on_ready``: called when a message is queued and no call is outstanding (on the
    submitting thread); each ``drain()`` consumes the outstanding call and, if messages remain
    (``max_items`` reached), calls ``on_ready`` again itself. So a GUI that runs one
    ``drain()`` per call misses nothing. It must be cheap and thread-safe (e.g. emit a Qt
    signal); an ``on_ready`` that raises is logged.

    ``stop()`` only closes the queue to new messages: what is queued stays and is still run by
    later ``drain()`` calls (a GUI thus sees the last events); nothing runs on other threads.

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
        self._inbox = Inbox("queue", maxsize, overflow, block_timeout)
        self._on_ready = on_ready
        self._drain_lock = threading.Lock()
        self._ready_errors = 0

    def _started(self) -> None:
        with self._inbox.lock:
            self._inbox.closed = False

    def _inboxes(self) -> List[Inbox]:
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
        if not (conflate and self._conflate) and not ib.closed:
            items = ib.items
            depth = len(items) + ib.busy
            if depth < ib.maxsize:
                items.append((topic, callbacks, arg, perf_counter(), lane))
                if depth >= ib.max_depth:
                    ib.max_depth = depth + 1
                if not ib.signalled and self._on_ready is not None:
                    self._notify_ready()
                return
        outcome = self._put(ib, lane, topic, callbacks, arg, conflate and self._conflate)
        if outcome == QUEUED and not ib.signalled:
            self._notify_ready()

    def report(self, lane: str, error: BaseException) -> None:
        """Report ``error`` to ``on_error`` from the next ``drain()``."""
        outcome = self._enqueue_report(self._inbox, lane, error)
        if outcome == QUEUED and not self._inbox.signalled:
            self._notify_ready()

    def _notify_ready(self) -> None:
        on_ready = self._on_ready
        if on_ready is None:
            return
        self._inbox.signalled = True
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
        ran = 0
        try:
            ib.consumer = threading.get_ident()
            ib.busy = 1
            limit = len(ib.items) if max_items is None else max_items
            ran = self._run(ib, limit, _never)
        finally:
            ib.busy = 0
            if ib.blocked:
                ib.room_freed()
            ib.consumer = None
            self._drain_lock.release()
        ib.signalled = False  # this drain consumed the outstanding on_ready call ...
        if ib.items:  # ... so re-signal what is left (a producer reads the flag after appending)
            self._notify_ready()
        if ib.unreported:
            ib.flush_reports(inv.report, force=False)
        return ran

    def stop(self, timeout: float = 5.0) -> None:
        """Close the queue to new messages (queued ones remain drainable). Idempotent."""
        super().stop(timeout)
        self._inbox.close()

    def _lane_stats(
        self, ib: Inbox, items: List[Any], fig: Dict[str, Any]
    ) -> Dict[str, Dict[str, Any]]:
        lanes: Dict[str, Dict[str, Any]] = {}
        now = perf_counter()
        for item in items:
            entry = lanes.get(item[4])
            if entry is None:
                entry = lanes[item[4]] = {"depth": 0, "drops": 0}
                entry["lag_ms"] = (now - item[3]) * 1e3
            entry["depth"] += 1
        for lane, d in ib.drops.items():
            lanes.setdefault(lane, {"depth": 0, "drops": 0, "lag_ms": 0.0})["drops"] = d.total
        return lanes
