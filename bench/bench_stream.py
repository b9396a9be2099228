"""End-to-end throughput over loopback: raw socket ceiling, bare websocket-client loop (L), sixmm.

Run: ``python bench/bench_stream.py [--json orjson|json] [--runs N] [--quick]`` (starts its own
sender unless ``--port`` names a running ``bench/sender.py``). Prints one JSON object per
figure per run on stdout (``bench/run.py`` collects them into the table).

Figures, all in messages per second, measured from the 10th percent of the stream to its end:

- ``raw``: a plain socket reading the same pre-framed bytes and only counting them (the
  sender's ceiling: what loopback TCP plus the sender can deliver);
- ``bare``: L, websocket-client's ``WebSocket.recv()`` loop with ``skip_utf8_validation=True``
  on the same stream (receives the text, does nothing with it);
- ``sixmm``: the public API end to end -- ``StreamManager(url, dispatcher=...)``, then
  ``streams.trades("BTCUSDT", cb)`` or ``streams.order_book("BTCUSDT", on_update=cb)``:
  frame, parse, typed model (or book apply), dispatch, user callback that counts.

``--json json`` hides orjson from this process before sixmm is imported, so sixmm runs on its
stdlib fallback exactly as it does where the ``fast`` extra is not installed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.sender import SYMBOL, SenderProcess, stream_bytes, url_for
from bench.workload import check_book, expected_book

# ``SIXMM_BENCH_TREE=DIR`` runs another checkout's ``sixmm`` under this tree's bench scripts
# (``bench/compare.py --against``); this tree's ``bench`` package is imported above, first.
TREE = os.environ.get("SIXMM_BENCH_TREE", "")
if TREE and TREE not in sys.path:
    sys.path.insert(0, TREE)

LEVELS = 5000  # the sender's default snapshot depth per side
MIN_SENDER_RATIO = 20.0  # the sender must deliver >= 20x L, or the run is invalid

WARM = 0.1  # the first 10% of a stream is warm-up: not timed
TIMEOUT = 120.0


def force_stdlib_json() -> None:
    """Make ``import orjson`` fail in this process (call before importing sixmm)."""
    if "sixmm" in sys.modules:
        raise RuntimeError("force_stdlib_json() must run before sixmm is imported")
    sys.modules["orjson"] = None  # type: ignore[assignment]


# -- the sender's ceiling ------------------------------------------------------------------


def raw_reader(port: int, kind: str, n: int) -> float:
    """Messages/s of a plain socket that only counts the bytes of the pre-framed stream."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock.sendall(
            (
                f"GET /ws?kind={kind}&n={n}&auto=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("sender closed during the handshake")
            head += chunk
        header, rest = head.split(b"\r\n\r\n", 1)
        total = 0
        for line in header.decode("latin-1").split("\r\n"):
            if line.lower().startswith("x-bench-bytes:"):
                total = int(line.split(":", 1)[1])
        got = len(rest)
        buf = bytearray(1 << 20)
        recv_into = sock.recv_into
        mark = int(total * WARM)
        while got < mark:
            got += recv_into(buf)
        t0 = time.perf_counter()
        start = got
        while got < total:
            k = recv_into(buf)
            if not k:
                raise ConnectionError("sender closed early")
            got += k
        dt = time.perf_counter() - t0
        return n * (got - start) / total / dt
    finally:
        sock.close()


# -- L: the bare websocket-client loop -----------------------------------------------------


def topic_of(kind: str) -> str:
    """The topic a stream kind is subscribed as (``book`` is a depth stream)."""
    return f"market.{'trade' if kind == 'trade' else 'depth'}.{SYMBOL}"


_expected: Dict[Tuple[str, int], Any] = {}


def verify_book(book: Any, kind: str, n: int) -> None:
    """Compare the live book with the reference book of the same stream (AssertionError)."""
    key = (kind, n)
    if key not in _expected:
        _expected[key] = expected_book(stream_bytes(kind, n, LEVELS))
    bids, asks, version = _expected[key]
    got_bids, got_asks = book.levels()
    if book.version != version or got_bids != bids or got_asks != asks:
        check_book(book, stream_bytes(kind, n, LEVELS))  # raises with the details
        raise AssertionError("the book differs from the reference")


def _subscribe_text(topic: str) -> str:
    return json.dumps({"id": "1", "op": "subscribe", "args": [topic]})


class Rates(NamedTuple):
    """Messages per second of wall time, and per second of this process's CPU time (every
    thread, user + system): the second is far less sensitive to other load on the machine."""

    wall: float
    cpu: float


def bare_loop(port: int, kind: str, n: int) -> Rates:
    """Messages/s of websocket-client's ``recv()`` loop (``skip_utf8_validation=True``)."""
    import websocket

    topic = topic_of(kind)
    ws = websocket.create_connection(url_for(port, kind=kind, n=n), skip_utf8_validation=True)
    try:  # websocket-client's default: a blocking socket (a timeout adds a poll per read)
        ws.send(_subscribe_text(topic))
        ws.recv()  # the ack
        if kind != "trade":
            ws.recv()  # the snapshot
        recv = ws.recv
        warm = int(n * WARM)
        for _ in range(warm):
            recv()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n - warm):
            recv()
        t1, c1 = time.perf_counter(), time.process_time()
        return Rates((n - warm) / (t1 - t0), (n - warm) / max(c1 - c0, 1e-9))
    finally:
        ws.close()


# -- the common peer pattern: WebSocketApp + json.loads ------------------------------------


def peer_app(port: int, kind: str, n: int) -> Rates:
    """What many exchange SDKs do: websocket-client's ``WebSocketApp`` (callback layer, its
    own thread-less ``run_forever``), ``json.loads`` of each message, a user callback with the
    dict. Trades only (no book)."""
    import websocket

    topic = topic_of(kind)
    warm = int(n * WARM)
    counter = Counter(n + 1, warm + 1)  # the ack is the first message
    loads = json.loads

    def on_open(app: Any) -> None:
        app.send(_subscribe_text(topic))

    def on_message(app: Any, message: str) -> None:
        counter(loads(message))
        if counter.done.is_set():
            app.close()

    app = websocket.WebSocketApp(url_for(port, kind=kind, n=n), on_open=on_open)
    app.on_message = on_message
    app.run_forever(skip_utf8_validation=True)
    if not counter.done.is_set():
        raise RuntimeError(f"only {counter.count} of {n + 1} messages")
    return counter.rates()


# -- sixmm through the public API ----------------------------------------------------------


class Counter:
    """A user callback that counts calls and times the stretch from ``warm`` to ``n``."""

    def __init__(self, n: int, warm: int) -> None:
        self.n = n
        self.warm = warm
        self.count = 0
        self.t0 = self.t1 = self.c0 = self.c1 = 0.0
        self.done = threading.Event()

    def __call__(self, _item: Any) -> None:
        self.count += 1
        c = self.count
        if c == self.warm:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif c == self.n:
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            self.done.set()

    def rates(self) -> Rates:
        k = self.n - self.warm
        return Rates(k / (self.t1 - self.t0), k / max(self.c1 - self.c0, 1e-9))


class DrainThread:
    """The user's thread that drains a ``QueueDispatcher`` whenever it has work (GUI-like)."""

    def __init__(self) -> None:
        import sixmm

        self.ready = threading.Event()
        self.inbox = sixmm.QueueDispatcher(maxsize=10000, overflow="block", on_ready=self.ready.set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-drain", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ready.wait(0.5)
            self.ready.clear()
            self.inbox.drain()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ready.set()
        self._thread.join(5)


def make_dispatcher(name: str) -> Any:
    """``inline``, ``worker`` or ``queue`` (returns ``(dispatcher, drain thread or None)``)."""
    import sixmm

    if name == "inline":
        return sixmm.InlineDispatcher(), None
    if name == "worker":
        return sixmm.WorkerDispatcher(), None
    if name == "queue":
        drain = DrainThread()
        return drain.inbox, drain
    raise ValueError(name)


def sixmm_stream(port: int, kind: str, n: int, dispatcher: str) -> Rates:
    """Messages/s through the public API (trades: one callback per trade; depth: one
    ``on_update(book)`` per applied update of the live 5,000-level book)."""
    import sixmm

    disp, drain = make_dispatcher(dispatcher)
    errors: List[BaseException] = []
    # depth: the snapshot is the first on_update call, then one per update
    total = n if kind == "trade" else n + 1
    counter = Counter(total, total - (n - int(n * WARM)))
    streams = sixmm.StreamManager(
        url_for(port, kind=kind, n=n), dispatcher=disp, on_error=errors.append
    )
    if drain is not None:
        drain.start()
    try:
        with streams:
            if kind == "trade":
                streams.trades(SYMBOL, counter)
            else:
                book = streams.order_book(SYMBOL, on_update=counter)
            if not counter.done.wait(TIMEOUT):
                raise RuntimeError(
                    f"only {counter.count} of {total} callbacks; errors: {errors[:3]}"
                )
            if kind != "trade":
                if not book.synced:
                    raise RuntimeError("the book is not synced at the end of the run")
                verify_book(book, kind, n)
    finally:
        if drain is not None:
            drain.stop()
    if errors:
        raise RuntimeError(f"sixmm reported errors: {errors[:3]}")
    return counter.rates()


# -- the runner ----------------------------------------------------------------------------

DISPATCHERS = ("inline", "worker", "queue")


def run_once(
    port: int,
    backend: str,
    run: int,
    trades: int,
    depth: int,
    emit: Callable[[Dict[str, Any]], None],
    book: int = 0,
) -> None:
    """One run: for each stream, the raw ceiling, then L, and each sixmm figure followed by L
    again; a sixmm figure's ratio is taken against the mean of the L just before and after it
    (the machine's load drifts: neighbours in time are the fairest comparison)."""
    for kind, n in (("trade", trades), ("depth", depth), ("book", book)):
        if not n:
            continue
        base = {"bench": "stream", "kind": kind, "run": run, "backend": backend, "n": n}
        raw = raw_reader(port, kind, n)
        before = bare_loop(port, kind, n)
        ratio = raw / before.wall
        emit(dict(base, figure="raw", rate=raw, ratio=ratio, valid=ratio >= MIN_SENDER_RATIO))
        if ratio < MIN_SENDER_RATIO:
            print(
                f"INVALID RUN: the sender delivered only {ratio:.1f}x L on {kind} "
                f"(needs >= {MIN_SENDER_RATIO:.0f}x)",
                file=sys.stderr,
            )
        emit(dict(base, figure="bare", rate=before.wall, cpu_rate=before.cpu, ratio=1.0))
        figures: List[Tuple[str, Callable[[], Rates]]] = [
            (f"sixmm-{name}", functools.partial(sixmm_stream, port, kind, n, name))
            for name in DISPATCHERS
        ]
        if kind == "trade":
            figures.append(("peer-app", functools.partial(peer_app, port, kind, n)))
        for figure, measure in figures:
            try:
                got = measure()
            except AssertionError as exc:  # a wrong book: never a figure, fail the run
                emit(dict(base, figure=figure, error=f"WRONG BOOK: {exc}"))
                raise
            except Exception as exc:  # report, keep going: a missing figure is visible
                emit(dict(base, figure=figure, error=f"{type(exc).__name__}: {exc}"))
                continue
            after = bare_loop(port, kind, n)
            emit(dict(base, figure="bare", rate=after.wall, cpu_rate=after.cpu, ratio=1.0))
            emit(
                dict(
                    base,
                    figure=figure,
                    rate=got.wall,
                    cpu_rate=got.cpu,
                    ratio=got.wall / ((before.wall + after.wall) / 2),
                    cpu_ratio=got.cpu / ((before.cpu + after.cpu) / 2),
                )
            )
            before = after


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="a running bench/sender.py")
    parser.add_argument("--json", choices=("orjson", "json"), default="orjson")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--first-run", type=int, default=0, help="index of the first run")
    parser.add_argument("--trades", type=int, default=60_000, help="trade messages per figure")
    parser.add_argument("--depth", type=int, default=20_000, help="depth updates per figure")
    parser.add_argument(
        "--book", type=int, default=20_000, help="whole-book depth updates per figure (issue 16)"
    )
    parser.add_argument("--only-kinds", default="", help="e.g. book,trade: only these streams")
    parser.add_argument("--dispatchers", default="", help="e.g. inline: only these dispatchers")
    parser.add_argument("--quick", action="store_true", help="small streams")
    args = parser.parse_args(argv)
    if args.json == "json":
        force_stdlib_json()
    if args.quick:
        args.trades, args.depth = min(args.trades, 20_000), min(args.depth, 4_000)
        args.book = min(args.book, 4_000)
    if args.only_kinds:
        kinds = set(args.only_kinds.split(","))
        args.trades = args.trades if "trade" in kinds else 0
        args.depth = args.depth if "depth" in kinds else 0
        args.book = args.book if "book" in kinds else 0
    if args.dispatchers:
        global DISPATCHERS
        DISPATCHERS = tuple(args.dispatchers.split(","))
    import sixmm
    from sixmm import _json

    if TREE and not os.path.abspath(sixmm.__file__).startswith(os.path.abspath(TREE) + os.sep):
        print(f"SIXMM_BENCH_TREE={TREE} but sixmm came from {sixmm.__file__}", file=sys.stderr)
        return 2
    backend = _json.BACKEND
    if backend != args.json:
        print(f"asked for {args.json} but sixmm uses {backend}", file=sys.stderr)
        return 2

    def emit(row: Dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    sender = None if args.port else SenderProcess()
    port = args.port or (sender.port if sender else 0)
    try:
        for run in range(args.first_run, args.first_run + args.runs):
            run_once(port, backend, run, args.trades, args.depth, emit, book=args.book)
    finally:
        if sender is not None:
            sender.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
