"""Hostile input: the wire layer, the book and the manager never crash and never lie.

Pure tier: hostile depth payloads after a valid snapshot go through ``parse_depth`` +
``BookState.apply`` and are compared with a naive reference book; any frame through
``PublicSession.on_message`` never raises. Socket tier: a hostile server (the sandbox's
``send_malformed`` or a raw WebSocket server below) sends oversize frames, deep JSON, binary
garbage, invalid UTF-8, a close frame mid-stream and unknown opcodes: the manager reports,
survives (reconnecting where the socket is unusable) and leaves no thread behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sixmm import Backoff, ProtocolError, StreamManager, Trade
from sixmm.config import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_JSON_DEPTH
from sixmm.orderbook import OrderBook
from sixmm.protocol.book import BookState, Outcome
from sixmm.protocol.depth import DepthMsg, parse_depth
from sixmm.protocol.frames import RequestIds
from sixmm.public import PublicSession
from sixmm.sandbox import Sandbox
from sixmm.subscriptions import Route

from .helpers import Recorder, wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 1.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}

# --------------------------------------------------------------------------- pure tier

HOSTILE_SCALARS: st.SearchStrategy[Any] = st.sampled_from(
    [
        None,
        "",
        "abc",
        -1,
        -0.5,
        2**63,
        2**64,
        10**30,
        1.5,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        [],
        {},
        "1e5",
        " 1",
        "1 ",
        "+1",
        "-1",
        "NaN",
        "Infinity",
        "-0",
        "0x10",
        "\u0661\u0662",
        "1.2.3",
        "9" * 40,
        "0." + "0" * 40 + "1",
        ".5",
        "5.",
        "\x00",
    ]
)
PRICES = st.one_of(
    st.integers(9_950, 10_050).map(lambda t: f"{t // 10}.{t % 10}"),  # around 1000.0
    st.integers(9_950, 10_050).map(lambda t: f"{t // 10}.{t % 10}0"),  # same values, new spelling
    st.integers(99_500_000, 100_500_000).map(lambda t: f"{t // 100_000}.{t % 100_000:05d}1234567"),
)
QTYS = st.sampled_from(["0", "0.000", "00.0", "1", "2.5", "0.001", "10.000", "3"])
LEVEL = st.one_of(
    st.tuples(PRICES, QTYS).map(list),
    st.tuples(PRICES, QTYS).map(lambda pq: {"price": pq[0], "quantity": pq[1]}),
    st.tuples(st.one_of(PRICES, HOSTILE_SCALARS), st.one_of(QTYS, HOSTILE_SCALARS)).map(list),
    HOSTILE_SCALARS,
    st.lists(PRICES, max_size=3),
)
SIDE = st.one_of(st.lists(LEVEL, max_size=5), HOSTILE_SCALARS)
FIELDS = ["startVersion", "endVersion", "prevEndVersion", "lastEndVersion", "symbol", "type"]
MESSAGE = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["update"] * 6 + [None, "snapshot", "UPDATE", "weird", 5]),
        "start_offset": st.integers(-3, 3),
        "span": st.integers(0, 3),
        "predecessor": st.booleans(),
        "bids": SIDE,
        "asks": SIDE,
        "mutation": st.one_of(
            st.none(), st.none(), st.tuples(st.sampled_from(FIELDS), HOSTILE_SCALARS)
        ),
    }
)


class ReferenceBook:
    """The continuity rules of PROTOCOL.md 4.1, written the naive way (Decimal keys)."""

    def __init__(self) -> None:
        self.version: Optional[int] = None
        self.synced = False
        self.first = False
        self.bids: Dict[Decimal, Tuple[str, str]] = {}
        self.asks: Dict[Decimal, Tuple[str, str]] = {}

    def apply(self, msg: DepthMsg) -> None:
        if msg.kind == "snapshot":
            self.bids, self.asks = {}, {}
            self._levels(msg)
            self.version, self.first = msg.end, True
            self.synced = not self._crossed()
            return
        if not self.synced:
            return
        assert self.version is not None and msg.end is not None
        v = self.version
        if msg.end <= v:
            return
        if msg.start is not None:
            ok = msg.start <= v + 1 if self.first else msg.start == v + 1
        elif msg.prev is not None:
            ok = msg.prev == v
        else:
            ok = True
        if not ok:
            self.synced = False
            return
        self._levels(msg)
        self.version, self.first = msg.end, False
        if self._crossed():
            self.synced = False

    def _levels(self, msg: DepthMsg) -> None:
        for side, levels in ((self.bids, msg.bids), (self.asks, msg.asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)

    def _crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def levels(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        return dict(self.bids.values()), dict(self.asks.values())


def _snapshot_data(version: int) -> Dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "type": "snapshot",
        "startVersion": version,
        "endVersion": version,
        "bids": [[f"{999 - i}.5", "1.0"] for i in range(10)],
        "asks": [[f"{1001 + i}.5", "1.0"] for i in range(10)],
    }


def _build(spec: Dict[str, Any], version: int) -> Dict[str, Any]:
    start = version + 1 + spec["start_offset"]
    data: Dict[str, Any] = {"symbol": "BTCUSDT", "bids": spec["bids"], "asks": spec["asks"]}
    if spec["kind"] is not None:
        data["type"] = spec["kind"]
    if spec["predecessor"]:
        data["prevEndVersion"] = start - 1
    else:
        data["startVersion"] = start
    data["endVersion"] = start + spec["span"]
    if spec["mutation"] is not None:
        name, value = spec["mutation"]
        data[name] = value
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MESSAGE, min_size=1, max_size=25), st.integers(0, 2**40))
def test_hostile_depth_never_corrupts_the_book(specs: List[Dict[str, Any]], base: int) -> None:
    book = BookState("BTCUSDT")
    ref = ReferenceBook()
    first = parse_depth(_snapshot_data(base))
    assert book.apply(first) is Outcome.SNAPSHOT
    ref.apply(first)
    for spec in specs:
        data = _build(spec, book.version if book.version is not None else base)
        before = book.levels()
        try:
            msg = parse_depth(data)
        except ProtocolError:
            assert book.levels() == before  # a refused payload changes nothing
            continue
        outcome = book.apply(msg)
        ref.apply(msg)
        assert book.synced == ref.synced, (outcome, msg)
        if outcome in (Outcome.STALE, Outcome.IGNORED, Outcome.GAP):
            assert book.levels() == before
        if book.synced:
            assert book.version == ref.version
            assert book.levels() == ref.levels()
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is None or ask is None or bid[0] < ask[0]
            bids, asks = book.top(50)
            assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
            assert [p for p, _ in asks] == sorted(p for p, _ in asks)


# Frames for the session fuzz: JSON envelopes for subscribed topics with hostile data.
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
TOPICS = [
    "market.trade.BTCUSDT",
    "market.kline.BTCUSDT.1m",
    "market.ticker.BTCUSDT",
    "market.tickers",
    "market.depth.BTCUSDT",
    "market.depth.ETHUSDT",
    "market.trade.NOTSUBSCRIBED",
]
FIELD_NAMES = st.sampled_from(
    [
        "symbol",
        "tradeId",
        "price",
        "quantity",
        "side",
        "time",
        "type",
        "startVersion",
        "endVersion",
        "bids",
        "asks",
        "open",
        "close",
        "lastPrice",
        "interval",
        "openTime",
    ]
)
PAYLOAD = st.one_of(
    JSONISH,
    st.dictionaries(FIELD_NAMES, st.one_of(JSONISH, HOSTILE_SCALARS, PRICES), max_size=8),
    st.lists(st.dictionaries(FIELD_NAMES, st.one_of(JSONISH, PRICES), max_size=6), max_size=3),
)


def _frame(topic: str, event: Any, ts: Any, data: Any) -> bytes:
    try:
        return json.dumps({"topic": topic, "event": event, "ts": ts, "data": data}).encode()
    except ValueError:
        return b"{}"


FRAMES = st.one_of(
    st.builds(
        _frame,
        st.sampled_from(TOPICS),
        st.sampled_from(["data", "data", "snapshot", None, 1]),
        st.one_of(st.integers(), st.text(max_size=5), st.none()),
        PAYLOAD,
    ),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


class _FakeConn:
    name = "fuzz"

    def send(self, text: str) -> bool:
        return True

    def mark_streaming(self, reason: str) -> None:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAMES, min_size=1, max_size=20))
def test_any_frame_through_the_public_session_never_raises(frames: List[bytes]) -> None:
    delivered: List[Tuple[str, Any]] = []
    errors: List[BaseException] = []

    def submit(lane: str, topic: str, callbacks: Any, item: Any, conflate: bool) -> None:
        delivered.append((topic, item))

    session = PublicSession(
        "ws://127.0.0.1:1/ws",
        ids=RequestIds(now_ms=0),
        dispatcher=cast(Any, SimpleNamespace(submit=submit)),
        report=errors.append,
        on_gap=lambda lane, gap: None,
        on_failed=lambda route: None,
    )
    books = {}
    for topic in TOPICS[:-1]:
        route = Route(topic, topic.split(".")[1])
        route.callbacks = (print,)
        if route.channel == "depth":
            route.book = books[topic] = OrderBook(topic.rsplit(".", 1)[-1])
        session.add(route)
    conn: Any = _FakeConn()
    books["market.depth.BTCUSDT"]._feed(parse_depth(_snapshot_data(100)))
    for payload in frames:
        session.on_message(conn, payload)  # must not raise
    assert all(isinstance(e, ProtocolError) for e in errors), errors
    assert all(topic != "market.trade.NOTSUBSCRIBED" for topic, _ in delivered)
    assert all(isinstance(item, Trade) for topic, item in delivered if ".trade." in topic)
    for book in books.values():
        if book.synced:
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is None or ask is None or bid[0] < ask[0]


# --------------------------------------------------------------------------- a hostile server


def ws_frame(
    payload: bytes, opcode: int = 0x1, fin: bool = True, length: Optional[int] = None
) -> bytes:
    """One unmasked server frame; ``length`` overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def trade_push(trade_id: int) -> bytes:
    return json.dumps(
        {
            "topic": "market.trade.BTCUSDT",
            "event": "data",
            "ts": 1,
            "data": [
                {
                    "symbol": "BTCUSDT",
                    "tradeId": str(trade_id),
                    "price": "1.5",
                    "quantity": "2",
                    "side": "BUY",
                    "time": 1,
                }
            ],
        }
    ).encode()


class HostileServer:
    """A tiny WebSocket server on 127.0.0.1 that acks subscribes, then misbehaves.

    ``script(index)`` gives the raw bytes to send after the first subscribe ack of connection
    ``index`` (0-based). After that every connection streams valid BTCUSDT trades (ids count
    up per server) every 20 ms, so tests can see whether the client survived.
    """

    def __init__(self, script: Callable[[int], bytes]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.connections = 0
        self.trade_id = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: List[threading.Thread] = []

    def __enter__(self) -> HostileServer:
        self._spawn(self._accept, "hostile-accept")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in list(self.threads):
            t.join(5)
        self.listener.close()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                index = self.connections
                self.connections += 1
            self._spawn(self._serve, f"hostile-conn-{index}", sock, index)

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            sock.settimeout(2.0)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                request += chunk
            key = ""
            for line in request.decode("latin-1").split("\r\n"):
                if line.lower().startswith("sec-websocket-key:"):
                    key = line.split(":", 1)[1].strip()
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            sock.settimeout(0.02)
            buf = b""
            acked = False
            while not self.stop_event.is_set():
                try:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                except socket.timeout:
                    pass
                while True:
                    parsed = _client_frame(buf)
                    if parsed is None:
                        break
                    opcode, payload, buf = parsed
                    if opcode == 0x8:
                        return
                    if opcode != 0x1:
                        continue
                    op = json.loads(payload)
                    if op.get("op") == "subscribe":
                        ack = {
                            "id": op["id"],
                            "event": "subscribe",
                            "success": True,
                            "data": op["args"],
                        }
                        sock.sendall(ws_frame(json.dumps(ack).encode()))
                        if not acked:
                            acked = True
                            sock.sendall(self.script(index))
                    elif op.get("op") == "ping":
                        sock.sendall(
                            ws_frame(json.dumps({"id": op["id"], "event": "pong"}).encode())
                        )
                if acked:
                    with self.lock:
                        self.trade_id += 1
                        tid = self.trade_id
                    sock.sendall(ws_frame(trade_push(tid)))
        except OSError:
            return
        finally:
            sock.close()


def _client_frame(buf: bytes) -> Optional[Tuple[int, bytes, bytes]]:
    """Parse one masked client frame from ``buf``: ``(opcode, payload, rest)`` or None."""
    if len(buf) < 2:
        return None
    opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < pos + 4 + n:
        return None
    mask = buf[pos : pos + 4]
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[pos + 4 : pos + 4 + n]))
    return opcode, data, buf[pos + 4 + n :]


def _run_against(
    script: Callable[[int], bytes], **opts: Any
) -> Tuple[Recorder, Recorder, Dict[str, Any], int]:
    """Stream BTCUSDT trades from a hostile server until 10 trades came after the script."""
    errors, trades = Recorder(), Recorder()
    with HostileServer(script) as server:
        with StreamManager(server.url, on_error=errors, **{**FAST, **opts}) as streams:
            streams.trades("BTCUSDT", trades)
            wait_until(lambda: server.trade_id >= 5)
            mark = server.trade_id
            wait_until(lambda: any(int(t.trade_id) > mark + 10 for t in trades.snapshot()))
            stats = streams.stats()["connections"]["public-0"]
        connections = server.connections
    return errors, trades, stats, connections


GARBAGE = bytes(range(256)) * 4


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(ws_frame(GARBAGE, opcode=0x2), id="binary-garbage"),
        pytest.param(ws_frame(b"[" * 5000 + b"]" * 5000), id="deep-json"),
        pytest.param(
            ws_frame(b'{"topic":"market.trade.BTCUSDT","event":"data","data":[{"price":NaN}]}'),
            id="nan",
        ),
        pytest.param(
            ws_frame(b'{"topic":"market.trade.BTCUSDT","event":"data","data":[{"symbol":5}]}'),
            id="wrong-types",
        ),
        pytest.param(ws_frame(b"x" * 300_000), id="big-but-allowed"),
        pytest.param(
            ws_frame(b'{"topic":"market.trade.', fin=False) + ws_frame(b'BTCUSDT"}', opcode=0x0),
            id="fragmented",
        ),
        pytest.param(ws_frame(b"ping?", opcode=0x9), id="server-ping"),
    ],
)
def test_bad_data_frames_are_reported_and_the_connection_kept(frames: bytes) -> None:
    errors, trades, stats, connections = _run_against(lambda index: frames)
    assert stats["reconnects"] == 0 and connections == 1
    assert all(isinstance(e, ProtocolError) for e in errors.snapshot()), errors.snapshot()
    ids = [int(t.trade_id) for t in trades.snapshot()]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize(
    "frames, reason",
    [
        pytest.param(
            ws_frame(struct.pack("!H", 1011) + b"bye", opcode=0x8), "1011", id="close-frame"
        ),
        pytest.param(ws_frame(b"??", opcode=0x3), "opcode", id="unknown-opcode"),
        pytest.param(ws_frame(b"", length=2**40), "exceeds", id="absurd-length"),
        pytest.param(ws_frame(b"tail", opcode=0x0), "continuation", id="orphan-continuation"),
        pytest.param(b"\x81\x7f", "", id="truncated-then-eof"),
        # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection (close 1007)
        pytest.param(ws_frame(b'\xff\xfe{"topic":"x\xc3("}'), "UTF-8", id="invalid-utf8"),
    ],
)
def test_unusable_sockets_are_reported_and_replaced(frames: bytes, reason: str) -> None:
    def script(index: int) -> bytes:
        return frames if index == 0 else b""

    states = Recorder()
    errors, _trades, stats, connections = _run_against(script, on_state=states)
    assert connections >= 2 and stats["reconnects"] >= 1
    if reason in ("opcode", "exceeds", "continuation", "UTF-8"):
        assert any(reason in str(e) for e in errors.snapshot()), errors.snapshot()
    if reason == "1011":
        assert any("1011" in s.reason for s in states.snapshot())


def test_frame_size_limit_applies(sandbox: Sandbox) -> None:
    errors, trades = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, max_frame_bytes=4096, **FAST) as streams:
        assert streams.trades("BTCUSDT", trades).wait_ready(5)
        sandbox.send_malformed("x" * 10_000)
        wait_until(lambda: any("exceeds" in str(e) for e in errors.snapshot()))
        wait_until(lambda: streams.stats()["connections"]["public-0"]["reconnects"] >= 1)
        count = len(trades)
        wait_until(lambda: len(trades) > count + 2)  # streaming again


def test_default_frame_limit_allows_large_frames(sandbox: Sandbox) -> None:
    errors = Recorder()
    assert DEFAULT_MAX_FRAME_BYTES >= 1024 * 1024
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        assert streams.trades("BTCUSDT", lambda t: None).wait_ready(5)
        sandbox.send_malformed("[" + "1," * 200_000 + "1]")  # 400 KB: big, allowed, not an object
        wait_until(lambda: len(errors) >= 1)
        assert "exceeds" not in str(errors.snapshot()[0])
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0


def test_json_depth_limit_applies(sandbox: Sandbox) -> None:
    errors, trades = Recorder(), Recorder()
    nested = "[" * 7 + "]" * 7
    frame = (
        '{"topic":"market.trade.BTCUSDT","event":"data","ts":1,"data":[{"symbol":"BTCUSDT",'
        '"tradeId":"999999999","price":"1","quantity":"1","side":"BUY","time":1,"x":'
        + nested
        + "}]}"
    )
    with StreamManager(sandbox.ws_url, on_error=errors, max_json_depth=6, **FAST) as streams:
        assert streams.trades("BTCUSDT", trades).wait_ready(5)
        sandbox.send_malformed(frame)
        wait_until(lambda: any("nested deeper than 6" in str(e) for e in errors.snapshot()))
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0
    assert all(t.trade_id != "999999999" for t in trades.snapshot())
    # the same frame is fine under the default limit
    trades2 = Recorder()
    assert DEFAULT_MAX_JSON_DEPTH > 10
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        assert streams.trades("BTCUSDT", trades2).wait_ready(5)
        sandbox.send_malformed(frame)
        wait_until(lambda: any(t.trade_id == "999999999" for t in trades2.snapshot()))


def test_sandbox_garbage_storm_leaves_books_and_streams_intact(sandbox: Sandbox) -> None:
    errors, trades = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        streams.trades("BTCUSDT", trades)
        book = streams.order_book("ETHUSDT")
        assert book.wait_synced(5)
        for text in (
            None,
            "\x00\x01\x02",
            '{"topic":"market.depth.ETHUSDT","event":"data","data":{"endVersion":-1}}',
            '{"topic":"market.depth.ETHUSDT","event":"data","data":{"type":"update",'
            '"startVersion":"x","endVersion":1e400,"bids":[["NaN","1"]]}}',
            '{"topic":"market.trade.BTCUSDT","event":"data","data":[{"price":"-1"}]}',
        ):
            sandbox.send_malformed(text, count=3)
        wait_until(lambda: len(errors) >= 5)
        assert book.wait_synced(5)
        sandbox.pause_market()
        version, bids, asks = sandbox.book_truth("ETHUSDT")
        wait_until(lambda: book.synced and book.version == version)
        assert book.levels() == (bids, asks)
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0
    assert all(isinstance(e, ProtocolError) for e in errors.snapshot())
