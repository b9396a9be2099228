"""``python -m sixmm stream TOPIC...``: pushes as JSON lines on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Callable, List, Optional, TextIO

from ..manager import StreamManager
from .common import (
    CliError,
    PacedWarnings,
    Watch,
    add_command,
    add_source_args,
    manager_kwargs,
    normalize_topic,
    one_line,
    source,
    to_json,
)

__all__ = ["register", "run_until"]


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "stream",
        "print pushes of TOPIC... as JSON lines",
        epilog="Symbols are upper-cased (market.trade.btcusdt is market.trade.BTCUSDT);"
        " kline intervals are case-sensitive (1m a minute, 1M a month).",
    )
    parser.add_argument(
        "topics", nargs="+", metavar="TOPIC", help="e.g. market.trade.BTCUSDT market.tickers"
    )
    add_source_args(parser)
    parser.set_defaults(run=run)


def run_until(
    streams: StreamManager,
    watch: Watch,
    seconds: Optional[float],
    done: threading.Event,
    tick: Optional[Callable[[], None]] = None,
    period: float = 0.1,
) -> None:
    """Block until ``seconds`` pass, ``done`` is set, or Ctrl-C (returns), or until ``watch``
    gives up or the streams end (raises :class:`CliError`). ``tick`` runs every ``period``."""
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while not done.is_set():
            if tick is not None:
                tick()
            verdict = watch.verdict()
            if verdict is not None:
                raise CliError(verdict)
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(period)  # not streams.wait(): it takes Ctrl-C for itself
            if streams.wait(0):
                lost = watch.lost()
                if lost is not None:
                    raise CliError(f"the stream ended: {lost}")
                return
    except KeyboardInterrupt:
        return


def run(args: argparse.Namespace) -> int:
    topics: List[str] = list(dict.fromkeys(normalize_topic(t) for t in args.topics))
    out: TextIO = sys.stdout
    closed = threading.Event()
    lock = threading.Lock()

    def emit(topic: str) -> Any:
        def callback(item: Any) -> None:
            if closed.is_set():
                return
            line = json.dumps({"topic": topic, "data": to_json(item)}, separators=(",", ":"))
            try:
                with lock:
                    out.write(line + "\n")
                    out.flush()
            except (BrokenPipeError, ValueError):  # the reader went away: stop quietly
                closed.set()

        return callback

    with source(args) as url:
        watch = Watch(url, args.connect_within, on_problem=PacedWarnings())
        try:
            streams = StreamManager(
                url, on_error=watch.on_error, on_state=watch.on_state, **manager_kwargs(args)
            )
            for topic in topics:
                streams.subscribe(topic, emit(topic))
        except ValueError as exc:
            raise CliError(one_line(exc), 2) from None
        watch.asked(topics)
        with streams:
            run_until(streams, watch, args.seconds, closed)
    if closed.is_set():
        # Python would complain about flushing a closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
