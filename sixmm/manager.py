"""``StreamManager``: the facade users touch.

It keeps the registry of desired topics, shards them over public connections, owns the user
stream, the heartbeat and the dispatcher, and turns internal connection states into the three
public ones. Nothing starts before :meth:`StreamManager.start` (the ``with`` block calls it).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .config import (
    DEFAULT_LISTEN_KEY_RENEW_INTERVAL,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_TOPICS_PER_CONNECTION,
    DEFAULT_PING_INTERVAL,
    DEFAULT_STALE_AFTER,
    DEFAULT_WS_URL,
    Backoff,
)
from .connection import Connection
from .dispatch import Dispatcher, InlineDispatcher, Invoker
from .orderbook import OrderBook
from .private import UserSession
from .protocol.events import Event
from .protocol.frames import RequestIds, decode
from .protocol.topics import (
    TICKERS_TOPIC,
    depth_topic,
    kline_topic,
    parse_topic,
    ticker_topic,
    trade_topic,
)
from .public import PublicSession
from .states import ConnState, GapEvent, StateEvent, StreamState, public_state
from .subscriptions import Callback, Route, Subscription
from .supervisor import Heartbeat
from .transport import check_url

if TYPE_CHECKING:  # typing only: the keeper is imported when user() needs it
    from .keepalive import ListenKeyKeeper
    from .rest.client import RestClient

__all__ = ["StreamManager"]

logger = logging.getLogger(__name__)

_STATE_TOPIC = "sixmm.state"
_GAP_TOPIC = "sixmm.gap"


class StreamManager:
    """Keeps 6MM WebSocket streams alive and delivers each message to your callbacks.

    Register callbacks per channel (``trades``, ``klines``, ``ticker``, ``tickers``, ``depth``,
    ``subscribe`` for any raw topic), get live books with ``order_book``, and the private
    stream with ``user``. Connections reconnect by themselves with ``backoff``; every desired
    topic is resubscribed and every book resynced from a fresh snapshot.

    - ``on_state(StateEvent)``: a connection became CONNECTED / SUSPENDED / LOST.
    - ``on_error(exc)``: a callback raised (``CallbackError``), a frame was malformed
      (``ProtocolError``), a subscription was refused (``SubscriptionError``), credentials were
      rejected (``AuthError``)... The stream goes on unless the error is terminal.
    - ``on_gap(GapEvent)``: after a reconnect, the window (ms) in which a topic's messages may
      be missing: backfill over REST if it matters.

    Callbacks run where the ``dispatcher`` says (default: inline on the connection's reader
    thread, see the README for why); ``on_error`` runs on the thread that saw the error.

    Thread-safety: every method may be called from any thread, including from callbacks.
    """

    def __init__(
        self,
        url: str = DEFAULT_WS_URL,
        *,
        rest: Optional[RestClient] = None,
        dispatcher: Optional[Dispatcher] = None,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        stale_after: float = DEFAULT_STALE_AFTER,
        backoff: Optional[Backoff] = None,
        on_state: Optional[Callable[[StateEvent], Any]] = None,
        on_error: Optional[Callable[[BaseException], Any]] = None,
        max_topics_per_connection: int = DEFAULT_MAX_TOPICS_PER_CONNECTION,
        listen_key_renew_interval: float = DEFAULT_LISTEN_KEY_RENEW_INTERVAL,
        on_gap: Optional[Callable[[GapEvent], Any]] = None,
        allow_insecure: bool = False,
        ca_certs: Optional[str] = None,
        slow_callback: float = 0.25,
        ack_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        stable_after: float = 30.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        self.url = check_url(url, allow_insecure=allow_insecure)
        if ping_interval <= 0 or stale_after <= 0:
            raise ValueError("ping_interval and stale_after must be > 0")
        if stale_after <= ping_interval:
            raise ValueError("stale_after must be longer than ping_interval")
        if max_topics_per_connection < 1:
            raise ValueError("max_topics_per_connection must be >= 1")
        self.rest = rest
        self._dispatcher: Dispatcher = dispatcher if dispatcher is not None else InlineDispatcher()
        self._invoker = Invoker(on_error, slow_callback=slow_callback)
        self._on_state = on_state
        self._on_gap = on_gap
        self._backoff = backoff if backoff is not None else Backoff()
        self._max_topics = max_topics_per_connection
        self._renew_interval = listen_key_renew_interval
        self._ack_timeout = ack_timeout
        self._conn_opts: Dict[str, Any] = {
            "stale_after": stale_after,
            "stable_after": stable_after,
            "connect_timeout": connect_timeout,
            "ca_certs": ca_certs,
            "max_frame_bytes": max_frame_bytes,
        }
        limits = (max_frame_bytes, max_json_depth)
        # a plain call is ~0.2 us cheaper per message than one with keyword arguments
        self._decode: Callable[[bytes], Event] = (
            decode
            if limits == (DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_JSON_DEPTH)
            else functools.partial(decode, max_bytes=max_frame_bytes, max_depth=max_json_depth)
        )
        self._ids = RequestIds()
        self._lock = threading.RLock()
        self._routes: Dict[str, Route] = {}
        self._public: List[Tuple[PublicSession, Connection]] = []
        self._user: Optional[Tuple[UserSession, Connection]] = None
        self._keeper: Optional[ListenKeyKeeper] = None
        self._states: Dict[str, StreamState] = {}
        self._started = False
        self._stopping = False
        self._done = threading.Event()
        self._heartbeat = Heartbeat(self._connections, self._send_ping, ping_interval=ping_interval)

    @classmethod
    def from_redis(cls, redis_url: str, **kwargs: Any) -> StreamManager:
        """A manager fed by bridges through Redis Streams instead of the exchange (issue 14).

        The same registration methods for public topics, models and notifications; books
        rebuilt from published snapshots and increments with the same version checks;
        ``on_gap`` when entries were trimmed away or no bridge was publishing. Bus options
        (``prefix``, ``block``, ``idle_after``, ``count``) and the usual keyword arguments
        (``dispatcher``, ``on_state``, ``on_error``, ``on_gap``...). Needs ``sixmm[bus]``.
        """
        from .bus.consumer import RedisStreamManager

        return RedisStreamManager(redis_url, **kwargs)

    # -- context manager and life cycle -------------------------------------------------

    def __enter__(self) -> StreamManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StreamManager:
        """Connect everything registered so far (idempotent). Returns ``self``."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("a stopped StreamManager cannot be restarted; create a new one")
            if self._started:
                return self
            self._started = True
            self._dispatcher.start(self._invoker)
            conns = self._connections()
        for conn in conns:
            conn.start()
        self._heartbeat.start()
        logger.info("stream manager started (%d connection(s))", len(conns))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, close the listenKey, join every thread (idempotent; safe
        from inside a callback). ``timeout`` bounds the whole stop."""
        with self._lock:
            already, self._stopping = self._stopping, True
            conns = self._connections()
            keeper = self._keeper
        if already:
            if not self._in_sixmm_thread():
                self._done.wait(timeout)
                self._join_stopped(timeout)
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        for conn in conns:  # wake all first, then join: they stop in parallel
            conn.stop(0)
        for conn in conns:
            conn.stop(left())
        if keeper is not None:
            keeper.stop(left())
        self._heartbeat.stop(left())
        self._dispatcher.stop(left())
        self._done.set()
        logger.info("stream manager stopped")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until :meth:`stop` (or until every connection is lost for good).

        Ctrl-C while waiting stops the manager cleanly and returns. Returns False if
        ``timeout`` passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                step = (
                    0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
                )
                if self._done.wait(step):
                    self._join_stopped(5.0)
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        except KeyboardInterrupt:
            logger.info("interrupted: stopping")
            self.stop()
            return True

    def _join_stopped(self, timeout: float) -> None:
        """After a stop() begun on one of our own threads (a callback called it), join that
        thread too, so ``wait()``/``stop()`` return with no sixmm thread left running."""
        if not self._stopping or self._in_sixmm_thread():
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        for conn in self._connections():
            conn.stop(left())
        self._heartbeat.stop(left())
        self._dispatcher.stop(left())

    # -- subscribing --------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callback) -> Subscription:
        """Deliver every push of ``topic`` to ``callback``.

        Known channels deliver typed models (``Trade``, ``Kline``, ``Ticker``, a list of
        ``Ticker`` for ``market.tickers``, ``DepthUpdate``); any other topic delivers the
        envelope dict. Several callbacks per topic are fine.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        channel = self._channel_of(topic)
        with self._lock:
            route = self._route(topic, channel)
            route.callbacks = (*route.callbacks, callback)
        return Subscription(self, route, callback, "callback")

    def trades(self, symbol: str, callback: Callback) -> Subscription:
        """Each trade of ``symbol`` as a :class:`~sixmm.Trade` (one call per trade)."""
        return self.subscribe(trade_topic(symbol), callback)

    def klines(self, symbol: str, interval: str, callback: Callback) -> Subscription:
        """Klines of ``symbol`` at ``interval`` (``1m 5m 15m 30m 1h 4h 1d 1w 1M``)."""
        return self.subscribe(kline_topic(symbol, interval), callback)

    def ticker(self, symbol: str, callback: Callback) -> Subscription:
        """The ticker summary of ``symbol`` as a :class:`~sixmm.Ticker`."""
        return self.subscribe(ticker_topic(symbol), callback)

    def tickers(self, callback: Callback) -> Subscription:
        """All-symbol tickers: each push as a list of :class:`~sixmm.Ticker`."""
        return self.subscribe(TICKERS_TOPIC, callback)

    def depth(self, symbol: str, callback: Callback) -> Subscription:
        """Raw depth messages of ``symbol`` as :class:`~sixmm.DepthUpdate` (snapshot, then
        increments). Most users want :meth:`order_book` instead."""
        return self.subscribe(depth_topic(symbol), callback)

    def order_book(self, symbol: str, on_update: Optional[Callback] = None) -> OrderBook:
        """The live local order book of ``symbol`` (the same object on every call).

        ``on_update(book)`` runs after each applied snapshot or update (state-like: a
        ``QueueDispatcher(conflate=True)`` keeps only the newest).
        """
        topic = depth_topic(symbol)
        with self._lock:
            route = self._route(topic, "depth")
            if route.book is None:
                route.book = OrderBook(topic.rsplit(".", 1)[-1])
                session = route.session
                if route.ready.is_set() and isinstance(session, PublicSession):
                    # the snapshot of this topic went by before the book existed
                    session.resync(route, "order book added")
            if on_update is not None:
                route.listeners = (*route.listeners, on_update)
            return route.book

    def user(
        self,
        on_order: Optional[Callback] = None,
        on_account: Optional[Callback] = None,
        on_event: Optional[Callback] = None,
    ) -> Subscription:
        """The private user stream: ``on_order(OrderUpdate)``, ``on_account(AccountUpdate)``,
        ``on_event(UserEvent)`` for every other event type (and for orders/accounts when their
        own callback is not given). Needs ``rest=RestClient(api_key=..., api_secret=...)`` (a
        listenKey is created, renewed, replaced and closed for you) or ``RestClient(token=...)``.
        """
        if self.rest is None:
            raise ValueError("user() needs StreamManager(rest=RestClient(...)) with credentials")
        if self.rest.auth_kind is None:
            raise ValueError("user() needs a RestClient with api_key/api_secret or a token")
        with self._lock:
            if self._user is None:
                self._user = self._make_user()
                if self._started and not self._stopping:
                    self._user[1].start()
            session = self._user[0]
            session.add_callbacks(on_order, on_account, on_event)
            return Subscription(self, session.route, (on_order, on_account, on_event), "user")  # type: ignore[arg-type]

    # -- observability ------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """A snapshot of counters: per connection, per topic, per book, the dispatcher,
        the user stream."""
        with self._lock:
            public = list(self._public)
            user = self._user
            routes = dict(self._routes)
        callback_stats = self._invoker.stats()
        no_calls = {"calls": 0, "errors": 0, "slow": 0, "p50_ms": None, "p99_ms": None}
        connections: Dict[str, Any] = {}
        for session, conn in public:
            connections[conn.name] = {**conn.stats(), **session.stats()}
        if user is not None:
            connections[user[1].name] = {**user[1].stats(), **user[0].stats()}
        topics: Dict[str, Any] = {}
        books: Dict[str, Any] = {}
        for topic, route in routes.items():
            topics[topic] = {**route.stats(), **callback_stats.get(topic, no_calls)}
            if route.book is not None:
                books[route.book.symbol] = route.book.stats()
        if user is not None:
            topics["user"] = {**user[0].route.stats(), **callback_stats.get("user", no_calls)}
        return {
            "state": self._overall_state().value,
            "connections": connections,
            "topics": topics,
            "books": books,
            "dispatcher": self._dispatcher.stats(),
            "heartbeat": {"pings_sent": self._heartbeat.pings_sent},
        }

    @property
    def state(self) -> StreamState:
        """The worst state over all connections (LOST before start and after stop)."""
        return self._overall_state()

    # -- internals: registry ------------------------------------------------------------

    @staticmethod
    def _channel_of(topic: str) -> Optional[str]:
        if not isinstance(topic, str) or not topic or len(topic) > 200 or topic != topic.strip():
            raise ValueError(f"invalid topic: {topic!r}")
        if topic.startswith("user."):
            raise ValueError("private topics are not subscribed: use StreamManager.user()")
        if topic.startswith("market."):
            return parse_topic(topic).channel  # ValueError names the bad part
        if any(c.isspace() for c in topic):
            raise ValueError(f"invalid topic: {topic!r}")
        return None  # a raw topic outside the known grammar: delivered as the envelope dict

    def _route(self, topic: str, channel: Optional[str]) -> Route:
        """The route for ``topic``, created and assigned to a connection if new (lock held)."""
        if self._stopping:
            raise RuntimeError("StreamManager is stopped")
        route = self._routes.get(topic)
        if route is not None:
            return route
        route = Route(topic, channel)
        self._routes[topic] = route
        session = self._session_with_room()
        session.add(route)
        return route

    def _session_with_room(self) -> PublicSession:
        for session, _conn in self._public:
            if len(session) < self._max_topics:
                return session
        name = f"public-{len(self._public)}"
        session = PublicSession(
            self.url,
            ids=self._ids,
            dispatcher=self._dispatcher,
            report=functools.partial(self._dispatcher.report, name),
            on_gap=self._emit_gap,
            on_failed=self._route_failed,
            decode=self._decode,
            ack_timeout=self._ack_timeout,
        )
        conn = Connection(
            name,
            session,
            backoff=self._backoff,
            on_state=self._conn_state,
            report=functools.partial(self._dispatcher.report, name),
            **self._conn_opts,
        )
        session.bind(conn)
        self._public.append((session, conn))
        if self._started and not self._stopping:
            conn.start()
        return session

    def _make_user(self) -> Tuple[UserSession, Connection]:
        from .keepalive import ListenKeyKeeper

        assert self.rest is not None
        route = Route("user", "user")
        conn_holder: List[Connection] = []
        keeper = None
        if self.rest.auth_kind == "hmac":
            keeper = ListenKeyKeeper(
                self.rest,
                renew_interval=self._renew_interval,
                on_new_key=lambda key: conn_holder[0].restart("new listenKey"),
                on_status=self._keeper_status,
                on_fatal=lambda exc: conn_holder[0].fail(exc),
            )
        self._keeper = keeper
        session = UserSession(
            self.url,
            self.rest,
            keeper,
            route,
            ids=self._ids,
            dispatcher=self._dispatcher,
            report=functools.partial(self._dispatcher.report, "user"),
            on_gap=self._emit_gap,
            decode=self._decode,
            auth_timeout=self._ack_timeout,
        )
        conn = Connection(
            "user",
            session,
            backoff=self._backoff,
            on_state=self._conn_state,
            report=functools.partial(self._dispatcher.report, "user"),
            **self._conn_opts,
        )
        conn_holder.append(conn)
        session.bind(conn)
        return session, conn

    def _release(self, route: Route, callback: Any, slot: str) -> None:
        """Undo one registration (called by :meth:`Subscription.unsubscribe`)."""
        with self._lock:
            if slot == "user":
                if self._user is not None:
                    self._user[0].remove_callbacks(callback)
                return
            if slot == "callback":
                cbs = list(route.callbacks)
                if callback in cbs:
                    cbs.remove(callback)
                route.callbacks = tuple(cbs)
            if route.empty and self._routes.get(route.topic) is route:
                del self._routes[route.topic]
                self._invoker.forget(route.topic)
                session = route.session
                if isinstance(session, PublicSession):
                    session.remove(route)

    def _route_failed(self, route: Route) -> None:
        """A subscribe was refused: forget the topic (no retry storm on reconnects)."""
        with self._lock:
            if self._routes.get(route.topic) is route:
                del self._routes[route.topic]
                self._invoker.forget(route.topic)
        session = route.session
        if isinstance(session, PublicSession):
            session.remove(route, unsubscribe=False)  # refused: nothing to unsubscribe

    def _connections(self) -> List[Connection]:
        with self._lock:
            conns = [conn for _s, conn in self._public]
            if self._user is not None:
                conns.append(self._user[1])
            return conns

    def _send_ping(self, conn: Connection) -> None:
        session = conn.session
        if isinstance(session, (PublicSession, UserSession)):
            conn.send(session.ping_text())

    # -- internals: events --------------------------------------------------------------

    def _conn_state(self, conn: Connection, new: ConnState, reason: str) -> None:
        state = public_state(new)
        if state is None:
            return
        previous = self._states.get(conn.name)
        if previous is None and new in (ConnState.CONNECTING, ConnState.OPEN):
            return  # the first connect: nothing was lost yet
        if state is previous and new is not ConnState.BACKOFF:
            return  # every failed attempt is reported (with its reason), not every step
        self._states[conn.name] = state
        if self._on_state is not None:
            event = StateEvent(state, reason, conn.name)
            self._dispatcher.submit(conn.name, _STATE_TOPIC, (self._on_state,), event, False)
        others = self._connections()
        if (
            new is ConnState.CLOSED
            and not self._stopping
            and all(not c.alive or c is conn for c in others)
        ):
            self._done.set()

    def _emit_gap(self, lane: str, gap: GapEvent) -> None:
        logger.info("gap on %s: %d..%d ms", gap.topic, gap.start, gap.end)
        if self._on_gap is not None:
            self._dispatcher.submit(lane, _GAP_TOPIC, (self._on_gap,), gap, False)

    def _keeper_status(self, kind: str, reason: str) -> None:
        log = logger.warning if kind in ("renew_failed", "fatal") else logger.info
        log("listenKey %s: %s", kind, reason)
        user = self._user
        if self._on_state is None or user is None:
            return
        state = self._states.get(user[1].name)
        if state is None:
            if kind == "created":  # before the first connect: CONNECTED follows
                return
            state = StreamState.SUSPENDED
        text = reason if reason.startswith("listenKey") else f"listenKey {kind}: {reason}"
        event = StateEvent(state, text, user[1].name)
        self._dispatcher.submit(user[1].name, _STATE_TOPIC, (self._on_state,), event, False)

    def _overall_state(self) -> StreamState:
        if not self._started or self._stopping:
            return StreamState.LOST
        states = [self._states.get(c.name) for c in self._connections()]
        if not states:
            return StreamState.CONNECTED
        if any(s is StreamState.LOST for s in states):
            return StreamState.LOST
        if all(s is StreamState.CONNECTED for s in states):
            return StreamState.CONNECTED
        return StreamState.SUSPENDED

    def _in_sixmm_thread(self) -> bool:
        return threading.current_thread().name.startswith("sixmm-")

    def __repr__(self) -> str:
        state = self._overall_state().value
        return f"<StreamManager {self.url} state={state} topics={len(self._routes)}>"
