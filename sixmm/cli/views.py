"""``python -m sixmm demo`` and ``python -m sixmm book SYMBOL``: live views that fit the
terminal (see :mod:`sixmm.cli.screen`), with the connection state and the newest unresolved
problem on a status line."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections import deque
from decimal import Decimal
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence

from ..manager import StreamManager
from ..orderbook import OrderBook
from ..protocol.topics import depth_topic, ticker_topic, trade_topic
from .common import (
    SANDBOX_HINT,
    CliError,
    Watch,
    add_command,
    add_source_args,
    manager_kwargs,
    one_line,
    positive_float,
    positive_int,
    source,
)
from .screen import Screen
from .stream import run_until

__all__ = ["book_lines", "register"]

_BOOK_FIXED = 5  # title, state, book header, column header, status
_DEMO_FIXED = 7  # title, state, book header, column header, "latest trades:", ticker, status


def register(subparsers: Any) -> None:
    demo = add_command(
        subparsers, "demo", "live book, trades and ticker from an in-process sandbox exchange"
    )
    demo.add_argument("--symbol", default="BTCUSDT", help="symbol to show (upper-cased)")
    demo.add_argument(
        "--depth",
        type=positive_int,
        default=8,
        help="book levels per side (fewer if the terminal is too small)",
    )
    demo.add_argument("--seconds", type=positive_float, help="stop after this many seconds")
    demo.set_defaults(run=run_demo)

    book = add_command(subparsers, "book", "a live top-of-book view of SYMBOL")
    book.add_argument("symbol", help="e.g. BTCUSDT (upper-cased)")
    book.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="levels per side (default: as many as fit the terminal; 10 when piped)",
    )
    add_source_args(book)
    book.set_defaults(run=run_book)


def _fmt(value: Decimal) -> str:
    return f"{value:f}"


def book_lines(book: OrderBook, depth: int, asked: Optional[int] = None) -> List[str]:
    """The book header, column headers and ``depth`` rows (one consistent read)."""
    view = book.view(depth)
    bids, asks = view["bids"], view["asks"]
    status = "synced" if view["synced"] else "NOT SYNCED (resyncing: do not trade on this)"
    fit = f"  ({depth} of {asked} levels fit)" if asked is not None and asked > depth else ""
    lines = [f"{book.symbol}  version {view['version']}  {status}{fit}"]
    lines.append(f"{'bid size':>14} {'bid':>14} | {'ask':<14} {'ask size':<14}")
    for i in range(depth):
        bid = f"{_fmt(bids[i][1]):>14} {_fmt(bids[i][0]):>14}" if i < len(bids) else " " * 29
        ask = f"{_fmt(asks[i][0]):<14} {_fmt(asks[i][1]):<14}" if i < len(asks) else ""
        lines.append(f"{bid} | {ask}")
    return lines


def _status_line(watch: Watch) -> str:
    problem = watch.status()
    return f"status: {problem}" if problem else "status: ok"


def _view(
    streams: StreamManager,
    watch: Watch,
    render: Callable[[Screen], Sequence[str]],
    deadline: Optional[float],
) -> None:
    """Draw ``render(screen)`` (4 frames a second on a terminal, 1 when piped) until the
    deadline, Ctrl-C / SIGTERM, or a verdict (:class:`CliError`, raised after the screen is
    restored)."""
    with _term_as_interrupt(), Screen(sys.stdout) as screen:
        period = 0.25 if screen.tty else 1.0
        next_draw = [0.0]

        def draw() -> None:
            now = time.monotonic()
            if now >= next_draw[0]:
                next_draw[0] = now + period
                screen.show(render(screen))

        seconds = None if deadline is None else max(0.0, deadline - time.monotonic())
        run_until(streams, watch, seconds, threading.Event(), tick=draw)
        if not screen.tty:
            screen.show(render(screen))  # the last state, for a reader of the pipe


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a view like Ctrl-C does, so the terminal is restored either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_book(args: argparse.Namespace) -> int:
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with source(args) as url:
        watch = Watch(url, args.connect_within)
        try:
            streams = StreamManager(
                url, on_error=watch.on_error, on_state=watch.on_state, **manager_kwargs(args)
            )
            book = streams.order_book(args.symbol)
        except ValueError as exc:
            raise CliError(one_line(exc), 2) from None
        watch.asked([depth_topic(args.symbol)])
        title = f"sixmm book {book.symbol} from {url}   Ctrl-C to stop"

        def render(screen: Screen) -> List[str]:
            depth = args.depth or 10
            if screen.tty:
                fit = max(1, screen.size()[1] - _BOOK_FIXED)
                depth = min(args.depth or fit, fit)
            return [
                title,
                watch.state_line(),
                *book_lines(book, depth, args.depth),
                _status_line(watch),
            ]

        with streams:
            _view(streams, watch, render, deadline)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        from ..sandbox import Sandbox
    except ImportError:
        raise CliError(SANDBOX_HINT, 2) from None
    try:
        topics = [depth_topic(args.symbol), trade_topic(args.symbol), ticker_topic(args.symbol)]
    except ValueError as exc:
        raise CliError(one_line(exc), 2) from None
    trades: Deque[Any] = deque(maxlen=64)
    ticker: Deque[Any] = deque(maxlen=1)
    with Sandbox(port=0) as sb:
        watch = Watch(sb.ws_url, 10.0)
        streams = StreamManager(sb.ws_url, on_error=watch.on_error, on_state=watch.on_state)
        book = streams.order_book(args.symbol)
        streams.trades(args.symbol, trades.append)
        streams.ticker(args.symbol, ticker.append)
        watch.asked(topics)
        title = f"sixmm demo: the sandbox exchange at {sb.ws_url}   Ctrl-C to stop"

        def render(screen: Screen) -> List[str]:
            depth, shown = args.depth, 8
            if screen.tty:
                room = max(2, screen.size()[1] - _DEMO_FIXED)
                depth = max(1, min(args.depth, room - min(3, room // 2)))
                shown = max(0, min(8, room - depth))
            stats = streams.stats()
            msgs = sum(c["messages"] for c in stats["connections"].values())
            lines = [title, f"{watch.state_line()}  messages: {msgs}"]
            lines += book_lines(book, depth, args.depth)
            lines.append("latest trades:")
            recent = list(trades)[-shown:][::-1] if shown else []
            for t in recent:
                lines.append(f"  {t.side:<4} {_fmt(t.quantity):>10} @ {_fmt(t.price)}")
            lines += [""] * (shown - len(recent)) if screen.tty else []
            if ticker:
                t = ticker[-1]
                lines.append(f"ticker: last {t.last_price}  24h change {t.price_change_percent}%")
            else:
                lines.append("ticker: (waiting)")
            lines.append(_status_line(watch))
            return lines

        with streams:
            _view(streams, watch, render, deadline)
    return 0
