"""The public market-data session as a state machine: desired topics, acks, routing, resyncs.

On every ``opened`` it subscribes every desired topic in one request; it matches every ack to
its request by id; it routes each push to its topic's callbacks (through ``deliver``) or order
book; a book that reports a gap or a crossed state is resynced by resubscribing that one depth
topic. Pushes for topics this engine did not subscribe are counted and reported, never
delivered; pushes still in flight after an unsubscribe are expected for :data:`LATE_GRACE`.

At ``tick`` it expires unanswered subscribes (reported, resent), re-asks for snapshots that
did not come, and judges each topic's liveness (:mod:`sixmm.protocol.liveness`): a topic silent
past its bound while the connection goes on receiving frames is resubscribed alone (a book is
unsynced and rebuilt), reported as :class:`~sixmm.errors.TopicSilent` and to ``on_state``
(:class:`~sixmm.protocol.engine.TopicNotice`). A frame that fails to parse resyncs the books it
names (every book here if it names none of our topics). Server text is scrubbed
(:func:`sixmm.protocol.redact.scrub`) before it goes into any action.

Routes are :class:`sixmm.subscriptions.Route` records (duck-typed here): the registry owns
them; the engine reads their callbacks and book and keeps their counters.

Pure: no threads, sockets or clocks (see :mod:`sixmm.protocol.engine`).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from sixmm.config import DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_JSON_DEPTH
from sixmm.errors import ProtocolError, SubscriptionError, TopicSilent
from sixmm.protocol import depth as _depth
from sixmm.protocol import frames as _frames
from sixmm.protocol.book import Outcome
from sixmm.protocol.depth import DepthMsg, parse_depth
from sixmm.protocol.engine import (
    Deliver,
    EngineBase,
    Gap,
    Ready,
    Refused,
    Report,
    Send,
    SocketState,
    TopicNotice,
)
from sixmm.protocol.events import Ack, Event, Malformed, Pong, Push
from sixmm.protocol.frames import (
    RequestIds,
    acked_topics,
    decode,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
    unparsed,
)
from sixmm.protocol.liveness import DEFAULT_LIVENESS, Liveness, Silence
from sixmm.protocol.models import DepthUpdate, convert
from sixmm.protocol.redact import scrub

__all__ = ["LATE_GRACE", "TICK", "PublicEngine"]

logger = logging.getLogger(__name__)

# enum member lookups cost ~75 ns each on the per-frame path: bind them once
_APPLIED = Outcome.APPLIED
_SNAPSHOT = Outcome.SNAPSHOT
_GAP = Outcome.GAP
_CROSSED = Outcome.CROSSED
_CLOSED = SocketState.CLOSED
_OPEN = SocketState.OPEN
#: After an unsubscribe, pushes still in flight for the topic are expected for this long.
LATE_GRACE = 5.0
#: How often a streaming engine with a liveness bound wants a tick (seconds).
TICK = 1.0
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


class PublicEngine(EngineBase):
    """One shard of public topics over one socket at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        ids: RequestIds,
        deliver: Deliver,
        lane: str = "public",
        decode: Callable[[bytes], Event] = decode,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        liveness: Liveness = DEFAULT_LIVENESS,
        wall_offset: float = 0.0,
    ) -> None:
        super().__init__(deliver, lane, wall_offset)
        self._ids = ids
        self._decode = decode
        # the default decode's C common case is called from receive() itself: one Python
        # frame less per message (the module attributes are read per call, so switching the
        # C paths off in frames/depth switches them off here too)
        self._direct = decode is _frames.decode
        self._ack_timeout = ack_timeout
        self._liveness = liveness
        self.routes: Dict[str, Any] = {}  # topic -> Route; replaced on change, never mutated
        self._pending: Dict[str, _Request] = {}
        self._late: Dict[str, float] = {}
        self._last_tick = float("-inf")
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

    def __len__(self) -> int:
        return len(self.routes)

    # -- the registry's side ------------------------------------------------------------

    def add(self, route: Any, now: float) -> None:
        """Desire ``route.topic``; subscribe now if the socket is open."""
        routes = dict(self.routes)
        routes[route.topic] = route
        self.routes = routes
        self._late.pop(route.topic, None)
        if self.state is not _CLOSED:
            self._send("subscribe", [route.topic], now)

    def remove(self, route: Any, now: float, *, unsubscribe: bool = True) -> bool:
        """Stop desiring ``route.topic`` (False if it was not ours); unsubscribe now if the
        socket is open."""
        topic: str = route.topic
        if self.routes.get(topic) is not route:
            return False
        routes = dict(self.routes)
        del routes[topic]
        self.routes = routes
        self._late[topic] = now + LATE_GRACE
        if unsubscribe and self.state is not _CLOSED:
            self._send("unsubscribe", [topic], now)
        return True

    def resync(self, route: Any, reason: str, now: float) -> None:
        """Rebuild ``route``'s book from a fresh snapshot: unsubscribe + subscribe that topic."""
        book = route.book
        if book is None:
            return
        self.resyncs += 1
        book._begin_resync(reason)
        route.resync_at = now
        route.watch.disarm()  # judged again once the resubscribe is acknowledged
        logger.warning("book %s: %s; resubscribing %s", book.symbol, reason, route.topic)
        if self.state is not _CLOSED:
            self._send("unsubscribe", [route.topic], now, resync=True)
            self._send("subscribe", [route.topic], now, resync=True)

    def ping_text(self) -> str:
        """An application ping request."""
        return encode_ping(self._ids.next())

    # -- the socket's side --------------------------------------------------------------

    def opened(self, now: float) -> None:
        """A socket opened: subscribe every desired topic in one request."""
        self._move(_OPEN)
        self._pending.clear()
        topics = list(self.routes)
        if topics:
            self._send("subscribe", topics, now)
        else:
            self._streaming("connected (no topics yet)")

    def closed(self, reason: str, now: float) -> None:
        """The socket is gone: books unsynced, outage windows opened."""
        self._move(_CLOSED)
        self._pending.clear()
        now_ms = self.wall_ms(now)
        for route in self.routes.values():
            route.watch.disarm()
            if route.gap_start is None:
                route.gap_start = route.last_ts if route.last_ts is not None else now_ms
            if route.book is not None:
                route.book._begin_resync(f"connection lost: {reason}")

    def receive(self, payload: bytes, now: float) -> None:
        """One inbound data message (the hot path)."""
        event: Any = None
        c_decode = _frames._c_decode
        if self._direct and c_decode is not None and payload.__class__ is bytes:
            try:
                event = c_decode(
                    payload, _frames._loads, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_JSON_DEPTH, Push
                )
                if event is not None and event.__class__ is not Push:
                    event = _frames._event(event[0], payload)
            except Exception:  # decode() meets it again and makes it a Malformed
                event = None
        if event is None:
            event = self._decode(payload)
        if event.__class__ is Push:
            push: Push = event
            route = self.routes.get(push.topic)
            if route is None:
                self._unknown(push, now)
                return
            if self.state is _OPEN:  # data for our topics proves the server took us
                self._streaming("data flowing")
            route.messages += 1
            ts = push.ts
            if ts is not None:
                route.last_ts = ts
                if route.messages & 63 == 1:  # sample the exchange-to-receive lag
                    route.lag_ms = self.wall_ms(now) - ts
            if route.channel == "depth":
                self._on_depth(route, push, now)
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
                    self._report(
                        ProtocolError(f"bad {route.topic} payload: {scrub(str(exc))}"), now
                    )
                    return
            deliver, lane, topic, conflate = self.deliver, self.lane, route.topic, route.conflate
            for item in items:
                deliver(lane, topic, callbacks, item, conflate)
            return
        if event.__class__ is Malformed:
            self._on_malformed(event, payload, now)
            return
        cls = event.__class__
        if cls is Ack:
            self._on_ack(event, now)
        elif cls is Pong:
            self.pongs += 1
        else:
            self.malformed += 1
            self._report(ProtocolError(f"unexpected {cls.__name__} on a public connection"), now)

    def tick(self, now: float, last_rx: float) -> None:
        """Deadlines: unanswered subscribes, snapshots that did not come, silent topics.
        ``last_rx`` is when the socket last completed any frame."""
        self._last_tick = now
        for topic, until in list(self._late.items()):
            if until < now:
                del self._late[topic]
        expired: List[_Request] = []
        for rid, req in list(self._pending.items()):
            if now - req.sent_at > self._ack_timeout:
                del self._pending[rid]
                expired.append(req)
        for req in expired:
            topics = sorted(t for t in req.remaining if t in self.routes)
            if req.op != "subscribe" or not topics:
                continue
            self._report(
                ProtocolError(
                    f"no ack within {self._ack_timeout:.0f}s for subscribe {topics}; resending"
                ),
                now,
            )
            self._send("subscribe", topics, now, resync=req.resync)
        if self.state is _CLOSED:
            return
        for route in list(self.routes.values()):
            wait = self._snapshot_wait(route)
            if wait is not None and now - route.resync_at > wait:
                route.watch.streak += 1
                self.resync(route, "no snapshot after resubscribe", now)
        if self.state is SocketState.STREAMING:
            self._check_liveness(now, last_rx)

    def next_deadline(self) -> Optional[float]:
        """When the next ``tick`` is needed (None: nothing pending, nothing watched)."""
        best: Optional[float] = None
        for req in self._pending.values():
            due = req.sent_at + self._ack_timeout
            if best is None or due < best:
                best = due
        if self.state is _CLOSED:
            return best
        watching = False
        for route in self.routes.values():
            wait = self._snapshot_wait(route)
            if wait is not None:
                due = route.resync_at + wait
                if best is None or due < best:
                    best = due
            if route.watch.armed and route.watch.bound is not None:
                watching = True
        if watching and self.state is SocketState.STREAMING:
            due = self._last_tick + TICK
            if best is None or due < best:
                best = due
        return best

    # -- internals ----------------------------------------------------------------------

    def _snapshot_wait(self, route: Any) -> Optional[float]:
        """How long an unsynced book waits for its snapshot before it is asked again (a topic
        that keeps failing waits longer each time); None if it is not waiting."""
        book = route.book
        if book is None or book.synced or route.resync_at is None:
            return None
        streak = route.watch.streak
        backoff = self._liveness.repeat_backoff
        return self._ack_timeout + (backoff.cap(streak - 1) if streak > 0 else 0.0)

    def _on_depth(self, route: Any, push: Push, now: float) -> None:
        book = route.book
        try:
            msg = None
            c_parse = _depth._c_parse
            if c_parse is not None and _depth._c_levels is not None:  # parse_depth's C case
                known = _depth._NO_PRICES if book is None else book._known
                msg = c_parse(push.data, push.snapshot, known[0], known[1], DepthMsg)
            if msg is None:
                msg = parse_depth(
                    push.data, push.snapshot, book._known if book is not None else None
                )
            if book is not None and msg.symbol is not None and msg.symbol != book.symbol:
                raise ProtocolError(f"symbol {msg.symbol!r} on the {book.symbol} depth topic")
        except ProtocolError as exc:
            route.bad_payloads += 1
            self._report(ProtocolError(f"bad {route.topic} payload: {scrub(str(exc))}"), now)
            if book is not None and book._bad_payload(str(exc)):
                self.resync(route, "malformed depth payload", now)
            return
        if book is not None:
            outcome = book._feed(msg)
            if outcome is _APPLIED or outcome is _SNAPSHOT:
                if outcome is _SNAPSHOT:
                    route.resync_at = None
                if route.listeners:
                    self.deliver(self.lane, route.topic, route.listeners, book, True)
            elif outcome is _GAP or outcome is _CROSSED:
                self.resync(route, "version gap" if outcome is _GAP else "crossed book", now)
        if route.callbacks:
            symbol = route.topic.rsplit(".", 1)[-1]
            update = DepthUpdate.from_depth_msg(msg, ts=push.ts, symbol=symbol, raw=push.data)
            self.deliver(self.lane, route.topic, route.callbacks, update, False)

    def _on_ack(self, ack: Ack, now: float) -> None:
        req = self._pending.get(ack.id) if ack.id is not None else None
        if req is None:
            self.unmatched_acks += 1
            logger.warning("ack with unknown id %s (%s) ignored", scrub(repr(ack.id)), ack.op)
            return
        topics = acked_topics(ack, req.remaining)
        req.remaining.difference_update(topics)
        if not req.remaining:
            del self._pending[ack.id]  # type: ignore[arg-type]
        self._streaming("subscriptions acknowledged")
        if req.op != "subscribe":
            if not ack.success:
                logger.warning("unsubscribe of %s refused: %s", topics, scrub(ack.message or ""))
            return
        now_ms = self.wall_ms(now)
        for topic in topics:
            route = self.routes.get(topic)
            if route is None:
                continue
            if ack.success:
                if route.book is not None:
                    route.book._expect_snapshot()
                route.watch.arm(now, route.messages)
                self.actions.append(Ready(route))
                if route.gap_start is not None:
                    start, route.gap_start = route.gap_start, None
                    route.gaps += 1
                    self.actions.append(Gap(topic, start, now_ms))
            else:
                self.failed_acks += 1
                reason = scrub(ack.message) if ack.message else "refused by server"
                logger.warning("subscribe %s refused: %s", topic, reason)
                route.error = SubscriptionError(topic, reason)
                self.remove(route, now, unsubscribe=False)  # nothing to unsubscribe
                self.actions.append(Ready(route))
                self.actions.append(Refused(route))
                # never paced: there are at most as many refusals as subscribes (a flood of
                # malformed frames in the same second must not hide one)
                self.actions.append(Report(route.error))

    def _on_malformed(self, event: Malformed, payload: bytes, now: float) -> None:
        """Count and report a frame we could not read; if it failed to parse, or names one
        of our depth topics, the books it may have been meant for are resynced (a lost depth
        update would leave them one update behind, saying ``synced``)."""
        self.malformed += 1
        reason, text = scrub(event.reason), scrub(event.text[:120])
        self._report(ProtocolError(f"malformed frame ({reason}): {text!r}"), now)
        routes = self.routes
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
                self.resync(route, "unparseable frame", now)

    def _check_liveness(self, now: float, last_rx: float) -> None:
        """Judge every topic's silence (see :class:`~sixmm.protocol.liveness.TopicWatch`)."""
        backoff = self._liveness.repeat_backoff
        silent: List[Tuple[Any, Silence]] = []
        for route in self.routes.values():
            found = route.watch.check(now, route.messages, last_rx, backoff)
            if found is not None:
                silent.append((route, found))
        for route, found in silent:
            self._silent(route, found, now)

    def _silent(self, route: Any, found: Silence, now: float) -> None:
        """Heal one silent topic: resubscribe it alone, tell on_error and on_state."""
        self.topic_silences += 1
        error = TopicSilent(route.topic, found.silent_for, found.bound, found.streak)
        logger.warning("%s", error)
        if route.gap_start is None:  # its messages of the silence may be missing: on_gap
            route.gap_start = route.last_ts if route.last_ts is not None else self.wall_ms(now)
        if route.book is not None:
            self.resync(route, f"topic silent for {found.silent_for:.1f}s", now)
        elif self.state is not _CLOSED:
            self._send("unsubscribe", [route.topic], now, resync=True)
            self._send("subscribe", [route.topic], now, resync=True)
        self.actions.append(Report(error))
        self.actions.append(TopicNotice(route.topic, str(error)))

    def _unknown(self, push: Push, now: float) -> None:
        until = self._late.get(push.topic)
        if until is not None and until >= now:
            self.late_pushes += 1
            return
        self.unknown_topic += 1
        topic = scrub(push.topic if len(push.topic) <= 200 else push.topic[:200] + "...")
        self._report(ProtocolError(f"push for a topic not subscribed here: {topic!r}"), now)

    def _send(self, op: str, topics: List[str], now: float, resync: bool = False) -> None:
        rid = self._ids.next()
        text = (
            encode_subscribe(rid, topics) if op == "subscribe" else encode_unsubscribe(rid, topics)
        )
        self._pending[rid] = _Request(op, topics, now, resync)
        self.actions.append(Send(text))

    def stats(self) -> Dict[str, Any]:
        return {
            "topics": len(self.routes),
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
