"""The loopback sender of the sixmm benchmarks: a tiny WebSocket server in its own process.

Run: ``python bench/sender.py [--port 0]``; it prints ``PORT <n>`` and serves until its stdin
closes (the parent exited) or it is terminated. :class:`SenderProcess` starts one for you.

It does the WebSocket handshake itself on a plain socket, acks every ``subscribe`` /
``unsubscribe`` op (``{"id", "event", "success": true, "data": [topics]}``), answers ``ping``
ops and websocket pings, and streams pre-framed server frames with ``sendall`` in 256 KiB
chunks -- so the sender costs almost nothing per message and the client is the bottleneck.
A separate process: the client's GIL is not shared.

What each connection gets is chosen by the URL's query string:

=============  ========================================================================
``kind``       ``trade`` (default): ~200-byte ``market.trade.BTCUSDT`` pushes;
               ``depth``: a snapshot of ``levels`` per side (type snapshot), then updates
               of 20 level changes (~600 bytes) with ``startVersion = previous end + 1``;
               ``book``: issue 16's whole-book depth workload (``bench/workload.py``)
``n``          messages to send after the subscription (then it idles until the close)
``levels``     depth snapshot levels per side (default 5000)
``rate``       0 (default): as fast as the socket takes them, pre-framed; > 0: paced at
               ``rate`` msgs/s in total, each trade stamped with ``time.monotonic_ns()``
               when it is written (field ``"sent"``, 20 digits) for latency figures
``topics``     rate mode: the number of trade topics the client subscribes in all (the
               connection's share of ``rate`` is proportional to its topics); streaming
               starts once the connection has subscribed its first topics
``auto``       1: stream at once without waiting for a subscribe (the raw socket reader)
=============  ========================================================================

``kind=storm`` (``bench/bench_storm.py``, many symbols, paced): every subscribed
``market.depth.<S>`` topic gets a snapshot of ``levels`` per side right after its ack, then
``rate`` updates per second (10 quantity changes of present levels, continuous versions);
every ``market.trade.<S>`` topic ``trades`` trades per second and every
``market.ticker.<S>`` topic ``tickers`` tickers per second. ``sid`` + ``drop_at=S``: S
seconds after the first subscribe of session ``sid`` every connection of that session is
dropped (TCP shutdown, no close frame: the sandbox's ``drop``), once per session.

The handshake response carries ``X-Bench-Bytes``: the byte length of a pre-framed stream.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 256 * 1024
TS = 1772007815000
SYMBOL = "BTCUSDT"
TRADE_TOPIC = f"market.trade.{SYMBOL}"
DEPTH_TOPIC = f"market.depth.{SYMBOL}"
BOOK_TOPIC = DEPTH_TOPIC  # the whole-book workload is a depth stream too
_DEPTH_BLOCK = 2000  # distinct update bodies, cycled with fresh versions
_TRADE_BLOCK = 1000


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def trade_topic_of(i: int, count: int) -> str:
    """The i-th of ``count`` trade topics (``market.trade.BTCUSDT`` when there is one)."""
    return TRADE_TOPIC if count == 1 else f"market.trade.S{i:04d}USDT"


def trade_payload(topic: str, trade_id: int, sent: int = 0) -> bytes:
    """A ~200-byte trade push; ``sent`` is the send time stamp (20 digits)."""
    symbol = topic.rsplit(".", 1)[-1]
    side = "BUY" if trade_id & 1 else "SELL"
    price = f"{85000 + (trade_id % 200) / 10:.1f}"
    return (
        f'{{"topic":"{topic}","event":"data","ts":{TS},"data":{{"sent":"{sent:020d}",'
        f'"symbol":"{symbol}","tradeId":"{trade_id}","price":"{price}",'
        f'"quantity":"0.0{trade_id % 90 + 10}","side":"{side}","time":{TS}}}}}'
    ).encode()


# -- streams (built once per shape, cached) ------------------------------------------------

_cache: Dict[Tuple[str, int, int], bytes] = {}
_cache_lock = threading.Lock()


def _trade_stream(n: int) -> bytes:
    block = [frame(trade_payload(TRADE_TOPIC, 1_000_000 + i)) for i in range(_TRADE_BLOCK)]
    out = b"".join(block) * (n // _TRADE_BLOCK)
    return out + b"".join(block[: n % _TRADE_BLOCK])


def _depth_stream(n: int, levels: int) -> bytes:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.bench_book import make_stream

    snapshot, updates = make_stream(levels, min(n, _DEPTH_BLOCK) or 1)
    head = f'{{"topic":"{DEPTH_TOPIC}","event":"data","ts":{TS},"data":'
    parts = [frame((head + json.dumps(snapshot, separators=(",", ":")) + "}").encode())]
    templates: List[bytes] = []
    for u in updates:
        body = dict(u, startVersion=-1, endVersion=-2)
        text = head + json.dumps(body, separators=(",", ":")) + "}"
        text = text.replace('"startVersion":-1', '"startVersion":%d')
        templates.append(text.replace('"endVersion":-2', '"endVersion":%d').encode())
    version = int(snapshot["endVersion"])
    for i in range(n):
        version += 1
        parts.append(frame(templates[i % len(templates)] % (version, version)))
    return b"".join(parts)


def _whole_book_stream(n: int, levels: int) -> bytes:
    """Issue 16's whole-book workload (``bench/workload.py``): every update distinct."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.workload import make_whole_book

    snapshot, updates = make_whole_book(levels, n)
    head = f'{{"topic":"{BOOK_TOPIC}","event":"data","ts":{TS},"data":'
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    parts = [frame((head + dumps(snapshot) + "}").encode())]
    parts += [frame((head + dumps(u) + "}").encode()) for u in updates]
    return b"".join(parts)


def stream_bytes(kind: str, n: int, levels: int) -> bytes:
    """The pre-framed stream of a shape (cached)."""
    key = (kind, n, levels)
    with _cache_lock:
        data = _cache.get(key)
        if data is None:
            if kind == "depth":
                data = _depth_stream(n, levels)
            elif kind == "book":
                data = _whole_book_stream(n, levels)
            else:
                data = _trade_stream(n)
            _cache[key] = data
        return data


# -- one connection --------------------------------------------------------------------


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()  # one writer at a time
        self.buf = b""
        self.closed = threading.Event()
        self.subscribed: List[str] = []
        self.go = threading.Event()
        self.params: Dict[str, str] = {}
        self.storm: Optional[_Storm] = None

    def send(self, data: Union[bytes, memoryview]) -> None:
        with self.lock:
            self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake(self) -> None:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        self.params = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        key = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        extra = ""
        if self.params.get("kind") == "storm":
            self.storm = _Storm(self)
        elif float(self.params.get("rate", "0")) <= 0:
            total = len(stream_bytes(*self.shape()))
            extra = f"X-Bench-Bytes: {total}\r\n"
        self.send(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
            ).encode()
        )

    def shape(self) -> Tuple[str, int, int]:
        p = self.params
        return p.get("kind", "trade"), int(p.get("n", "10000")), int(p.get("levels", "5000"))

    def read_frame(self) -> Tuple[int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else b""
        data = self._read(length)
        if mask:
            data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        return b0 & 0x0F, data

    def reader(self) -> None:
        """Answer ops and control frames until the client goes away."""
        try:
            while True:
                opcode, data = self.read_frame()
                if opcode == 0x8:
                    try:
                        self.send(frame(data[:2], 0x8))
                    except OSError:
                        pass
                    return
                if opcode == 0x9:
                    self.send(frame(data, 0xA))
                    continue
                if opcode != 0x1:
                    continue
                msg = json.loads(data)
                op = msg.get("op")
                if op == "ping":
                    self.send(frame(json.dumps({"id": msg.get("id"), "event": "pong"}).encode()))
                elif op in ("subscribe", "unsubscribe"):
                    topics = list(msg.get("args") or [])
                    ack = {"id": msg.get("id"), "event": op, "success": True, "data": topics}
                    self.send(frame(json.dumps(ack, separators=(",", ":")).encode()))
                    if self.storm is not None:
                        if op == "subscribe":
                            self.storm.subscribed(topics)
                        else:
                            self.storm.unsubscribed(topics)
                    if op == "subscribe":
                        self.subscribed.extend(topics)
                        self.go.set()
        except (EOFError, OSError, ValueError):
            return
        finally:
            self.closed.set()
            self.go.set()

    def stream(self) -> None:
        self.go.wait()
        if self.closed.is_set():
            return
        if self.storm is not None:
            self.storm.run()
            return
        rate = float(self.params.get("rate", "0"))
        if rate > 0:
            self._paced(rate)
            return
        data = memoryview(stream_bytes(*self.shape()))
        for i in range(0, len(data), _CHUNK):
            if self.closed.is_set():
                return
            self.send(data[i : i + _CHUNK])

    def _paced(self, rate: float) -> None:
        p = self.params
        total_topics = max(1, int(p.get("topics", "1")))
        topics = list(self.subscribed) or [TRADE_TOPIC]
        n_total = int(p.get("n", "10000"))
        share = min(1.0, len(topics) / total_topics)
        rate *= share
        n = max(1, round(n_total * share))
        prefixes = []
        for topic in topics:
            text = trade_payload(topic, 0, 0).decode()
            cut = text.index('"sent":"') + len('"sent":"')
            prefixes.append((text[:cut].encode(), text[cut + 20 :]))
        rnd = random.Random(1)
        start = time.monotonic()
        sent = 0
        monotonic_ns = time.monotonic_ns
        while sent < n and not self.closed.is_set():
            due = min(n, int((time.monotonic() - start) * rate) + 1)
            if due <= sent:
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
                continue
            out = []
            while sent < due:
                head, tail = prefixes[sent % len(prefixes)]
                tail = tail.replace('"tradeId":"0"', f'"tradeId":"{rnd.getrandbits(40)}"', 1)
                out.append(frame(head + b"%020d" % monotonic_ns() + tail.encode()))
                sent += 1
            self.send(b"".join(out))

    def serve(self) -> None:
        try:
            self.handshake()
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.reader, name="bench-sender-reader", daemon=True).start()
            if self.params.get("auto") == "1":
                self.go.set()
            self.stream()
            self.closed.wait()
        except (EOFError, OSError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


# -- storm: many symbols, paced, with a drop -------------------------------------------------

_storm_lock = threading.Lock()
_storm_sessions: Dict[str, List[_Conn]] = {}
_storm_started: Dict[str, float] = {}
_storm_dropped: set = set()
_snapshot_cache: Dict[int, Tuple[bytes, List[str], List[str]]] = {}


def _storm_book(levels: int) -> Tuple[bytes, List[str], List[str]]:
    """(snapshot body template with %s symbol and %d version twice, bid prices, ask prices)."""
    with _storm_lock:
        got = _snapshot_cache.get(levels)
        if got is None:
            rng = random.Random(7)
            bids = [f"{(850_000 - i) // 10}.{(850_000 - i) % 10}" for i in range(levels)]
            asks = [f"{(850_001 + i) // 10}.{(850_001 + i) % 10}" for i in range(levels)]

            def side(prices: List[str]) -> str:
                return ",".join(f'["{p}","{rng.randint(1, 50000) / 1000:.3f}"]' for p in prices)

            body = (
                '{"symbol":"%s","type":"snapshot","startVersion":%d,"endVersion":%d,'
                f'"bids":[{side(bids)}],"asks":[{side(asks)}]}}'
            )
            got = _snapshot_cache[levels] = (body.encode(), bids, asks)
        return got


class _Storm:
    """The paced multi-symbol stream of one ``kind=storm`` connection."""

    def __init__(self, conn: _Conn) -> None:
        p = conn.params
        self.conn = conn
        self.levels = int(p.get("levels", "1000"))
        self.rate = float(p.get("rate", "10"))
        self.trades = float(p.get("trades", "0"))
        self.tickers = float(p.get("tickers", "0"))
        self.sid = p.get("sid", "")
        self.drop_at = float(p.get("drop_at", "0"))
        self.lock = threading.Lock()
        self.versions: Dict[str, int] = {}  # depth topic -> last version sent
        self.others: List[str] = []  # trade and ticker topics
        self.rng = random.Random(11)
        self.trade_id = 0

    def subscribed(self, topics: List[str]) -> None:
        """Called by the reader after the ack: send each depth topic's snapshot."""
        body, _bids, _asks = _storm_book(self.levels)
        if self.sid:
            with _storm_lock:
                _storm_sessions.setdefault(self.sid, []).append(self.conn)
                _storm_started.setdefault(self.sid, time.monotonic())
        for topic in topics:
            if topic.startswith("market.depth."):
                symbol = topic.rsplit(".", 1)[-1]
                with self.lock:
                    version = self.versions.get(topic, 1000 + self.rng.randrange(10**6)) + 1
                    head = f'{{"topic":"{topic}","event":"data","ts":{TS},"data":'.encode()
                    self.conn.send(frame(head + body % (symbol.encode(), version, version) + b"}"))
                    self.versions[topic] = version
            else:
                with self.lock:
                    self.others.append(topic)

    def unsubscribed(self, topics: List[str]) -> None:
        with self.lock:
            for topic in topics:
                self.versions.pop(topic, None)
                if topic in self.others:
                    self.others.remove(topic)

    def _update(self, topic: str, version: int) -> bytes:
        _body, bids, asks = _storm_book(self.levels)
        rng = self.rng
        top = max(1, self.levels // 10)

        def changes(prices: List[str]) -> str:
            picks = {
                prices[rng.randrange(top) if rng.random() < 0.7 else rng.randrange(len(prices))]
                for _ in range(5)
            }
            return ",".join(f'["{p}","{rng.randint(1, 50000) / 1000:.3f}"]' for p in picks)

        symbol = topic.rsplit(".", 1)[-1]
        return (
            f'{{"topic":"{topic}","event":"data","ts":{TS},"data":{{"symbol":"{symbol}",'
            f'"type":"update","startVersion":{version},"endVersion":{version},'
            f'"bids":[{changes(bids)}],"asks":[{changes(asks)}]}}}}'
        ).encode()

    def _other(self, topic: str) -> bytes:
        if topic.startswith("market.trade."):
            self.trade_id += 1
            return trade_payload(topic, self.trade_id)
        symbol = topic.rsplit(".", 1)[-1]
        return (
            f'{{"topic":"{topic}","event":"data","ts":{TS},"data":{{"symbol":"{symbol}",'
            '"lastPrice":"85000.1","open":"84000.0","high":"86000.0","low":"83000.0",'
            '"volume":"1234.567","quoteVolume":"104938271.5"}}'
        ).encode()

    def _maybe_drop(self) -> bool:
        if not self.sid or self.drop_at <= 0:
            return False
        with _storm_lock:
            started = _storm_started.get(self.sid)
            if (
                started is None
                or self.sid in _storm_dropped
                or time.monotonic() - started < self.drop_at
            ):
                return False
            _storm_dropped.add(self.sid)
            victims = list(_storm_sessions.pop(self.sid, []))
        for conn in victims:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return True

    def run(self) -> None:
        """Pace every topic of this connection from its own clock (10 ms ticks)."""
        start = time.monotonic()
        done_depth = done_trade = done_ticker = 0.0  # frames owed per topic so far
        while not self.conn.closed.is_set():
            if self._maybe_drop():
                return
            elapsed = time.monotonic() - start
            out: List[bytes] = []
            with self.lock:
                n_depth = int(elapsed * self.rate) - int(done_depth)
                for _ in range(max(0, n_depth)):
                    for topic in self.versions:
                        self.versions[topic] += 1
                        out.append(frame(self._update(topic, self.versions[topic])))
                done_depth += max(0, n_depth)
                for rate_, attr, prefix in (
                    (self.trades, "t", "market.trade."),
                    (self.tickers, "k", "market.ticker."),
                ):
                    if rate_ <= 0:
                        continue
                    done = done_trade if attr == "t" else done_ticker
                    due = int(elapsed * rate_) - int(done)
                    for _ in range(max(0, due)):
                        out += [frame(self._other(t)) for t in self.others if t.startswith(prefix)]
                    if attr == "t":
                        done_trade += max(0, due)
                    else:
                        done_ticker += max(0, due)
                # the sends stay under the lock: a snapshot never overtakes an update
                if out:
                    try:
                        self.conn.send(b"".join(out))
                    except OSError:
                        return
            time.sleep(0.01)


def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` (0: any), print ``PORT <n>``, serve forever."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def watch_parent() -> None:  # the parent closed our stdin: it is gone, so are we
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_parent, name="bench-sender-watch", daemon=True).start()
    while True:
        sock, _addr = listener.accept()
        conn = _Conn(sock)
        threading.Thread(target=conn.serve, name="bench-sender-conn", daemon=True).start()


class SenderProcess:
    """Start ``bench/sender.py`` in a child process; ``.port``, ``.url(**params)``, ``.stop()``."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError(f"sender did not start: {line!r}")
        self.port = int(line[1])

    def url(self, **params: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"ws://127.0.0.1:{self.port}/ws?{query}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> SenderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def url_for(port: int, **params: object) -> str:
    """The sender URL for ``port`` with query ``params``."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"ws://127.0.0.1:{port}/ws?{query}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        serve(args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
