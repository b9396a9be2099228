"""The bounded queue between a reader thread and the thread that runs callbacks (internal)."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from time import monotonic, perf_counter
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from sixmm.errors import QueueOverflow
from sixmm.threads import OwnedThread

__all__ = ["OVERFLOW_BLOCK", "OVERFLOW_DROP", "Drops", "Inbox"]

logger = logging.getLogger(__name__)

OVERFLOW_BLOCK = "block"
"""Overflow policy: the submitting (reader) thread waits for room -- backpressure."""
OVERFLOW_DROP = "drop"
"""Overflow policy: the new message is dropped, counted, logged and reported."""

REPORT_EVERY = 1.0  # seconds between overflow warnings / reports per lane
BLOCK_WAIT = 1.0  # bound on one wait of a blocked submitter (re-checks stop)

# put() outcomes
QUEUED, CONFLATED, DROPPED, IGNORED = range(4)


class Drops:
    """Drop counters of one lane. Thread-safety: guarded by the owning Inbox's lock."""

    __slots__ = ("by_topic", "logged_at", "reported_at", "total", "unlogged")

    def __init__(self) -> None:
        self.total = 0
        self.unlogged = 0
        self.by_topic: Dict[str, int] = {}  # dropped since the last report
        self.logged_at = -math.inf
        self.reported_at = -math.inf


class Inbox:
    """A bounded FIFO of ``(topic, callbacks, arg, enqueued_at, lane)`` items with one consumer.

    The producers' hot path takes no lock: ``deque.append``/``popleft`` are atomic, and the
    flags below are written so that the consumer and a producer always see each other
    (a write, then a read of the other side's flag; the GIL orders them). Conflation, a full
    queue and blocking take ``lock``. A conflatable item is a list whose payload a newer
    message may replace until the consumer claims it (under ``lock``).

    Capacity counts queued items plus the one the consumer is running (``busy``); the check
    is conservative, so several concurrent producers may overshoot ``maxsize`` only by their
    number.

    Thread-safety: any number of producers, one consumer at a time.
    """

    __slots__ = (
        "block_timeout",
        "blocked",
        "blocked_events",
        "blocked_s",
        "busy",
        "closed",
        "conflations",
        "consumer",
        "dropped_on_stop",
        "drops",
        "items",
        "latest",
        "lock",
        "low_water",
        "max_depth",
        "maxsize",
        "name",
        "not_full",
        "overflow",
        "signalled",
        "thread",
        "unreported",
        "waiting",
        "wake",
    )

    def __init__(self, name: str, maxsize: int, overflow: str, block_timeout: Optional[float]):
        self.name = name
        self.maxsize = maxsize
        self.low_water = max(1, maxsize * 3 // 4)  # blocked producers are woken at or below this
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.items: Deque[Any] = deque()
        self.busy = 0  # 1 while the consumer runs items (the running one is not in ``items``)
        self.latest: Dict[Tuple[str, str], List[Any]] = {}
        self.closed = True
        self.waiting = False  # the consumer is about to sleep on ``wake``
        self.wake = threading.Lock()  # a binary semaphore, released by a producer
        self.wake.acquire()
        self.signalled = False  # QueueDispatcher: on_ready called, no drain emptied the queue yet
        self.blocked = 0  # producers waiting for room
        self.blocked_events = 0
        self.blocked_s = 0.0
        self.max_depth = 0
        self.conflations = 0
        self.dropped_on_stop = 0
        self.drops: Dict[str, Drops] = {}
        self.unreported = 0
        self.consumer: Optional[int] = None  # ident of the thread running this inbox's items
        self.thread: Optional[OwnedThread] = None  # a worker dispatcher's lane thread

    def wake_consumer(self) -> None:
        if self.waiting:
            self.waiting = False
            try:
                self.wake.release()
            except RuntimeError:  # another producer released it first
                pass

    def room_freed(self) -> None:
        """Consumer side: tell blocked producers there may be room."""
        with self.lock:
            self.not_full.notify_all()

    def put(
        self, lane: str, topic: str, callbacks: Any, arg: Any, conflate: bool, slack: int = 0
    ) -> int:
        """The slow path of submit (conflation, a full or closed queue); returns the outcome."""
        blocked_since: Optional[float] = None
        with self.lock:
            try:
                while True:
                    if self.closed:
                        return IGNORED
                    key = (lane, topic)
                    if conflate:
                        slot = self.latest.get(key)
                        if slot is not None:
                            slot[1] = callbacks
                            slot[2] = arg
                            self.conflations += 1
                            return CONFLATED
                    items = self.items
                    depth = len(items) + self.busy
                    if depth < self.maxsize + slack:
                        if conflate:
                            slot = [topic, callbacks, arg, perf_counter(), lane]
                            self.latest[key] = slot
                            items.append(slot)
                        else:
                            items.append((topic, callbacks, arg, perf_counter(), lane))
                        if depth >= self.max_depth:
                            self.max_depth = depth + 1
                        self.wake_consumer()
                        return QUEUED
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
                        return DROPPED
                    if blocked_since is None:
                        blocked_since = now
                        self.blocked_events += 1
                    self.blocked += 1
                    try:
                        if len(items) + self.busy >= self.maxsize:  # re-check after announcing
                            wait = BLOCK_WAIT
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
            d = self.drops[lane] = Drops()
        d.total += 1
        d.unlogged += 1
        d.by_topic[topic] = d.by_topic.get(topic, 0) + 1
        self.unreported += 1
        now = monotonic()
        if now - d.logged_at >= REPORT_EVERY:
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

    def claim(self, slot: List[Any]) -> Tuple[str, Any, Any]:
        """Consumer side: take a conflatable item out of reach of newer messages."""
        with self.lock:
            key = (slot[4], slot[0])
            if self.latest.get(key) is slot:
                del self.latest[key]
            return slot[0], slot[1], slot[2]

    def discard(self) -> int:
        """Drop everything queued (at stop); returns the count."""
        with self.lock:
            n = len(self.items)
            self.items.clear()
            self.latest.clear()
            self.dropped_on_stop += n
            return n

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.wake_consumer()
            self.not_full.notify_all()

    def flush_reports(self, report: Callable[[BaseException], None], force: bool) -> None:
        """Report accumulated drops as QueueOverflow, at most once per second per lane."""
        now = monotonic()
        errors: List[QueueOverflow] = []
        with self.lock:
            for d in self.drops.values():
                if d.by_topic and (force or now - d.reported_at >= REPORT_EVERY):
                    for topic, count in d.by_topic.items():
                        errors.append(QueueOverflow(topic, count, self.maxsize))
                        self.unreported -= count
                    d.by_topic = {}
                    d.reported_at = now
        for error in errors:
            report(error)

    def snapshot(self, now: float) -> Tuple[List[Any], Dict[str, Any]]:
        """Queued items and this inbox's figures, for stats()."""
        with self.lock:
            items = list(self.items.copy())
            depth = len(items) + self.busy
            return items, {
                "depth": depth,
                "max_depth": max(self.max_depth, depth),
                "drops": sum(d.total for d in self.drops.values()),
                "conflations": self.conflations,
                "lag_ms": (now - items[0][3]) * 1e3 if items else 0.0,
                "blocked_ms": self.blocked_s * 1e3,
                "blocked": self.blocked_events,
                "dropped_on_stop": self.dropped_on_stop,
            }
