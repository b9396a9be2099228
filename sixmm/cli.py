"""``python -m sixmm``: the demo, a JSON-lines streamer, a live book view, and the sandbox.

The command line may print; the library never does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from decimal import Decimal
from typing import Any, Deque, Iterator, List, Optional, Sequence, TextIO

from .bus import cli as bus_cli
from .cli_record import COMMANDS as RECORD_COMMANDS
from .cli_record import add_parsers as add_record_parsers
from .config import DEFAULT_WS_URL
from .errors import SixMMError
from .manager import StreamManager
from .orderbook import OrderBook
from .protocol.topics import parse_topic
from .states import StateEvent

__all__ = ["main"]

_SANDBOX_HINT = "this command needs the sandbox extra: pip install 'sixmm[sandbox]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sixmm",
        description="sixmm: dependable 6MM WebSocket streams for threads, scripts and GUIs.",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of sixmm's own logs, written to stderr (default WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="live book, trades and ticker from an in-process sandbox")
    demo.add_argument("--symbol", default="BTCUSDT", help="symbol to show (default BTCUSDT)")
    demo.add_argument("--depth", type=int, default=8, help="book levels per side (default 8)")
    demo.add_argument("--seconds", type=float, help="stop after this many seconds")

    stream = sub.add_parser("stream", help="print pushes of TOPIC... as JSON lines")
    stream.add_argument("topics", nargs="+", metavar="TOPIC", help="e.g. market.trade.BTCUSDT")
    _add_source_args(stream)

    book = sub.add_parser("book", help="a live top-of-book view of SYMBOL")
    book.add_argument("symbol", help="e.g. BTCUSDT")
    book.add_argument("--depth", type=int, default=10, help="levels per side (default 10)")
    _add_source_args(book)

    sandbox = sub.add_parser(
        "sandbox", help="run the local sandbox exchange", add_help=False, prefix_chars="\0"
    )
    sandbox.add_argument("args", nargs=argparse.REMAINDER)
    add_record_parsers(sub)  # record, replay, doctor
    bus_cli.register(sub)
    return parser


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help=f"WebSocket URL (default {DEFAULT_WS_URL})")
    source.add_argument(
        "--sandbox", action="store_true", help="stream from an in-process sandbox exchange"
    )
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")


@contextlib.contextmanager
def _source(url: Optional[str], use_sandbox: bool) -> Iterator[str]:
    """Yield the URL to stream from, running an in-process sandbox if asked."""
    if not use_sandbox:
        yield url or DEFAULT_WS_URL
        return
    try:
        from .sandbox import Sandbox
    except ImportError:
        raise SystemExit(_SANDBOX_HINT) from None
    with Sandbox(port=0) as sb:
        yield sb.ws_url


def _stderr_errors(error: BaseException) -> None:
    print(f"sixmm: {type(error).__name__}: {error}", file=sys.stderr)


def _run_until(streams: StreamManager, seconds: Optional[float], done: threading.Event) -> None:
    """Block until ``seconds`` pass, ``done`` is set, the streams end, or Ctrl-C."""
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while not done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if streams.wait(0.2):
                break
    except KeyboardInterrupt:
        pass


# -- stream -----------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    raw = getattr(value, "raw", None)
    if raw is not None:
        return raw
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _cmd_stream(args: argparse.Namespace) -> int:
    for topic in args.topics:
        if topic.startswith("market."):
            try:
                parse_topic(topic)
            except ValueError as exc:
                print(f"sixmm: bad topic {topic!r}: {exc}", file=sys.stderr)
                return 2
    out: TextIO = sys.stdout
    closed = threading.Event()
    lock = threading.Lock()

    def emit(topic: str) -> Any:
        def callback(item: Any) -> None:
            if closed.is_set():
                return
            line = json.dumps({"topic": topic, "data": _to_json(item)}, separators=(",", ":"))
            try:
                with lock:
                    out.write(line + "\n")
                    out.flush()
            except (BrokenPipeError, ValueError):  # the reader went away: stop quietly
                closed.set()

        return callback

    with _source(args.url, args.sandbox) as url:
        try:
            streams = StreamManager(url, on_error=_stderr_errors)
        except ValueError as exc:
            print(f"sixmm: {exc}", file=sys.stderr)
            return 2
        with streams:
            for topic in args.topics:
                streams.subscribe(topic, emit(topic))
            _run_until(streams, args.seconds, closed)
    if closed.is_set():
        # Python would complain about flushing a closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


# -- book and demo views ----------------------------------------------------------------


def _fmt(value: Decimal) -> str:
    return f"{value:f}"


def _book_lines(book: OrderBook, depth: int) -> List[str]:
    view = book.view(depth)  # one consistent read
    bids, asks = view["bids"], view["asks"]
    status = "synced" if view["synced"] else "NOT SYNCED (resyncing: do not trade on this)"
    lines = [f"{book.symbol}  version {view['version']}  {status}", ""]
    lines.append(f"{'bid size':>14} {'bid':>14} | {'ask':<14} {'ask size':<14}")
    for i in range(depth):
        bid = f"{_fmt(bids[i][1]):>14} {_fmt(bids[i][0]):>14}" if i < len(bids) else " " * 29
        ask = f"{_fmt(asks[i][0]):<14} {_fmt(asks[i][1]):<14}" if i < len(asks) else ""
        lines.append(f"{bid} | {ask}")
    return lines


class _Screen:
    """Redraws in place on a terminal; prints plain blocks when piped."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()

    def show(self, lines: Sequence[str]) -> None:
        text = "\n".join(lines)
        if self._tty:
            self._out.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            self._out.write(text + "\n\n")
        self._out.flush()


def _view_loop(
    streams: StreamManager,
    render: Any,
    seconds: Optional[float],
    period: float = 0.25,
) -> None:
    screen = _Screen(sys.stdout)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while True:
            screen.show(render())
            if deadline is not None and time.monotonic() >= deadline:
                break
            if streams.wait(period if sys.stdout.isatty() else 1.0):
                break
    except KeyboardInterrupt:
        pass


def _state_line(states: Deque[StateEvent]) -> str:
    if not states:
        return "state: connecting..."
    last = states[-1]
    return f"state: {last.state.value} ({last.reason})"


def _cmd_book(args: argparse.Namespace) -> int:
    states: Deque[StateEvent] = deque(maxlen=1)
    with _source(args.url, args.sandbox) as url:
        try:
            streams = StreamManager(url, on_error=_stderr_errors, on_state=states.append)
            book = streams.order_book(args.symbol)
        except ValueError as exc:
            print(f"sixmm: {exc}", file=sys.stderr)
            return 2
        with streams:
            _view_loop(
                streams,
                lambda: [*_book_lines(book, args.depth), "", _state_line(states)],
                args.seconds,
            )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .sandbox import Sandbox
    except ImportError:
        print(f"sixmm: {_SANDBOX_HINT}", file=sys.stderr)
        return 2
    trades: Deque[Any] = deque(maxlen=8)
    ticker: Deque[Any] = deque(maxlen=1)
    states: Deque[StateEvent] = deque(maxlen=1)
    with Sandbox(port=0) as sb:
        streams = StreamManager(sb.ws_url, on_error=_stderr_errors, on_state=states.append)
        book = streams.order_book(args.symbol)
        streams.trades(args.symbol, trades.append)
        streams.ticker(args.symbol, ticker.append)

        def render() -> List[str]:
            lines = [f"sixmm demo: streaming from the sandbox exchange at {sb.ws_url}", ""]
            lines += _book_lines(book, args.depth)
            lines += ["", "latest trades:"]
            for t in list(trades)[::-1]:
                lines.append(f"  {t.side:<4} {_fmt(t.quantity):>10} @ {_fmt(t.price)}")
            if ticker:
                t = ticker[-1]
                lines += ["", f"ticker: last {t.last_price}  24h change {t.price_change_percent}%"]
            stats = streams.stats()
            msgs = sum(c["messages"] for c in stats["connections"].values())
            lines += ["", f"{_state_line(states)}  messages: {msgs}", "Ctrl-C to stop"]
            return lines

        with streams:
            book.wait_synced(5)
            _view_loop(streams, render, args.seconds)
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        from .sandbox.__main__ import main as sandbox_main
    except ImportError:
        print(f"sixmm: {_SANDBOX_HINT}", file=sys.stderr)
        return 2
    return sandbox_main(list(args.args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sixmm`` and the ``sixmm`` console script."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sixmm")
    root.addHandler(handler)
    root.setLevel(args.log_level)
    commands = {
        "demo": _cmd_demo,
        "stream": _cmd_stream,
        "book": _cmd_book,
        "sandbox": _cmd_sandbox,
        **RECORD_COMMANDS,
        "bridge": bus_cli.run,
    }
    try:
        return commands[args.command](args)
    except SixMMError as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
