"""``StreamManager``: the facade users touch.

It keeps the registry of desired topics, shards them over public connections, owns the user
stream, the heartbeat and the dispatcher, and turns internal connection states into the three
public ones. Nothing starts before :meth:`StreamManager.start` (the ``with`` block calls it).
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import logscrub
from .config import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LISTEN_KEY_RENEW_INTERVAL,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_TOPICS_PER_CONNECTION,
    DEFAULT_PING_INTERVAL,
    DEFAULT_SLOW_CALLBACK,
    DEFAULT_STABLE_AFTER,
    DEFAULT_STALE_AFTER,
    DEFAULT_WS_URL,
    Backoff,
)
from .connection import Connection
from .dispatch import Dispatcher, InlineDispatcher, Invoker
from .errors import ApiError, ConnectionLost
from .orderbook import OrderBook
from .private import UserSession
from .protocol.events import Event
from .protocol.frames import RequestIds, decode
from .protocol.liveness import DEFAULT_LIVENESS, Liveness, check_silence_after
from .protocol.redact import scrub
from .protocol.topics import (
    TICKERS_TOPIC,
    channel_of,
    depth_topic,
    kline_topic,
    ticker_topic,
    trade_topic,
)
from .public import PublicSession
from .ratelimit import ConnectGate, host_of, limiter
from .recording import Recorder
from .settings import Settings
from .states import ConnState, GapEvent, StateEvent, StreamState, public_state
from .subscriptions import Callback, Carrier, Route, Subscription
from .supervisor import Health, Supervisor
from .transport import check_url

if TYPE_CHECKING:  # typing only: the keeper is imported when user() needs it
    from .keepalive import ListenKeyKeeper
    from .rest.client import RestClient

__all__ = ["StreamManager"]

logger = logging.getLogger(__name__)

_STATE_TOPIC = "sixmm.state"
#: a second Ctrl-C during stop() only hurries it: it never skips closing the listenKey
_SHUTDOWN_THREAD = "sixmm-shutdown"
_GAP_TOPIC = "sixmm.gap"


def _interrupted_while_stopping(*_args: Any) -> None:
    logger.warning("interrupted again while stopping: the stop is already bounded")


def _absorb_sigint() -> Tuple[bool, Any]:
    """Make SIGINT only log (main thread only); returns (installed, the previous handler)."""
    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:  # a handler not installed from Python: leave it alone
            return False, None
        signal.signal(signal.SIGINT, _interrupted_while_stopping)
    except (ValueError, OSError, TypeError):  # not the main thread of the main interpreter
        return False, None
    return True, previous


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
      Repeated failures are paced: a failed connect reaches it as ``ConnectionLost`` (or
      ``HandshakeRejected``) the first time, on a change of reason, then every 10th attempt
      in a row (``sixmm.config.ReportPacing``); without ``on_error`` they are logged as
      warnings.
    - ``on_gap(GapEvent)``: after a reconnect, the window (ms) in which a topic's messages may
      be missing: backfill over REST if it matters.
    - ``liveness``: how long each channel may stay silent (a :class:`~sixmm.Liveness`; default
      ``DEFAULT_LIVENESS``) before that one topic is resubscribed (``TopicSilent`` to
      ``on_error``, a ``StateEvent`` with ``.topic`` to ``on_state``). Every registration
      method also takes ``silence_after=SECONDS`` for its topic (``math.inf``: never).

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
        slow_callback: float = DEFAULT_SLOW_CALLBACK,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stable_after: float = DEFAULT_STABLE_AFTER,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        liveness: Optional[Liveness] = None,
        record: Optional[str] = None,
    ) -> None:
        self.url = check_url(url, allow_insecure=allow_insecure)
        #: What this manager runs with: the keywords above, validated into one frozen value.
        self.settings = settings = Settings(
            ping_interval=ping_interval,
            stale_after=stale_after,
            backoff=backoff if backoff is not None else Backoff(),
            max_topics_per_connection=max_topics_per_connection,
            listen_key_renew_interval=listen_key_renew_interval,
            allow_insecure=allow_insecure,
            ca_certs=ca_certs,
            slow_callback=slow_callback,
            ack_timeout=ack_timeout,
            connect_timeout=connect_timeout,
            stable_after=stable_after,
            max_frame_bytes=max_frame_bytes,
            max_json_depth=max_json_depth,
            liveness=liveness if liveness is not None else DEFAULT_LIVENESS,
        )
        self.rest = rest
        self._dispatcher: Dispatcher = dispatcher if dispatcher is not None else InlineDispatcher()
        self._invoker = Invoker(on_error, slow_callback=settings.slow_callback)
        self._has_on_error = on_error is not None
        self._on_state = on_state
        self._on_gap = on_gap
        # record=PATH: a tap on every connection (sixmm.recording); replay swaps the factory
        self._recorder: Optional[Recorder] = None
        if record is not None:
            self._recorder = Recorder(
                str(record), url=self.url, report=functools.partial(self._report, "recorder")
            )
        self._new_connection: Callable[..., Connection] = Connection
        # the connections' shared processing turn (connection.py, _read_loop); with no GIL
        # (free-threaded builds) the readers may really run at once, and keep their own pace
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self._turn: Optional[threading.Lock] = threading.Lock() if gil else None
        self._session_clock: Callable[[], float] = time.monotonic
        # a plain call is ~0.2 us cheaper per message than one with keyword arguments
        self._decode: Callable[[bytes], Event] = (
            decode
            if settings.default_limits
            else functools.partial(
                decode, max_bytes=settings.max_frame_bytes, max_depth=settings.max_json_depth
            )
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
        logscrub.install()
        self._supervisor = Supervisor(
            self._connections, self._send_ping, ping_interval=settings.ping_interval
        )

    @classmethod
    def replay(cls, path: str, *, speed: Optional[float] = None, **kwargs: Any) -> StreamManager:
        """A manager that reads the recording at ``path`` instead of the network.

        The same registration methods, callbacks and notifications as a live manager; books
        rebuilt with the same checks; ``user()`` needs no credentials. ``speed=None``: as fast
        as possible; ``speed=1.0``: the recorded timing. ``wait()`` returns True once the
        recording is exhausted. See :mod:`sixmm.replay`.
        """
        from .replay import ReplayManager

        return ReplayManager(path, speed=speed, **kwargs)

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
            if self._recorder is not None:
                self._recorder.start()
                if self.rest is not None:
                    self._recorder.remember_client(self.rest)
                    self.rest.on_call = self._recorder.rest
            conns = self._connections()
        for conn in conns:
            conn.start()
        self._supervisor.start()
        logger.info("stream manager started (%d connection(s))", len(conns))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, close the listenKey, join every thread (idempotent; safe
        from inside a callback). ``timeout`` bounds the whole stop, the listenKey ``DELETE``
        included. On the main thread the work runs on a helper thread: a Ctrl-C during the
        stop is absorbed (it never skips closing the key, never escapes as a traceback)."""
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
        if threading.current_thread() is not threading.main_thread():
            self._shutdown(conns, keeper, deadline)
            return
        finished = threading.Event()

        def shutdown() -> None:
            try:
                self._shutdown(conns, keeper, deadline)
            finally:
                finished.set()

        worker = threading.Thread(target=shutdown, name=_SHUTDOWN_THREAD, daemon=True)
        # while the stop runs, a Ctrl-C only logs: a KeyboardInterrupt can otherwise surface
        # at any bytecode of the waiting loop below (a loop's jump included), not only inside
        # the try; the handler the program had comes back when the stop is done
        absorbed, previous = _absorb_sigint()
        try:
            worker.start()
            # an Event, not join(): a KeyboardInterrupt inside Thread.join() can leave the
            # thread looking finished while it still runs
            while not finished.is_set():
                try:
                    finished.wait(0.1)
                except KeyboardInterrupt:
                    _interrupted_while_stopping()
            for _ in range(50):  # it is returning now: a bounded join, interrupts absorbed
                try:
                    worker.join(0.1)
                except KeyboardInterrupt:
                    continue
                if not worker.is_alive():
                    break
        finally:
            if absorbed:
                try:
                    signal.signal(signal.SIGINT, previous)
                except (ValueError, OSError, TypeError):  # pragma: no cover
                    pass

    def _shutdown(
        self, conns: List[Connection], keeper: Optional[ListenKeyKeeper], deadline: float
    ) -> None:
        def left(reserve: float = 0.0) -> float:
            return max(0.01, deadline - time.monotonic() - reserve)

        if keeper is not None:
            keeper.interrupt()  # a reader queued for a key creation gives up now
        recorder = self._recorder
        if recorder is not None:
            recorder.mark_stop()
        for conn in conns:  # wake all first, then join: they stop in parallel
            conn.stop(0)
        for conn in conns:
            conn.stop(left(0.2))
        if keeper is not None:
            keeper.stop(left(0.1))  # the DELETE of the key fits in what is left
        self._supervisor.stop(left())
        self._dispatcher.stop(left())
        if recorder is not None:
            if self.rest is not None and self.rest.on_call == recorder.rest:
                self.rest.on_call = None
            recorder.stop(left())
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
            self.stop()  # a second Ctrl-C meanwhile is absorbed by stop()
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
        self._supervisor.stop(left())
        self._dispatcher.stop(left())

    # -- subscribing --------------------------------------------------------------------

    def subscribe(
        self, topic: str, callback: Callback, *, silence_after: Optional[float] = None
    ) -> Subscription:
        """Deliver every push of ``topic`` to ``callback``.

        Known channels deliver typed models (``Trade``, ``Kline``, ``Ticker``, a list of
        ``Ticker`` for ``market.tickers``, ``DepthUpdate``); any other well-formed topic
        (``market.funding.BTCUSDT``) delivers the envelope dict. Several callbacks per topic
        are fine. ``silence_after``: resubscribe the topic when it delivers nothing for that
        many seconds (default: the manager's ``liveness`` policy; ``math.inf``: never; with
        several registrations of one topic the smallest given wins).
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        channel = self._channel_of(topic)
        seconds = check_silence_after(silence_after)
        with self._lock:
            route = self._route(topic, channel, seconds)
            route.callbacks = (*route.callbacks, callback)
        return Subscription(self, route, callback, "callback")

    def trades(
        self, symbol: str, callback: Callback, *, silence_after: Optional[float] = None
    ) -> Subscription:
        """Each trade of ``symbol`` as a :class:`~sixmm.Trade` (one call per trade)."""
        return self.subscribe(trade_topic(symbol), callback, silence_after=silence_after)

    def klines(
        self,
        symbol: str,
        interval: str,
        callback: Callback,
        *,
        silence_after: Optional[float] = None,
    ) -> Subscription:
        """Klines of ``symbol`` at ``interval`` (``1m 5m 15m 30m 1h 4h 1d 1w 1M``)."""
        topic = kline_topic(symbol, interval)
        return self.subscribe(topic, callback, silence_after=silence_after)

    def ticker(
        self, symbol: str, callback: Callback, *, silence_after: Optional[float] = None
    ) -> Subscription:
        """The ticker summary of ``symbol`` as a :class:`~sixmm.Ticker`."""
        return self.subscribe(ticker_topic(symbol), callback, silence_after=silence_after)

    def tickers(self, callback: Callback, *, silence_after: Optional[float] = None) -> Subscription:
        """All-symbol tickers: each push as a list of :class:`~sixmm.Ticker`."""
        return self.subscribe(TICKERS_TOPIC, callback, silence_after=silence_after)

    def depth(
        self, symbol: str, callback: Callback, *, silence_after: Optional[float] = None
    ) -> Subscription:
        """Raw depth messages of ``symbol`` as :class:`~sixmm.DepthUpdate` (snapshot, then
        increments). Most users want :meth:`order_book` instead."""
        return self.subscribe(depth_topic(symbol), callback, silence_after=silence_after)

    def order_book(
        self,
        symbol: str,
        on_update: Optional[Callback] = None,
        *,
        silence_after: Optional[float] = None,
    ) -> OrderBook:
        """The live local order book of ``symbol`` (the same object on every call).

        ``on_update(book)`` runs after each applied snapshot or update (state-like: a
        ``QueueDispatcher(conflate=True)`` keeps only the newest). ``silence_after``: as for
        :meth:`subscribe` (a silent book is unsynced and rebuilt from a fresh snapshot).
        """
        topic = depth_topic(symbol)
        seconds = check_silence_after(silence_after)
        with self._lock:
            route = self._route(topic, "depth", seconds, book=True)
            if route.book is None:
                route.book = OrderBook(topic.rsplit(".", 1)[-1])
                session = route.session
                if route.ready.is_set() and session is not None:
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
            connections[conn.name] = self._conn_stats(conn, session.stats())
        if user is not None:
            connections[user[1].name] = self._conn_stats(user[1], user[0].stats())
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
            "heartbeat": {
                "pings_sent": self._supervisor.pings_sent,
                "engine_turns": self._supervisor.engine_turns,
            },
            "rate_limits": self._rate_limit_stats(),
            **({"recorder": self._recorder.stats()} if self._recorder is not None else {}),
        }

    @staticmethod
    def _conn_stats(conn: Connection, session_stats: Dict[str, Any]) -> Dict[str, Any]:
        out = {**conn.stats(), **session_stats, **conn.health.stats(time.monotonic())}
        out["last_reason"] = scrub(str(out.get("last_reason", "")))
        return out

    def _rate_limit_stats(self) -> Dict[str, Any]:
        """The process-wide limiter's view of the hosts this manager talks to."""
        hosts = {host_of(self.url)}
        if self.rest is not None:
            hosts.add(host_of(self.rest.base_url))
        every = limiter().stats()
        return {
            "policy": {
                "connects_per_second": limiter().policy.connects_per_second,
                "connect_burst": limiter().policy.connect_burst,
                "listen_keys_per_second": limiter().policy.listen_keys_per_second,
                "listen_key_burst": limiter().policy.listen_key_burst,
                "max_retry_after": limiter().policy.max_retry_after,
            },
            "hosts": {h: every[h] for h in sorted(hosts) if h in every},
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
            return channel_of(topic)  # None: a channel without a model; ValueError: bad topic
        if any(c.isspace() for c in topic):
            raise ValueError(f"invalid topic: {topic!r}")
        return None  # a raw topic outside the known grammar: delivered as the envelope dict

    def _route(
        self,
        topic: str,
        channel: Optional[str],
        silence_after: Optional[float] = None,
        *,
        book: bool = False,
    ) -> Route:
        """The route for ``topic``, created and assigned to a connection if new (lock held)."""
        if self._stopping:
            raise RuntimeError("StreamManager is stopped")
        route = self._routes.get(topic)
        if route is not None:
            if silence_after is not None:
                route.override_silence(silence_after)
            return route
        route = Route(topic, channel, self.settings.liveness.bound(topic))
        if silence_after is not None:
            route.override_silence(silence_after)
        if book:  # before the subscribe goes out: its snapshot may come back at once
            route.book = OrderBook(topic.rsplit(".", 1)[-1])
        self._routes[topic] = route
        session = self._session_with_room(topic)
        session.add(route)
        return route

    def _session_with_room(self, topic: str) -> Carrier:
        for session, _conn in self._public:
            if len(session) < self.settings.max_topics_per_connection:
                return session
        return self._new_public_session(f"public-{len(self._public)}")

    def _new_public_session(self, name: str) -> PublicSession:
        session = PublicSession(
            self.url,
            ids=self._ids,
            dispatcher=self._dispatcher,
            report=functools.partial(self._report, name),
            on_gap=self._emit_gap,
            on_failed=self._route_failed,
            decode=self._decode,
            ack_timeout=self.settings.ack_timeout,
            liveness=self.settings.liveness,
            on_topic_event=self._topic_event,
            clock=self._session_clock,
        )
        conn = self._new_connection(
            name,
            session,
            settings=self.settings,
            on_state=self._conn_state,
            report=functools.partial(self._report, name),
            tap=self._recorder,
            gate=ConnectGate(self.url),
            health=Health(self.settings),
            turn=self._turn,
        )
        session.bind(conn)
        self._public.append((session, conn))
        if self._started and not self._stopping:
            conn.start()
        return session

    def _make_user(self) -> Tuple[UserSession, Connection]:
        assert self.rest is not None
        route = Route("user", "user")
        conn_holder: List[Connection] = []
        keeper = self._new_keeper(conn_holder)
        self._keeper = keeper
        session = UserSession(
            self.url,
            self.rest,
            keeper,
            route,
            ids=self._ids,
            dispatcher=self._dispatcher,
            report=functools.partial(self._report, "user"),
            on_gap=self._emit_gap,
            decode=self._decode,
            auth_timeout=self.settings.ack_timeout,
            clock=self._session_clock,
        )
        conn = self._new_connection(
            "user",
            session,
            settings=self.settings,
            on_state=self._conn_state,
            report=functools.partial(self._report, "user"),
            tap=self._recorder,
            gate=ConnectGate(self.url),
            health=Health(self.settings),
            turn=self._turn,
        )
        conn_holder.append(conn)
        session.bind(conn)
        return session, conn

    def _new_keeper(self, conn_holder: List[Connection]) -> Optional[ListenKeyKeeper]:
        from .keepalive import ListenKeyKeeper

        assert self.rest is not None
        if self.rest.auth_kind != "hmac":
            return None
        return ListenKeyKeeper(
            self.rest,
            renew_interval=self.settings.listen_key_renew_interval,
            on_new_key=lambda key: conn_holder[0].restart("new listenKey"),
            on_status=self._keeper_status,
            on_fatal=lambda exc: conn_holder[0].fail(exc),
        )

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
                if session is not None:
                    session.remove(route)

    def _route_failed(self, route: Route) -> None:
        """A subscribe was refused: forget the topic (no retry storm on reconnects)."""
        with self._lock:
            if self._routes.get(route.topic) is route:
                del self._routes[route.topic]
                self._invoker.forget(route.topic)
        session = route.session
        if session is not None:
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

    def _report(self, lane: str, error: BaseException) -> None:
        """``on_error``, with any credential scrubbed out of the error's text (defence in
        depth: the sources scrub server-provided text already)."""
        error = _scrubbed(error)
        if not self._has_on_error and isinstance(error, ConnectionLost):
            # already paced at the source: with nobody listening, say it where people look
            logger.warning("%s: %s: %s", lane, type(error).__name__, error)
        self._dispatcher.report(lane, error)

    def _conn_state(self, conn: Connection, new: ConnState, reason: str) -> None:
        reason = scrub(reason)
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

    def _topic_event(self, lane: str, topic: str, reason: str) -> None:
        """One topic (not its connection) was healed: tell ``on_state``, state unchanged."""
        if self._on_state is None:
            return
        state = self._states.get(lane, StreamState.CONNECTED)
        event = StateEvent(state, reason, lane, topic)
        self._dispatcher.submit(lane, _STATE_TOPIC, (self._on_state,), event, False)

    def _emit_gap(self, lane: str, gap: GapEvent) -> None:
        logger.info("gap on %s: %d..%d ms", gap.topic, gap.start, gap.end)
        if self._on_gap is not None:
            self._dispatcher.submit(lane, _GAP_TOPIC, (self._on_gap,), gap, False)

    def _keeper_status(self, kind: str, reason: str, recorded: Optional[str] = None) -> None:
        """A listenKey outcome from the keeper. What ``on_state`` is told depends on the user
        connection's state, so it is decided in the user session's turn (ordered with the
        frames the reader feeds it) and recorded with the decision; a replay passes the
        recorded decision back (``recorded``: a state's value, or ``""`` for none)."""
        reason = scrub(reason)
        log = (
            logger.warning if kind in ("renew_failed", "fatal", "dead_on_arrival") else logger.info
        )
        log("listenKey %s: %s", kind, reason)
        if kind == "dead_on_arrival":  # paced by the keeper: after 3 keys, then every 10
            self._report("user", ConnectionLost(f"listenKey {kind}: {reason}"))
        user = self._user
        if user is None:
            self._keeper_event(kind, reason, None, recorded)
        else:
            user[0].submit(lambda: self._keeper_event(kind, reason, user[1], recorded))

    def _keeper_event(
        self, kind: str, reason: str, conn: Optional[Connection], recorded: Optional[str]
    ) -> None:
        try:
            state: Optional[StreamState] = None
            if recorded is not None:
                state = StreamState(recorded) if recorded else None
            elif conn is not None:
                state = self._states.get(conn.name)
                if state is None and kind != "created":  # created: CONNECTED follows
                    state = StreamState.SUSPENDED
            if self._recorder is not None:
                self._recorder.listen_key(kind, reason, "" if state is None else state.value)
            if self._on_state is None or conn is None or state is None:
                return
            text = reason if reason.startswith("listenKey") else f"listenKey {kind}: {reason}"
            event = StateEvent(state, text, conn.name)
            self._dispatcher.submit(conn.name, _STATE_TOPIC, (self._on_state,), event, False)
        except Exception:  # runs on whichever thread holds the session: never break it
            logger.exception("listenKey %s: telling on_state failed", kind)

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


def _scrubbed(error: BaseException) -> BaseException:
    """``error`` with credentials scrubbed from its string arguments (and ``ApiError.message``,
    ``SubscriptionError.reason``), in place."""
    try:
        args = tuple(scrub(a) if isinstance(a, str) else a for a in error.args)
        if args != error.args:
            error.args = args
        if isinstance(error, ApiError):
            error.message = scrub(error.message)
        reason = getattr(error, "reason", None)
        if isinstance(reason, str):
            setattr(error, "reason", scrub(reason))  # noqa: B010
    except Exception:  # an exotic exception type: report it as it is
        logger.debug("could not scrub %s", type(error).__name__)
    return error
