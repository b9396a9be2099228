"""The session of a public market-data connection: subscriptions, acks, routing, resyncs.

On every (re)connect it subscribes every desired topic of its shard in one request; it matches
every ack to its request by id; it routes each push to its topic's callbacks (through the
dispatcher) or order book; a book that reports a gap or a crossed state is resynced by
resubscribing that one depth topic. Pushes for topics this connection did not subscribe are
counted and reported, never dispatched.

Once a tick it judges each topic's liveness (:mod:`sixmm.protocol.liveness`): a topic silent
past its bound while the connection goes on receiving frames is resubscribed alone (a book is
unsynced and rebuilt from a fresh snapshot), reported as :class:`~sixmm.errors.TopicSilent`
and to ``on_state``; the connection is left alone. A frame that fails to parse resyncs the
books it names (every book here if it names none of our topics). Server text is scrubbed
(:func:`sixmm.protocol.redact.scrub`) before it is logged or reported.

Thread-safety: ``add``/``remove`` may be called from any thread; the ``on_*`` hooks run on the
connection's reader thread (``on_tick`` on the heartbeat thread).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .connection import Connection, Session
from .dispatch import Dispatcher
from .errors import ProtocolError, SubscriptionError, TopicSilent
from .protocol.book import Outcome
from .protocol.depth import parse_depth
from .protocol.events import Ack, Event, Malformed, Pong, Push
from .protocol.frames import (
    RequestIds,
    acked_topics,
    decode,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
    unparsed,
)
from .protocol.liveness import DEFAULT_LIVENESS, Liveness, Silence
from .protocol.models import DepthUpdate, convert
from .protocol.redact import scrub
from .states import GapEvent
from .subscriptions import Route

__all__ = ["PublicSession"]

logger = logging.getLogger(__name__)

Submit = Callable[[str, str, Any, Any, bool], None]
# enum member lookups cost ~75 ns each on the per-frame path: bind them once
_APPLIED = Outcome.APPLIED
_SNAPSHOT = Outcome.SNAPSHOT
_GAP = Outcome.GAP
_CROSSED = Outcome.CROSSED
#: After an unsubscribe, pushes still in flight for the topic are expected for this long.
_LATE_GRACE = 5.0
_REPORTS_PER_SECOND = 5
#: Topic-like tokens in a frame that failed to parse (to find the books it was meant for).
_TOPIC_TOKEN = re.compile(rb"market\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_-]+)*")


class _Request:
    __slots__ = ("op", "remaining", "resync", "sent_at", "topics")

    def __init__(self, op: str, topics: List[str], sent_at: float, resync: bool) -> None:
        self.op = op
        self.topics = topics
        self.remaining: Set[str] = set(topics)
        self.sent_at = sent_at
        self.resync = resync


class PublicSession(Session):
    """Carries a shard of public topics over one :class:`Connection`."""

    def __init__(
        self,
        url: str,
        *,
        ids: RequestIds,
        dispatcher: Dispatcher,
        report: Callable[[BaseException], None],
        on_gap: Callable[[str, GapEvent], None],
        on_failed: Callable[[Route], None],
        decode: Callable[[bytes], Event] = decode,
        ack_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        liveness: Liveness = DEFAULT_LIVENESS,
        on_topic_event: Optional[Callable[[str, str, str], None]] = None,
    ) -> None:
        self._url = url
        self._ids = ids
        self._dispatcher = dispatcher
        self._submit: Submit = dispatcher.submit
        self._report_error = report
        self._on_gap = on_gap
        self._on_failed = on_failed
        self._decode = decode
        self._ack_timeout = ack_timeout
        self._clock = clock
        self._liveness = liveness
        self._on_topic_event = on_topic_event  # (connection, topic, reason) -> on_state
        self._lock = threading.Lock()
        self._routes: Dict[str, Route] = {}  # replaced on change: the reader reads it lock-free
        self._pending: Dict[str, _Request] = {}
        self._late: Dict[str, float] = {}
        self._conn: Optional[Connection] = None
        self._open = False
        self._streaming = False  # this socket was accepted (ack or data seen)
        self._report_window = (0.0, 0)
        # counters
        self.malformed = 0
        self.unknown_topic = 0
        self.late_pushes = 0
        self.unmatched_acks = 0
        self.failed_acks = 0
        self.resyncs = 0
        self.pongs = 0
        self.topic_silences = 0
        self.unparsed_resyncs = 0

    def bind(self, conn: Connection) -> None:
        self._conn = conn

    def __len__(self) -> int:
        return len(self._routes)

    @property
    def topics(self) -> List[str]:
        return list(self._routes)

    # -- registry side (any thread) -----------------------------------------------------

    def add(self, route: Route) -> None:
        """Desire ``route.topic`` on this connection; subscribe now if the socket is open."""
        with self._lock:
            routes = dict(self._routes)
            routes[route.topic] = route
            self._routes = routes
            self._late.pop(route.topic, None)
            route.session = self
            is_open = self._open
        if is_open and self._conn is not None:
            self._send(self._conn, "subscribe", [route.topic])

    def remove(self, route: Route, *, unsubscribe: bool = True) -> None:
        """Stop desiring ``route.topic``; unsubscribe now if the socket is open (and the
        server had accepted it)."""
        with self._lock:
            if self._routes.get(route.topic) is not route:
                return
            routes = dict(self._routes)
            del routes[route.topic]
            self._routes = routes
            self._late[route.topic] = self._clock() + _LATE_GRACE
            route.session = None
            is_open = self._open
        if unsubscribe and is_open and self._conn is not None:
            self._send(self._conn, "unsubscribe", [route.topic])

    def resync(self, route: Route, reason: str) -> None:
        """Rebuild ``route``'s book from a fresh snapshot: unsubscribe + subscribe that topic."""
        book = route.book
        if book is None:
            return
        self.resyncs += 1
        book._begin_resync(reason)
        route.resync_at = self._clock()
        with self._lock:
            route.watch.disarm()  # judged again once the resubscribe is acknowledged
        logger.warning("book %s: %s; resubscribing %s", book.symbol, reason, route.topic)
        conn = self._conn
        if conn is not None and self._open:
            self._send(conn, "unsubscribe", [route.topic], resync=True)
            self._send(conn, "subscribe", [route.topic], resync=True)

    # -- connection hooks ---------------------------------------------------------------

    def url(self) -> str:
        return self._url

    def on_open(self, conn: Connection) -> None:
        self._submit = self._dispatcher.submit  # the started dispatcher's fast path
        with self._lock:
            self._open = True
            self._pending.clear()
            topics = list(self._routes)
        self._streaming = False
        if topics:
            self._send(conn, "subscribe", topics)
        else:
            self._mark_streaming(conn, "connected (no topics yet)")

    def on_closed(self, conn: Connection, reason: str) -> None:
        now_ms = int(time.time() * 1000)
        with self._lock:
            self._open = False
            self._pending.clear()
            routes = list(self._routes.values())
        for route in routes:
            route.watch.disarm()
            if route.gap_start is None:
                route.gap_start = route.last_ts if route.last_ts is not None else now_ms
            if route.book is not None:
                route.book._begin_resync(f"connection lost: {reason}")

    def on_tick(self, conn: Connection, now: float) -> None:
        late = [topic for topic, until in list(self._late.items()) if until < now]
        for topic in late:
            self._late.pop(topic, None)
        expired: List[_Request] = []
        with self._lock:
            for rid, req in list(self._pending.items()):
                if now - req.sent_at > self._ack_timeout:
                    del self._pending[rid]
                    expired.append(req)
        for req in expired:
            topics = sorted(t for t in req.remaining if t in self._routes)
            if req.op != "subscribe" or not topics:
                continue
            self._report(
                ProtocolError(
                    f"no ack within {self._ack_timeout:.0f}s for subscribe {topics}; resending"
                )
            )
            self._send(conn, "subscribe", topics, resync=req.resync)
        backoff = self._liveness.repeat_backoff
        for route in list(self._routes.values()):
            book = route.book
            if book is None or book.synced or route.resync_at is None or not self._open:
                continue
            streak = route.watch.streak  # a topic that keeps failing waits longer each time
            wait = self._ack_timeout + (backoff.cap(streak - 1) if streak > 0 else 0.0)
            if now - route.resync_at > wait:
                route.watch.streak = streak + 1
                self.resync(route, "no snapshot after resubscribe")
        if self._open and self._streaming:
            self._check_liveness(conn, now)

    def ping_text(self) -> str:
        return encode_ping(self._ids.next())

    def on_message(self, conn: Connection, payload: bytes) -> None:
        event = self._decode(payload)
        if event.__class__ is Push:
            push: Push = event
            route = self._routes.get(push.topic)
            if route is None:
                self._unknown(push)
                return
            if not self._streaming:  # data for our topics proves the server took us
                self._mark_streaming(conn, "data flowing")
            route.messages += 1
            ts = push.ts
            if ts is not None:
                route.last_ts = ts
                if route.messages & 63 == 1:  # sample the exchange-to-receive lag
                    route.lag_ms = int(time.time() * 1000) - ts
            if route.channel == "depth":
                self._on_depth(conn, route, push)
                return
            callbacks = route.callbacks
            if not callbacks:
                return
            if route.channel is None:
                items: List[Any] = [push.raw]
            else:
                try:
                    items = convert(route.channel, push)
                except ProtocolError as exc:
                    route.bad_payloads += 1
                    self._report(ProtocolError(f"bad {route.topic} payload: {scrub(str(exc))}"))
                    return
            submit, lane, topic, conflate = self._submit, conn.name, route.topic, route.conflate
            for item in items:
                submit(lane, topic, callbacks, item, conflate)
            return
        if event.__class__ is Malformed:
            self._on_malformed(event, payload)
            return
        self._on_control(conn, event)

    # -- internals ----------------------------------------------------------------------

    def _on_depth(self, conn: Connection, route: Route, push: Push) -> None:
        book = route.book
        try:
            msg = parse_depth(push.data, push.snapshot, book._known if book is not None else None)
            if book is not None and msg.symbol is not None and msg.symbol != book.symbol:
                raise ProtocolError(f"symbol {msg.symbol!r} on the {book.symbol} depth topic")
        except ProtocolError as exc:
            route.bad_payloads += 1
            self._report(ProtocolError(f"bad {route.topic} payload: {scrub(str(exc))}"))
            if book is not None and book._bad_payload(str(exc)):
                self.resync(route, "malformed depth payload")
            return
        if book is not None:
            outcome = book._feed(msg)
            if outcome is _APPLIED or outcome is _SNAPSHOT:
                if outcome is _SNAPSHOT:
                    route.resync_at = None
                if route.listeners:
                    self._submit(conn.name, route.topic, route.listeners, book, True)
            elif outcome is _GAP or outcome is _CROSSED:
                self.resync(route, "version gap" if outcome is _GAP else "crossed book")
        if route.callbacks:
            symbol = route.topic.rsplit(".", 1)[-1]
            update = DepthUpdate.from_depth_msg(msg, ts=push.ts, symbol=symbol, raw=push.data)
            self._submit(conn.name, route.topic, route.callbacks, update, False)

    def _on_control(self, conn: Connection, event: Any) -> None:
        cls = event.__class__
        if cls is Ack:
            self._on_ack(conn, event)
        elif cls is Pong:
            self.pongs += 1
        else:
            self.malformed += 1
            self._report(ProtocolError(f"unexpected {cls.__name__} on a public connection"))

    def _on_ack(self, conn: Connection, ack: Ack) -> None:
        with self._lock:
            req = self._pending.get(ack.id) if ack.id is not None else None
            if req is None:
                self.unmatched_acks += 1
            else:
                topics = acked_topics(ack, req.remaining)
                req.remaining.difference_update(topics)
                if not req.remaining:
                    del self._pending[ack.id]  # type: ignore[arg-type]
        if req is None:
            logger.warning("ack with unknown id %s (%s) ignored", scrub(repr(ack.id)), ack.op)
            return
        self._mark_streaming(conn, "subscriptions acknowledged")
        if req.op != "subscribe":
            if not ack.success:
                logger.warning("unsubscribe of %s refused: %s", topics, scrub(ack.message or ""))
            return
        now_ms = int(time.time() * 1000)
        for topic in topics:
            route = self._routes.get(topic)
            if route is None:
                continue
            if ack.success:
                if route.book is not None:
                    route.book._expect_snapshot()
                with self._lock:
                    route.watch.arm(self._clock(), route.messages)
                route.ready.set()
                if route.gap_start is not None:
                    start, route.gap_start = route.gap_start, None
                    route.gaps += 1
                    self._on_gap(conn.name, GapEvent(topic, start, now_ms))
            else:
                self.failed_acks += 1
                reason = scrub(ack.message) if ack.message else "refused by server"
                logger.warning("subscribe %s refused: %s", topic, reason)
                route.error = SubscriptionError(topic, reason)
                route.ready.set()
                self._on_failed(route)
                # never paced away: a refusal drops the topic from the desired set, and
                # there are at most as many as subscribes (a flood of malformed frames in
                # the same second must not hide it)
                self._report_error(route.error)

    def _on_malformed(self, event: Malformed, payload: bytes) -> None:
        """Count and report a frame we could not read; if it failed to parse, or names one
        of our depth topics, the books it may have been meant for are resynced (a lost depth
        update would leave them one update behind, saying ``synced``)."""
        self.malformed += 1
        reason, text = scrub(event.reason), scrub(event.text[:120])
        self._report(ProtocolError(f"malformed frame ({reason}): {text!r}"))
        routes = self._routes
        books = [r for r in routes.values() if r.book is not None]
        if not books:
            return
        raw = payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
        named = {m.decode("ascii") for m in _TOPIC_TOKEN.findall(raw)}
        ours = [r for r in routes.values() if r.topic in named]
        if ours:
            targets = [r for r in ours if r.book is not None]
        elif unparsed(event):
            targets = books  # it could have been any of them
        else:
            return  # well-formed JSON about none of our topics: no book could have lost data
        for route in targets:
            book = route.book
            if book is not None and book._bad_payload(f"unparseable frame ({reason})"):
                self.unparsed_resyncs += 1
                self.resync(route, "unparseable frame")

    def _check_liveness(self, conn: Connection, now: float) -> None:
        """Judge every topic's silence (see :class:`~sixmm.protocol.liveness.TopicWatch`)."""
        backoff = self._liveness.repeat_backoff
        last_rx = conn.last_rx
        silent: List[Tuple[Route, Silence]] = []
        with self._lock:
            for route in self._routes.values():
                found = route.watch.check(now, route.messages, last_rx, backoff)
                if found is not None:
                    silent.append((route, found))
        for route, found in silent:
            self._silent(conn, route, found)

    def _silent(self, conn: Connection, route: Route, found: Silence) -> None:
        """Heal one silent topic: resubscribe it alone, tell on_error and on_state."""
        self.topic_silences += 1
        error = TopicSilent(route.topic, found.silent_for, found.bound, found.streak)
        logger.warning("%s", error)
        if route.gap_start is None:  # its messages of the silence may be missing: on_gap
            route.gap_start = (
                route.last_ts if route.last_ts is not None else int(time.time() * 1000)
            )
        if route.book is not None:
            self.resync(route, f"topic silent for {found.silent_for:.1f}s")
        elif self._open:
            self._send(conn, "unsubscribe", [route.topic], resync=True)
            self._send(conn, "subscribe", [route.topic], resync=True)
        self._report_error(error)
        if self._on_topic_event is not None:
            self._on_topic_event(conn.name, route.topic, str(error))

    def _mark_streaming(self, conn: Connection, reason: str) -> None:
        self._streaming = True
        conn.mark_streaming(reason)

    def _unknown(self, push: Push) -> None:
        until = self._late.get(push.topic)
        if until is not None and until >= self._clock():
            self.late_pushes += 1
            return
        self.unknown_topic += 1
        topic = scrub(push.topic if len(push.topic) <= 200 else push.topic[:200] + "...")
        self._report(ProtocolError(f"push for a topic not subscribed here: {topic!r}"))

    def _send(self, conn: Connection, op: str, topics: List[str], resync: bool = False) -> None:
        rid = self._ids.next()
        text = (
            encode_subscribe(rid, topics) if op == "subscribe" else encode_unsubscribe(rid, topics)
        )
        with self._lock:
            self._pending[rid] = _Request(op, topics, self._clock(), resync)
        if not conn.send(text):
            with self._lock:
                self._pending.pop(rid, None)

    def _report(self, error: BaseException) -> None:
        """Report to ``on_error``, at most a few per second (the rest are only counted)."""
        now = self._clock()
        start, count = self._report_window
        if now - start >= 1.0:
            start, count = now, 0
        if count < _REPORTS_PER_SECOND:
            self._report_error(error)
        self._report_window = (start, count + 1)

    def stats(self) -> Dict[str, Any]:
        return {
            "topics": len(self._routes),
            "pending_acks": len(self._pending),
            "malformed": self.malformed,
            "unknown_topic": self.unknown_topic,
            "late_pushes": self.late_pushes,
            "unmatched_acks": self.unmatched_acks,
            "failed_acks": self.failed_acks,
            "resyncs": self.resyncs,
            "pongs": self.pongs,
            "topic_silences": self.topic_silences,
            "unparsed_resyncs": self.unparsed_resyncs,
        }
