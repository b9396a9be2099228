"""``Sandbox``: a local 6MM exchange in a background thread, with fault injection.

One aiohttp server on one port serves REST and the WebSocket ``/ws``; its asyncio loop runs
in a daemon thread named ``sixmm-sandbox``. Public methods marshal onto that loop, so they
may be called from any thread (including from the loop itself, e.g. inside a callback).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from .server import Records, Server, Settings
from .wire import ACK_STYLES, AUTH_FAILURES, DEPTH_STYLES, TRADE_STYLES

__all__ = ["Sandbox"]

T = TypeVar("T")
_CALL_TIMEOUT = 10.0


class Sandbox:
    """A local 6MM exchange (public market, private user stream, REST) for tests and demos.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The market is a seeded
    simulation: the same ``seed`` gives the same sequence of books, trades and tickers.
    ``depth_style`` picks a depth wire variant (see ``sixmm.sandbox.wire.DEPTH_STYLES``);
    ``depth_quirks`` (default on) makes some snapshots be followed by a stale resend of the
    previous update or by an update whose range overlaps the snapshot, as the continuity
    rules allow. ``replay_on_connect=N`` replays the last N user events to every new private
    connection (to test de-duplication). A connection with more than ``max_queue`` frames
    waiting to be sent is dropped as a slow consumer, as exchanges do.

    Variants of [assumed] shapes, for client leniency tests: ``ack_style`` ``"doc"`` |
    ``"msg_field"`` (failure reason in ``msg``) | ``"numeric_ids"`` (digit ids echoed as
    numbers); ``trade_style`` ``"list"`` | ``"object"`` (one push per trade, ``data`` a dict);
    ``auth_failure`` ``"frame"`` (auth ack with ``success: false`` then close) | ``"close"``
    (just close).

    ``replay=PATH`` serves a sixmm recording instead of the simulated market (see
    ``sixmm.sandbox.replaysource``): it plays from the first subscribe or private auth, at
    ``replay_speed`` times the recorded pace (``None``: flat out).

    Thread-safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        port: int = 0,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        symbols: Tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        tick_interval: float = 0.02,
        ticker_interval: float = 0.5,
        kline_interval: float = 1.0,
        user_event_interval: float = 1.0,
        depth_levels: int = 50,
        depth_style: str = "doc",
        depth_quirks: bool = True,
        listen_key_ttl: float = 3600.0,
        api_key: str = "sandbox-key",
        api_secret: str = "sandbox-secret",
        username: str = "sandbox",
        password: str = "sandbox-password",
        user_id: str = "1188041528",
        replay_on_connect: int = 0,
        max_queue: int = 100_000,
        ack_style: str = "doc",
        trade_style: str = "list",
        auth_failure: str = "frame",
        replay: Optional[str] = None,
        replay_speed: Optional[float] = 1.0,
    ) -> None:
        for name, value, allowed in (
            ("depth_style", depth_style, DEPTH_STYLES),
            ("ack_style", ack_style, ACK_STYLES),
            ("trade_style", trade_style, TRADE_STYLES),
            ("auth_failure", auth_failure, AUTH_FAILURES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        if replay is not None:  # serve a recording (sixmm.sandbox.replaysource): no simulation
            from .replaysource import recording_symbols

            replay = str(replay)
            symbols = recording_symbols(replay)
            tick_interval = user_event_interval = 0.0
        self._settings = Settings(
            host=host,
            port=port,
            seed=seed,
            symbols=tuple(symbols),
            tick_interval=tick_interval,
            ticker_interval=ticker_interval,
            kline_interval=kline_interval,
            user_event_interval=user_event_interval,
            depth_levels=depth_levels,
            depth_style=depth_style,
            depth_quirks=depth_quirks,
            listen_key_ttl=listen_key_ttl,
            api_key=api_key,
            api_secret=api_secret,
            username=username,
            password=password,
            user_id=user_id,
            replay_on_connect=replay_on_connect,
            max_queue=max_queue,
            ack_style=ack_style,
            trade_style=trade_style,
            auth_failure=auth_failure,
            replay=replay,
            replay_speed=replay_speed,
        )
        self._records = Records()
        self._server = Server(self._settings, self._records)
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped = False
        self._shutdown_request: Optional[asyncio.Event] = None
        self.port = port
        self.host = host

    # ------------------------------------------------------------- lifecycle
    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/ws`` (valid after :meth:`start`)."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` (valid after :meth:`start`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The API key the sandbox accepts."""
        return self._settings.api_key

    @property
    def api_secret(self) -> str:
        """The API secret the sandbox signs with."""
        return self._settings.api_secret

    @property
    def user_id(self) -> str:
        """The sandbox user's id (sent in the private auth ack)."""
        return self._settings.user_id

    @property
    def symbols(self) -> Tuple[str, ...]:
        """The symbols the market simulates."""
        return self._settings.symbols

    def start(self, timeout: float = 10.0) -> Sandbox:
        """Start the server thread and wait until it listens; idempotent. Raises on failure."""
        with self._lock:
            if self._thread is not None:
                return self
            if self._stopped:
                raise RuntimeError("a stopped Sandbox cannot be restarted; make a new one")
            self._thread = threading.Thread(target=self._run, name="sixmm-sandbox", daemon=True)
            self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"sandbox did not start within {timeout}s")
        if self._start_error is not None:
            error = self._start_error
            self.stop()
            raise RuntimeError(f"sandbox failed to start: {error}") from error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every socket, stop the server and join its thread; idempotent."""
        with self._lock:
            self._stopped = True
            thread, loop = self._thread, self._loop
        if thread is None:
            return
        request = self._shutdown_request
        if request is not None and loop is not None:  # else _main will see _stopped itself
            if threading.current_thread() is thread:
                request.set()  # called on the loop itself: it stops after this callback
                return
            try:
                loop.call_soon_threadsafe(request.set)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()

    async def _main(self) -> None:
        request = asyncio.Event()
        self._shutdown_request = request
        try:
            self.port = await self._server.start()
        except BaseException as exc:  # report any bind/setup failure to start()
            self._start_error = exc
            self._ready.set()
            await self._server.stop()
            return
        self._ready.set()
        if self._stopped:
            request.set()
        await request.wait()
        await self._server.stop()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server loop and return its result (directly if already there)."""
        loop = self._loop
        thread = self._thread
        if (
            loop is None
            or thread is None
            or threading.current_thread() is thread
            or not self._ready.is_set()
            or loop.is_closed()
        ):
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # loop closed between the check and the call
            return fn()
        return future.result(_CALL_TIMEOUT)

    def _symbol(self, symbol: str) -> str:
        if symbol not in self._settings.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")
        return symbol

    @property
    def replay_finished(self) -> bool:
        """With ``replay=``: True once every frame of the recording was sent."""
        return self._call(
            lambda: self._server.replay is not None and bool(self._server.replay.finished)
        )

    # --------------------------------------------------------- fault injection
    def drop_all(self) -> int:
        """Abort every WebSocket (TCP close, no close frame); return how many."""
        return self._call(self._server.drop_all)

    def go_silent(self, seconds: Optional[float] = None) -> None:
        """Keep sockets open but send nothing and answer nothing (ops, pings); ``None`` = until
        :meth:`resume`. Frames produced meanwhile are lost, not delayed."""
        self._call(lambda: self._server.go_silent(seconds))

    def resume(self) -> None:
        """End :meth:`go_silent`."""
        self._call(lambda: self._server.go_silent(0.0))

    def skip_versions(self, symbol: str, n: int = 1) -> None:
        """The next depth update of ``symbol`` jumps ``n`` versions; the skipped changes are
        applied to the ground truth but never sent (a real gap)."""
        self._symbol(symbol)

        def run() -> None:
            assert self._server.market is not None
            self._server.market.skip(symbol, n)

        self._call(run)

    def cross_book(self, symbol: str) -> None:
        """Publish ONE corrupt update (next version) putting a bid at the best ask; the ground
        truth only advances its version."""
        self._symbol(symbol)
        self._call(lambda: self._server.cross_book(symbol))

    def send_malformed(self, text: Optional[str] = None, count: int = 1) -> None:
        """Send ``text`` (default: a set of garbage frames) ``count`` times to every socket."""
        self._call(lambda: self._server.send_malformed(text, count))

    def reject_next_subscribe(
        self, topic: Optional[str] = None, message: str = "subscription rejected"
    ) -> None:
        """The next subscribe naming ``topic`` (or any, if ``None``) gets ``success: false``."""
        self._call(lambda: self._server.reject_subs.append((topic, message)))

    def expire_listen_key(self, key: Optional[str] = None) -> None:
        """Expire one key (or all): their sockets are closed, renew and auth then fail."""

        def run() -> None:
            for k in self._server.auth.expire(key):
                self._server.close_key_connections(k, "listenKey expired")
            self._records.changed()

        self._call(run)

    def set_listen_key_ttl(self, seconds: float) -> None:
        """TTL of keys created or renewed from now on."""
        self._call(lambda: setattr(self._server.auth, "listen_key_ttl", seconds))

    def reject_credentials(self, on: bool = True) -> None:
        """While on, REST auth and login fail (401, code 1003) and private WS auth is refused."""
        self._call(lambda: setattr(self._server.auth, "rejecting", on))

    def set_clock_skew(self, ms: int) -> None:
        """Server clock = real clock + ``ms`` (``/v1/time``, timestamps, tolerance check)."""
        self._call(lambda: setattr(self._server, "skew_ms", int(ms)))

    def fail_next_rest(
        self,
        code: int,
        http_status: int = 200,
        count: int = 1,
        message: str = "injected failure",
        path: Optional[str] = None,
    ) -> None:
        """The next ``count`` REST calls (to ``path``, or any) fail with ``code``."""
        entry: Dict[str, Any] = {
            "code": code,
            "http_status": http_status,
            "count": count,
            "message": message,
            "path": path,
        }
        self._call(lambda: self._server.fail_rest.append(entry))

    def keys_dead_on_arrival(self, on: bool = True) -> None:
        """While on, every new listenKey is dead on arrival: creation succeeds, but the key is
        unknown to private auth, renewal and close at once (a failing key service)."""
        self._call(lambda: setattr(self._server.auth, "dead_on_arrival", on))

    def echo_refusals(self, on: bool = True) -> None:
        """While on, refusals quote the credential they refuse: the private auth ack and close
        reason quote the listenKey/token, REST auth errors the API key (and signed query) or
        token, listenKey errors the key."""
        self._call(lambda: setattr(self._server.auth, "echo_refusals", on))

    def rate_limit(
        self,
        retry_after: float,
        count: int = 1,
        target: str = "all",
        status: int = 429,
        path: Optional[str] = None,
    ) -> None:
        """Answer the next ``count`` REST calls (``target="rest"``), WebSocket upgrades
        (``"ws"``) or either (``"all"``) with ``status`` and ``Retry-After: retry_after``;
        ``path`` limits it to one path."""
        self._call(
            lambda: self._server.http_faults.add_limit(retry_after, count, target, status, path)
        )

    def stall_rest(
        self,
        seconds: Optional[float] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
        count: int = 1,
    ) -> None:
        """Hold the next ``count`` REST calls (of ``method``/``path``, or any) ``seconds``
        before answering; ``None``: never answer (until the sandbox stops)."""
        self._call(lambda: self._server.http_faults.add_stall(seconds, method, path, count))

    @property
    def issued_listen_keys(self) -> List[str]:
        """Every listenKey the sandbox ever created, dead or alive (to check for leaks)."""
        return self._call(lambda: list(self._server.auth.issued))

    @property
    def ws_upgrades(self) -> List[Dict[str, Any]]:
        """Every WebSocket upgrade attempt: ``{"t" (monotonic), "path", "status"}`` (101 when
        accepted, the injected status when rate limited)."""
        return self._call(lambda: [dict(u) for u in self._server.http_faults.upgrades])

    def set_replay_on_connect(self, n: int) -> None:
        """Replay the last ``n`` user events to each new private connection (0 = off)."""
        self._call(lambda: setattr(self._settings, "replay_on_connect", n))

    def pause_market(self) -> None:
        """Freeze the market (no depth/trade/kline/ticker frames); acks and pongs go on."""
        self._call(lambda: setattr(self._server, "paused", True))

    def resume_market(self) -> None:
        """Unfreeze the market."""
        self._call(lambda: setattr(self._server, "paused", False))

    def step(self, n: int = 1) -> None:
        """Advance the market ``n`` ticks now and publish them (meant for a paused market)."""

        def run() -> None:
            for _ in range(n):
                self._server.tick()

        self._call(run)

    def push_user_event(
        self, event_type: str = "ORDER_TRADE_UPDATE", data: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """Send one private event to every private connection; return the ``data`` sent.
        ``data`` fields override the generated ones."""
        return self._call(
            lambda: self._server.push_user(
                self._server.users.make(event_type, self._server.server_ms(), data)
            )
        )

    def silence_topic(self, topic: str, seconds: Optional[float] = None) -> None:
        """Stop sending ``topic``'s pushes (to every connection) while the connection and the
        other topics go on, as a server whose subscription died. The market keeps moving
        (a depth topic falls behind its truth). ``seconds=None``: until the topic is subscribed
        again (a resubscribe heals it, snapshot included) or :meth:`unsilence_topic`;
        ``seconds``: for that long, resubscribes or not (``math.inf``: for good)."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, not {topic!r}")
        self._call(lambda: self._server.mute_topic(topic, seconds, heal=True))

    def unsilence_topic(self, topic: Optional[str] = None) -> None:
        """End :meth:`silence_topic` for ``topic`` (or every topic)."""
        self._call(lambda: self._server.unmute_topic(topic))

    def corrupt_next_depth(self, symbol: str, how: str = "nan") -> None:
        """The next depth update of ``symbol`` reaches every subscriber unparseable (``"nan"``:
        a raw ``NaN`` token; ``"truncate"``: cut in half; ``"headless"``: its start, topic
        included, cut off); the truth applies it."""
        self._symbol(symbol)
        if how not in ("nan", "truncate", "headless"):
            raise ValueError(f"how must be 'nan', 'truncate' or 'headless', not {how!r}")
        self._call(lambda: self._server.corrupt_depth.__setitem__(symbol, how))

    def publish(self, topic: str, data: Any) -> int:
        """Push ``data`` on ``topic`` now to every connection subscribed to it (any topic the
        sandbox accepts, e.g. ``market.funding.BTCUSDT``); return how many got it."""
        return self._call(lambda: self._server.publish_raw(topic, data))

    def burst(self, symbol: str, n: int) -> None:
        """Publish ``n`` single-trade frames on ``market.trade.SYMBOL`` back to back."""
        self._symbol(symbol)
        self._call(lambda: self._server.burst(symbol, n))

    def stall_half_frame(self, seconds: Optional[float] = 60.0, interval: float = 1.0) -> int:
        """Stall every open WebSocket mid-frame: the header of a 1 KiB text frame, then one
        payload byte per ``interval`` and nothing else (no data, no pongs), so the socket
        looks alive byte by byte but no frame completes. After ``seconds`` (``None``: until the
        frame would be complete) those sockets are aborted. New connections are unaffected.
        Returns how many sockets were stalled."""
        return self._call(lambda: self._server.netfaults.stall_half_frame(seconds, interval))

    def trickle_handshake(
        self, count: int = 1, interval: float = 0.2, seconds: float = 60.0
    ) -> None:
        """Answer the next ``count`` upgrades with a ``101`` head trickled one byte per
        ``interval`` that never ends; the socket is closed after ``seconds``."""
        self._call(lambda: self._server.netfaults.trickle_handshake(count, interval, seconds))

    def redirect_upgrade(self, location: str, status: int = 301, count: int = 1) -> None:
        """Answer the next ``count`` upgrades with HTTP ``status`` and ``Location: location``
        (a client must refuse to follow it)."""
        self._call(lambda: self._server.netfaults.redirect_upgrade(location, status, count))

    # ---------------------------------------------------------------- records
    def book_truth(self, symbol: str) -> Tuple[int, Dict[str, str], Dict[str, str]]:
        """``(version, bids, asks)`` of the true book, as the exact wire strings."""
        self._symbol(symbol)

        def run() -> Tuple[int, Dict[str, str], Dict[str, str]]:
            assert self._server.market is not None
            return self._server.market.books[symbol].truth()

        return self._call(run)

    @property
    def ops(self) -> List[Dict[str, Any]]:
        """Every client op received: ``{"conn","op","id","args","t"}`` (a copy)."""
        with self._records.cond:
            return copy.deepcopy(self._records.ops)

    @property
    def rest_calls(self) -> List[Dict[str, Any]]:
        """Every REST call: ``{"method","path","query","body","headers","status","code"}``."""
        with self._records.cond:
            return copy.deepcopy(self._records.rest_calls)

    @property
    def listen_keys(self) -> Dict[str, int]:
        """Active listenKeys -> expiry (epoch ms)."""

        def run() -> Dict[str, int]:
            now = self._server.auth.wall_ms()
            return {k: exp for k, exp in self._server.auth.keys.items() if exp > now}

        return self._call(run)

    @property
    def connections(self) -> List[Dict[str, Any]]:
        """One dict per open WebSocket: ``{"id","kind","topics"}`` plus ``key``/``user`` if
        private."""
        return self._call(lambda: [c.info() for c in self._server.conns.values()])

    def clear_records(self) -> None:
        """Forget the recorded ops and REST calls (e.g. between phases of a long run)."""
        self._records.clear()

    def issue_token(self, ttl: Optional[int] = None) -> str:
        """A valid access token (as login returns), optionally with a custom TTL in seconds."""
        return self._call(lambda: self._server.auth.issue_token(ttl))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is truthy; ``False`` on timeout. Re-checked whenever the
        sandbox records something (op, REST call, connection change) and at least every 20 ms."""
        deadline = time.monotonic() + timeout
        cond = self._records.cond
        while True:
            with cond:
                generation = self._records.generation
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with cond:
                if self._records.generation == generation:
                    cond.wait(min(remaining, 0.02))
