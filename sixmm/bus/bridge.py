"""The bridge: one :class:`~sixmm.StreamManager`'s public topics published into Redis Streams.

The manager's reader threads only hand entries to the :class:`~sixmm.bus.writer.Writer`'s
bounded queue (never blocking on Redis). Books, from the book's own observer hook (under its
lock, so in the order the book applied them): each verified increment (the book applied it
under the exchange's version rules) in the exchange's depth shape with the exact strings, a
snapshot of the bridge's own synced book on every
(re)sync and every ``snapshot_interval``, an ``unsynced`` entry the moment the bridge's book
may be wrong. Exchange outages become ``gap`` entries. The private user stream is never
published: a ``user`` topic is refused.

Thread-safety: every public method may be called from any thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..config import DEFAULT_WS_URL
from ..manager import StreamManager
from ..orderbook import OrderBook
from ..protocol.book import BookState, Outcome
from ..protocol.depth import DepthMsg
from ..protocol.topics import parse_topic
from ..states import GapEvent
from .format import DEFAULT_PREFIX, check_public, max_trade_id, shard_of, snapshot_data
from .redisio import redis_errors
from .writer import ACTIVE, Writer

__all__ = ["Bridge", "select_topics"]

logger = logging.getLogger(__name__)

_APPLIED = Outcome.APPLIED
_SNAPSHOT = Outcome.SNAPSHOT
_INVALID = (Outcome.GAP, Outcome.CROSSED, None)


def _now_ms() -> int:
    return int(time.time() * 1000)


def increment(msg: DepthMsg) -> Dict[str, Any]:
    """A verified book update in the exchange's depth shape, with the exact strings."""
    data: Dict[str, Any] = {"type": "update", "endVersion": msg.end}
    if msg.start is not None:
        data["startVersion"] = msg.start
    if msg.prev is not None:
        data["prevEndVersion"] = msg.prev
    data["bids"] = msg.bids
    data["asks"] = msg.asks
    return data


def select_topics(topics: Iterable[str], shard: Optional[Tuple[int, int]]) -> List[str]:
    """The topics of shard ``(index, count)`` (all when None), by :func:`shard_of`."""
    unique = list(dict.fromkeys(check_public(t) for t in topics))
    if shard is None:
        return unique
    index, count = shard
    return [t for t in unique if shard_of(t, count) == index]


def default_group(topics: Iterable[str], shard: Optional[Tuple[int, int]]) -> str:
    """The lease group of bridges started with the same topics and shard."""
    names = ",".join(sorted(set(topics)))
    crc = zlib.crc32(names.encode("utf-8"))
    part = "all" if shard is None else f"{shard[0] + 1}of{shard[1]}"
    return f"{crc:08x}-{part}"


class Bridge:
    """Publishes ``topics`` (public only) from the exchange at ``url`` into Redis.

    Several bridges with the same topics (and shard) form a group: one publishes (the lease
    holder), the others stand by, connected and buffering, and take over within ``lease_ttl``
    seconds when it dies. ``on_error`` gets exchange and Redis troubles (Redis ones paced);
    ``on_role(role, reason)`` every change between ``"active"`` and ``"standby"``. Extra
    keyword arguments go to the :class:`~sixmm.StreamManager`.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        topics: Iterable[str],
        redis_url: str,
        *,
        url: str = DEFAULT_WS_URL,
        shard: Optional[Tuple[int, int]] = None,
        group: Optional[str] = None,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = 10_000,
        snapshot_interval: float = 10.0,
        heartbeat_interval: float = 1.0,
        lease_ttl: float = 5.0,
        queue_size: int = 10_000,
        standby_buffer: int = 10_000,
        on_error: Optional[Callable[[BaseException], Any]] = None,
        on_role: Optional[Callable[[str, str], Any]] = None,
        **manager_kwargs: Any,
    ) -> None:
        redis_errors()  # ImportError with the install hint, now rather than in the thread
        wanted = list(topics)
        self.topics = select_topics(wanted, shard)
        for topic in self.topics:
            if topic.startswith("market."):
                parse_topic(topic)  # ValueError names the bad part
        self.session = uuid.uuid4().hex[:16]
        self.group = group or default_group(wanted, shard)
        self._on_error = on_error
        self._on_role = on_role
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._manager = StreamManager(
            url, on_error=on_error, on_gap=self._exchange_gap, **manager_kwargs
        )
        self._books: Dict[str, OrderBook] = {}
        self._synced: Dict[str, bool] = {}
        self._writer = Writer(
            redis_url,
            session=self.session,
            topics=self.topics,
            book_topics=[t for t in self.topics if t.startswith("market.depth.")],
            snapshot=self._book_snapshot,
            prefix=prefix,
            group=self.group,
            maxlen=maxlen,
            queue_size=queue_size,
            lease_ttl=lease_ttl,
            heartbeat_interval=heartbeat_interval,
            snapshot_interval=snapshot_interval,
            standby_buffer=standby_buffer,
            report=self._report,
            on_role=self._role_changed,
        )
        self._put = self._writer.put
        for topic in self.topics:
            self._register(topic)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Bridge:
        """Connect to the exchange and start the writer (idempotent)."""
        self._writer.start()
        self._manager.start()
        logger.info(
            "bus bridge %s started: group %s, %d topic(s)",
            self.session,
            self.group,
            len(self.topics),
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the exchange side, flush the queue, release the lease, join (bounded)."""
        deadline = time.monotonic() + timeout
        self._manager.stop(timeout / 2)
        self._writer.stop(max(0.1, deadline - time.monotonic()))
        self._stopped.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until :meth:`stop` (True) or ``timeout`` (False)."""
        return self._stopped.wait(timeout)

    @property
    def role(self) -> str:
        """``"active"`` (publishing) or ``"standby"``."""
        return self._writer.role

    @property
    def active(self) -> bool:
        return self._writer.role == ACTIVE

    @property
    def manager(self) -> StreamManager:
        """The bridge's own manager (read-only use: stats, books)."""
        return self._manager

    def stats(self) -> Dict[str, Any]:
        """``{"session", "group", "topics", "bus": writer counters, "manager": its stats}``."""
        return {
            "session": self.session,
            "group": self.group,
            "topics": list(self.topics),
            "bus": self._writer.stats(),
            "manager": self._manager.stats(),
        }

    # -- registration -------------------------------------------------------------------------

    def _register(self, topic: str) -> None:
        channel = parse_topic(topic).channel if topic.startswith("market.") else None
        m = self._manager
        if channel == "depth":
            symbol = topic.rsplit(".", 1)[-1]
            book = m.order_book(symbol)
            self._books[topic] = book
            self._synced[topic] = False
            book._observer = functools.partial(self._observe, topic)
        elif channel == "trade":
            m.subscribe(topic, functools.partial(self._on_trade, topic))
        elif channel == "tickers":
            m.subscribe(topic, functools.partial(self._on_tickers, topic))
        elif channel is None:
            m.subscribe(topic, functools.partial(self._on_raw, topic))
        else:
            m.subscribe(topic, functools.partial(self._on_model, topic))

    # -- reader-thread callbacks (never block) ------------------------------------------------

    def _on_trade(self, topic: str, trade: Any) -> None:
        raw = trade.raw
        self._put(topic, "data", _now_ms(), trade.time, raw, None, max_trade_id((raw,)))

    def _on_model(self, topic: str, model: Any) -> None:
        self._put(topic, "data", _now_ms(), getattr(model, "time", None), model.raw)

    def _on_tickers(self, topic: str, tickers: List[Any]) -> None:
        self._put(topic, "data", _now_ms(), None, [t.raw for t in tickers])

    def _on_raw(self, topic: str, envelope: Any) -> None:
        ts = envelope.get("ts") if isinstance(envelope, dict) else None
        data = envelope.get("data") if isinstance(envelope, dict) else envelope
        self._put(topic, "data", _now_ms(), ts if isinstance(ts, int) else None, data)

    def _observe(
        self, topic: str, msg: Optional[DepthMsg], outcome: Optional[Outcome], state: BookState
    ) -> None:
        """The book's hook, under its lock: note verified increments, snapshot on (re)sync."""
        if outcome is _APPLIED and msg is not None:
            self._put(topic, "update", _now_ms(), None, increment(msg), msg.end)
            return
        if outcome is _SNAPSHOT and state.synced and state.version is not None:
            self._synced[topic] = True
            bids, asks = state.levels()
            data = snapshot_data(state.version, bids, asks)
            self._put(topic, "snapshot", _now_ms(), None, data, state.version)
        elif outcome in _INVALID and self._synced.get(topic):
            self._synced[topic] = False
            reason = "invalidated" if outcome is None else outcome.value
            self._put(topic, "unsynced", _now_ms(), None, {"reason": reason}, state.version)

    def _exchange_gap(self, gap: GapEvent) -> None:
        reason = "exchange connection outage"
        self._put(
            gap.topic,
            "gap",
            _now_ms(),
            None,
            {"start": gap.start, "end": gap.end, "reason": reason},
        )

    # -- writer-thread callbacks --------------------------------------------------------------

    def _book_snapshot(self, topic: str) -> Optional[Tuple[int, Any]]:
        book = self._books.get(topic)
        if book is None:
            return None

        def read(state: BookState) -> Optional[Tuple[int, Any]]:
            if not state.synced or state.version is None:
                return None
            bids, asks = state.levels()
            return state.version, snapshot_data(state.version, bids, asks)

        return book._locked(read)

    def _role_changed(self, role: str, reason: str) -> None:
        if self._on_role is not None:
            try:
                self._on_role(role, reason)
            except Exception:  # a user hook must not kill the writer
                logger.exception("bus bridge: on_role raised")

    def _report(self, error: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                logger.exception("bus bridge: on_error raised")

    def __repr__(self) -> str:
        return f"<Bridge {self.session} {self.role} group={self.group} topics={len(self.topics)}>"
