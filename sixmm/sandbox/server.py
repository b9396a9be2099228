"""The sandbox's aiohttp server: WebSocket ``/ws`` (public and private) plus the REST routes.

Everything here runs on one asyncio loop (the ``sixmm-sandbox`` thread owned by
:class:`sixmm.sandbox.Sandbox`). Each connection has one writer task draining its own
queue, so frames are sent in exactly the order they were produced; the market, acks and
fault injection only ever enqueue text.

Thread-safety: not thread-safe; every method must run on the server's event loop (the
``Sandbox`` facade marshals calls there).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

from aiohttp import WSMsgType, web

from .auth import Auth
from .faults import HttpFaults
from .market import DepthEvent, Market
from .netfaults import NetFaults
from .userevents import UserEvents
from .wire import MALFORMED_FRAMES, ack_frame, depth_frame, dumps, push_frame, validate_topic

__all__ = ["Conn", "Records", "Server", "Settings"]

logger = logging.getLogger(__name__)

_Item = Union[str, Tuple[str, Any]]  # text, ("pong", payload) or ("close", (code, reason))


@dataclass
class Settings:
    """Construction parameters of the sandbox server (see ``Sandbox.__init__``)."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    symbols: Tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    tick_interval: float = 0.02
    ticker_interval: float = 0.5
    kline_interval: float = 1.0
    user_event_interval: float = 1.0
    depth_levels: int = 50
    depth_style: str = "doc"
    depth_quirks: bool = True
    listen_key_ttl: float = 3600.0
    api_key: str = "sandbox-key"
    api_secret: str = "sandbox-secret"
    username: str = "sandbox"
    password: str = "sandbox-password"
    user_id: str = "1188041528"
    replay_on_connect: int = 0
    max_queue: int = 100_000
    ack_style: str = "doc"
    trade_style: str = "list"
    auth_failure: str = "frame"
    replay: Optional[str] = None  # serve this recording instead of the simulated market
    replay_speed: Optional[float] = 1.0


class Records:
    """Thread-safe logs of client ops and REST calls, with a change notification."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0
        self.ops: List[Dict[str, Any]] = []
        self.rest_calls: List[Dict[str, Any]] = []

    def clear(self) -> None:
        with self.cond:
            self.ops.clear()
            self.rest_calls.clear()
            self.generation += 1
            self.cond.notify_all()

    def changed(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def add_op(self, entry: Dict[str, Any]) -> None:
        with self.cond:
            self.ops.append(entry)
            self.generation += 1
            self.cond.notify_all()

    def add_rest(self, entry: Dict[str, Any]) -> None:
        with self.cond:
            self.rest_calls.append(entry)
            self.generation += 1
            self.cond.notify_all()


class Conn:
    """One WebSocket connection: its subscriptions and its ordered outbound queue."""

    def __init__(self, cid: int, ws: web.WebSocketResponse, transport: Any, server: Server) -> None:
        self.id = cid
        self.ws = ws
        self.transport = transport
        self.server = server
        self.kind = "public"
        self.key: Optional[str] = None
        self.user: Optional[str] = None
        self.topics: Dict[str, None] = {}
        self.overlap: Dict[str, DepthEvent] = {}  # symbol -> update to merge into the next one
        self.queue: asyncio.Queue[Optional[_Item]] = asyncio.Queue()
        self.closing = False

    def send(self, item: _Item) -> None:
        """Enqueue a frame (dropped while the server is silent)."""
        if self.closing or self.server.silent():
            return
        if self.queue.qsize() >= self.server.s.max_queue:
            logger.warning("sandbox connection %d too slow; dropping it", self.id)
            self.abort()
            return
        self.queue.put_nowait(item)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame after everything already queued."""
        if not self.closing:
            self.queue.put_nowait(("close", (code, reason)))
            self.closing = True
            self.server.forget(self)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.closing = True
        self.server.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def info(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"id": self.id, "kind": self.kind, "topics": list(self.topics)}
        if self.kind == "private":
            out["key"] = self.key
            out["user"] = self.user
        return out


class Server:
    """The sandbox exchange state machine plus its aiohttp application."""

    def __init__(self, settings: Settings, records: Records) -> None:
        self.s = settings
        self.records = records
        self.skew_ms = 0
        self.market: Optional[Market] = None
        self.users = UserEvents(settings.seed, settings.symbols)
        self.auth = Auth(
            api_key=settings.api_key,
            api_secret=settings.api_secret,
            username=settings.username,
            password=settings.password,
            user_id=settings.user_id,
            listen_key_ttl=settings.listen_key_ttl,
            server_ms=self.server_ms,
        )
        self.conns: Dict[int, Conn] = {}
        self.subs: Dict[str, Dict[int, Conn]] = {}
        self.paused = False
        self.silent_until = 0.0
        self.reject_subs: List[Tuple[Optional[str], str]] = []
        self.fail_rest: List[Dict[str, Any]] = []
        self.http_faults = HttpFaults()  # rate limits (Retry-After), stalls, upgrade log
        self.history: Deque[str] = collections.deque(maxlen=1000)
        self.last_update: Dict[str, Optional[DepthEvent]] = {}
        # topic -> (silent until (monotonic), healed by the next subscribe of the topic)
        self.muted: Dict[str, Tuple[float, bool]] = {}
        self.corrupt_depth: Dict[str, str] = {}  # symbol -> how to corrupt its next update
        self.rng = random.Random(f"{settings.seed}:server")
        self.port = 0
        self._next_conn = 0
        self._tasks: List[asyncio.Task[None]] = []
        self._handlers: Set[asyncio.Task[Any]] = set()
        self.runner: Optional[web.AppRunner] = None
        self.netfaults = NetFaults(self)
        self.replay: Optional[Any] = None  # a ReplaySource when serving a recording

    # ---------------------------------------------------------------- clocks
    def server_ms(self) -> int:
        """The server clock: real time plus the injected skew, epoch ms."""
        return int(time.time() * 1000) + self.skew_ms

    def silent(self) -> bool:
        return time.monotonic() < self.silent_until

    def topic_muted(self, topic: str) -> bool:
        """True while :meth:`mute_topic` holds ``topic`` silent (its pushes are lost)."""
        entry = self.muted.get(topic)
        if entry is None:
            return False
        if time.monotonic() < entry[0]:
            return True
        del self.muted[topic]
        return False

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> int:
        """Bind, start the background tasks; return the bound port."""
        from .restapi import RestApi  # local import: restapi imports this module's types

        s = self.s
        self.market = Market(
            s.symbols,
            s.seed,
            s.depth_levels,
            ticker_every=round(s.ticker_interval / s.tick_interval) if s.tick_interval > 0 else 25,
            kline_every=round(s.kline_interval / s.tick_interval) if s.tick_interval > 0 else 50,
            now_ms=self.server_ms(),
        )
        app = web.Application()
        app.router.add_get("/ws", self._ws_handler)
        RestApi(self).install(app)
        self.runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.host, s.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        if s.tick_interval > 0:
            self._tasks.append(loop.create_task(self._every(s.tick_interval, self._market_tick)))
        self._tasks.append(loop.create_task(self._every(0.05, self._housekeeping)))
        if s.user_event_interval > 0:
            self._tasks.append(
                loop.create_task(self._every(s.user_event_interval, self._periodic_user_event))
            )
        if s.replay is not None:
            from .replaysource import ReplaySource

            self.replay = ReplaySource(self, s.replay, s.replay_speed)
            self._tasks.append(loop.create_task(self.replay.run()))
        return self.port

    async def stop(self) -> None:
        """Close every WebSocket, stop the tasks and the HTTP server."""
        self.http_faults.closed = True  # stalled REST calls answer now
        for task in self._tasks:
            task.cancel()
        self.netfaults.cancel()
        for conn in list(self.conns.values()):
            conn.close(1001, "server shutting down")
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.5)
        for conn in list(self.conns.values()):
            conn.abort()
        if self.runner is not None:
            # Every socket still attached (a REST keep-alive, a half-open upgrade) is aborted
            # while the listening server is open: one left to the garbage collector detaches
            # itself from a closed server later, which CPython 3.13.0 reports as a traceback
            # at exit ("'NoneType' object is not iterable" in Server._wakeup).
            for site in self.runner.sites:
                server = getattr(site, "_server", None)
                abort_clients = getattr(server, "abort_clients", None)  # Python 3.13+
                if abort_clients is not None:
                    abort_clients()
            await self.runner.cleanup()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, period: float, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += period
            delay = due - loop.time()
            if delay < -1.0:  # fell far behind: don't burst to catch up
                due = loop.time()
            await asyncio.sleep(max(0.0, delay))
            try:
                fn()
            except Exception:  # a bug in the sandbox must not stop its clock
                logger.exception("sandbox periodic task failed")

    def _market_tick(self) -> None:
        if not self.paused:
            self.tick()

    def _housekeeping(self) -> None:
        for key in self.auth.due():
            self.close_key_connections(key, "listenKey expired")

    # ----------------------------------------------------------------- market
    def tick(self) -> None:
        """Advance the market one tick and publish what it produced."""
        assert self.market is not None
        now = self.server_ms()
        res = self.market.tick(now)
        for ev in res.depth:
            self.publish_depth(ev, now)
        for symbol, trades in res.trades.items():
            self.publish_trades(symbol, now, trades)
        for symbol, interval, kline in res.klines:
            self.publish(f"market.kline.{symbol}.{interval}", now, kline)
        for ticker in res.tickers:
            self.publish(f"market.ticker.{ticker['symbol']}", now, ticker)
            self.publish(f"market.funding.{ticker['symbol']}", now, funding(ticker, now))
        if res.tickers:
            self.publish("market.tickers", now, res.tickers)

    def publish(self, topic: str, ts: int, data: Any) -> int:
        """Send one push (encoded once, only if anyone listens) to every subscriber."""
        subs = self.subs.get(topic)
        if not subs or self.topic_muted(topic):
            return 0
        text = push_frame(topic, ts, data)
        for conn in list(subs.values()):
            conn.send(text)
        return len(subs)

    def publish_trades(self, symbol: str, ts: int, trades: List[Dict[str, object]]) -> None:
        """Trades as one list push (``trade_style="list"``) or one push per trade."""
        topic = f"market.trade.{symbol}"
        if self.s.trade_style == "object":
            for trade in trades:
                self.publish(topic, ts, trade)
        else:
            self.publish(topic, ts, trades)

    def publish_depth(self, ev: DepthEvent, now: int, corrupt: bool = False) -> None:
        self.last_update[ev.symbol] = None if corrupt else ev
        subs = self.subs.get(f"market.depth.{ev.symbol}")
        if not subs or self.topic_muted(f"market.depth.{ev.symbol}"):
            return
        text: Optional[str] = None
        how = self.corrupt_depth.pop(ev.symbol, None)
        if how is not None:  # the truth moved on; every subscriber gets an unparseable frame
            self.last_update[ev.symbol] = None
            bad = corrupt_frame(depth_frame(ev, self.s.depth_style, now), how)
            for conn in list(subs.values()):
                conn.overlap.pop(ev.symbol, None)
                conn.send(bad)
            return
        for conn in list(subs.values()):
            prev = conn.overlap.pop(ev.symbol, None)
            if prev is not None and prev.end + 1 == ev.start:
                conn.send(depth_frame(_merge(prev, ev), self.s.depth_style, now))
                continue
            if text is None:
                text = depth_frame(ev, self.s.depth_style, now)
            conn.send(text)

    def send_snapshot(self, conn: Conn, symbol: str) -> None:
        """Snapshot of the current book to one connection, sometimes with a quirk after it.

        Quirks (``depth_quirks``): resend the previous update (stale: ``endVersion`` equal to
        the snapshot's) or merge it into the next update (a range overlapping the snapshot).
        """
        assert self.market is not None
        book = self.market.books[symbol]
        now = self.server_ms()
        conn.overlap.pop(symbol, None)
        if self.topic_muted(f"market.depth.{symbol}"):
            return
        conn.send(depth_frame(book.snapshot(), self.s.depth_style, now))
        last = self.last_update.get(symbol)
        if not self.s.depth_quirks or last is None or last.end != book.version:
            return
        r = self.rng.random()
        if r < 0.3:
            conn.send(depth_frame(last, self.s.depth_style, now))
        elif r < 0.6 and self.s.depth_style != "prev_field":
            conn.overlap[symbol] = last

    # ------------------------------------------------------------------- ws
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        fault = self.netfaults.take_upgrade()
        if fault is not None:  # a redirecting or trickled upgrade (sixmm.sandbox.netfaults)
            return await fault(request)
        # autoping/autoclose off: silence must also swallow pings, and a client's close is
        # answered only after the connection left the registry
        ws = web.WebSocketResponse(
            autoping=False, autoclose=False, timeout=1.0, compress=False, max_msg_size=1 << 20
        )
        transport = request.transport
        limited = self.http_faults.take_limit("ws", request.path)
        self.http_faults.upgrade(request.path, limited[0] if limited else 101)
        self.records.changed()
        if limited is not None:
            return web.Response(
                status=limited[0],
                headers={"Retry-After": f"{limited[1]:g}"},
                text="Too Many Requests",
            )
        try:
            await ws.prepare(request)
        except ConnectionError:
            # the client gave up during the upgrade (a connect deadline, stop() aborting the
            # attempt): nothing to serve, and not an error of the exchange's (aiohttp's
            # ClientConnectionResetError is a ConnectionResetError). A plain response, not the
            # half-prepared ``ws``: aiohttp finishes it, and a write to the closed transport is
            # a ConnectionError it absorbs.
            return web.Response(status=400, text="client went away during the upgrade")
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._next_conn += 1
        conn = Conn(self._next_conn, ws, transport, self)
        self.conns[conn.id] = conn
        writer = asyncio.get_running_loop().create_task(self._writer(conn))
        self.records.changed()
        try:
            query = request.rel_url.query
            if "listenKey" in query or "token" in query:
                self._private_auth(conn, query.get("listenKey"), query.get("token"))
            while True:
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT:
                    self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.on_text(conn, msg.data.decode("utf-8", "replace"))
                elif msg.type == WSMsgType.PING:
                    if not self.silent():
                        conn.send(("pong", msg.data))
                elif msg.type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSING,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            # forget first: once the client sees our close reply, `connections` is accurate
            conn.closing = True
            self.forget(conn)
            if not ws.closed:
                try:
                    await ws.close(drain=False)  # the reply to a client-initiated close
                except (ConnectionError, RuntimeError):
                    pass
            conn.queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=1.5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                writer.cancel()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.abort()
            if task is not None:
                self._handlers.discard(task)
        return ws

    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        while True:
            item = await conn.queue.get()
            if item is None:
                return
            try:
                if isinstance(item, str):
                    if not self.silent():
                        await ws.send_str(item)
                elif item[0] == "pong":
                    await ws.pong(item[1])
                elif item[0] == "close":
                    code, reason = item[1]
                    await ws.close(code=code, message=reason.encode())
                    return
            except (ConnectionError, RuntimeError):
                return

    def forget(self, conn: Conn) -> None:
        """Remove a closing connection from the registry and every topic (idempotent)."""
        if self.conns.pop(conn.id, None) is None:
            return
        for topic in conn.topics:
            subs = self.subs.get(topic)
            if subs is not None:
                subs.pop(conn.id, None)
                if not subs:
                    del self.subs[topic]
        self.records.changed()

    def _private_auth(self, conn: Conn, key: Optional[str], token: Optional[str]) -> None:
        ok, detail = self.auth.ws_auth(key, token)
        if not ok:
            if self.s.auth_failure == "frame":
                conn.send(dumps({"event": "auth", "success": False, "message": detail}))
            reason = f"auth failed: {detail}" if self.auth.echo_refusals else "auth failed"
            conn.close(1008, reason.encode()[:123].decode("utf-8", "ignore"))
            return
        conn.kind = "private"
        conn.user = detail
        conn.key = key
        conn.send(dumps({"event": "auth", "success": True, "data": detail}))
        if self.replay is not None:
            self.replay.client_arrived()
        n = self.s.replay_on_connect
        if n > 0:
            for frame in list(self.history)[-n:]:
                conn.send(frame)

    def on_text(self, conn: Conn, text: str) -> None:
        """Handle one client frame (ops per PROTOCOL.md §2)."""
        try:
            obj = json.loads(text)
        except ValueError:
            if not self.silent():
                conn.send(dumps({"event": "error", "message": "invalid JSON"}))
            return
        if not isinstance(obj, dict):
            if not self.silent():
                conn.send(dumps({"event": "error", "message": "expected a JSON object"}))
            return
        op, rid, args = obj.get("op"), obj.get("id"), obj.get("args")
        self.records.add_op(
            {"conn": conn.id, "op": op, "id": rid, "args": args, "t": time.monotonic()}
        )
        if self.silent():
            return
        if op == "ping":
            conn.send(dumps({"id": rid, "event": "pong"}))
        elif op in ("subscribe", "unsubscribe"):
            self._on_sub(conn, op, rid, args)
        else:
            conn.send(dumps({"id": rid, "event": "error", "message": f"unknown op: {op}"}))

    def _on_sub(self, conn: Conn, op: str, rid: Any, args: Any) -> None:
        style = self.s.ack_style
        if not isinstance(args, list):
            conn.send(ack_frame(rid, op, False, [], "args must be a list of topics", style))
            return
        good: List[str] = []
        bad: List[Tuple[Any, str]] = []
        for topic in args:
            reason = validate_topic(topic, self.s.symbols)
            if reason is None:
                if topic not in good:
                    good.append(topic)
            else:
                bad.append((topic, reason))
        if op == "subscribe" and self.reject_subs and good:
            # every pending rejection that names a topic of this op applies (each once): a
            # batch that resubscribes two refused topics refuses both
            pending: List[Tuple[Optional[str], str]] = []
            for target, message in self.reject_subs:
                hit = good if target is None else [t for t in good if t == target]
                if hit:
                    bad.extend((t, message) for t in hit)
                    good = [t for t in good if t not in hit]
                else:
                    pending.append((target, message))
            self.reject_subs[:] = pending
        if good or not bad:
            conn.send(ack_frame(rid, op, True, good, style=style))
        for topic, reason in bad:
            conn.send(ack_frame(rid, op, False, [topic], reason, style))
        for topic in good:
            if op == "subscribe":
                entry = self.muted.get(topic)
                if entry is not None and entry[1]:  # a fresh subscription heals a dead one
                    del self.muted[topic]
                conn.topics[topic] = None
                self.subs.setdefault(topic, {})[conn.id] = conn
                if self.replay is not None:
                    self.replay.client_arrived()
                    if topic.startswith("market.depth."):
                        self.replay.catch_up(conn, topic)
                elif topic.startswith("market.depth."):
                    self.send_snapshot(conn, topic.split(".")[2])
            else:
                conn.topics.pop(topic, None)
                subs = self.subs.get(topic)
                if subs is not None:
                    subs.pop(conn.id, None)
                    if not subs:
                        del self.subs[topic]
                if topic.startswith("market.depth."):
                    conn.overlap.pop(topic.split(".")[2], None)
        self.records.changed()

    # ----------------------------------------------------------- user events
    def push_user(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """Send one private event to every private connection of the user; keep it in history."""
        frame = dumps({"topic": f"user.{self.s.user_id}", "ts": self.server_ms(), "data": data})
        self.history.append(frame)
        for conn in list(self.conns.values()):
            if conn.kind == "private":
                conn.send(frame)
        return data

    def _periodic_user_event(self) -> None:
        if any(c.kind == "private" for c in self.conns.values()):
            self.push_user(self.users.random(self.server_ms()))

    # ------------------------------------------------------------------ faults
    def close_key_connections(self, key: str, reason: str) -> int:
        n = 0
        for conn in list(self.conns.values()):
            if conn.key == key:
                conn.close(1008, reason)
                n += 1
        return n

    def drop_all(self) -> int:
        conns = list(self.conns.values())
        for conn in conns:
            conn.abort()
        return len(conns)

    def go_silent(self, seconds: Optional[float]) -> None:
        self.silent_until = math.inf if seconds is None else time.monotonic() + seconds

    def send_malformed(self, text: Optional[str], count: int) -> None:
        frames = [text] if text is not None else list(MALFORMED_FRAMES)
        for conn in list(self.conns.values()):
            for _ in range(count):
                for frame in frames:
                    conn.send(frame)

    def cross_book(self, symbol: str) -> None:
        assert self.market is not None
        self.publish_depth(self.market.books[symbol].crossed_update(), self.server_ms(), True)

    def mute_topic(self, topic: str, seconds: Optional[float], heal: bool) -> None:
        until = math.inf if seconds is None else time.monotonic() + seconds
        self.muted[topic] = (until, heal and seconds is None)

    def unmute_topic(self, topic: Optional[str]) -> None:
        if topic is None:
            self.muted.clear()
        else:
            self.muted.pop(topic, None)

    def publish_raw(self, topic: str, data: Any) -> int:
        """One push of ``data`` on ``topic`` to its subscribers (any topic, even unknown)."""
        return self.publish(topic, self.server_ms(), data)

    def burst(self, symbol: str, n: int) -> None:
        assert self.market is not None
        book = self.market.books[symbol]
        for _ in range(n):
            now = self.server_ms()
            self.publish_trades(symbol, now, book.trades(now, 1))


def funding(ticker: Dict[str, object], now: int) -> Dict[str, object]:
    """A ``market.funding.{symbol}`` push (a channel the client has no model for), derived
    from the ticker so the market's random sequence is unchanged."""
    period = 8 * 3600 * 1000
    return {
        "symbol": ticker["symbol"],
        "markPrice": ticker.get("markPrice"),
        "fundingRate": ticker.get("fundingRate"),
        "nextFundingTime": now - now % period + period,
    }


def corrupt_frame(text: str, how: str) -> str:
    """``text`` made unparseable: ``"nan"`` puts a raw ``NaN`` token in place of the end
    version, ``"truncate"`` cuts the frame in half, ``"headless"`` cuts off its start up to
    and including the topic (nobody can tell which book it was for)."""
    if how == "truncate":
        return text[: max(1, len(text) // 2)]
    if how == "headless":
        return text[text.index('"event"') :]
    return text.replace('"endVersion":', '"endVersion":NaN,"was":', 1)


def _merge(prev: DepthEvent, ev: DepthEvent) -> DepthEvent:
    """One update covering ``prev.start..ev.end`` (absolute level values: later wins)."""
    bids = dict(prev.bids)
    bids.update(ev.bids)
    asks = dict(prev.asks)
    asks.update(ev.asks)
    return DepthEvent(
        ev.symbol,
        "update",
        prev.start,
        ev.end,
        sorted(bids.items(), key=lambda lv: Decimal(lv[0]), reverse=True),
        sorted(asks.items(), key=lambda lv: Decimal(lv[0])),
    )
