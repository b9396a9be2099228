"""``python -m sixmm record | replay | doctor``: the command-line side of recordings.

Registered by :mod:`sixmm.cli` (its ``COMMANDS`` list names this module). The
command line may print; the library never does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, TextIO

from ..config import DEFAULT_REST_URL, DEFAULT_WS_URL
from ..manager import StreamManager
from ..protocol.redact import scrub
from .common import to_json

__all__ = ["COMMANDS", "add_parsers", "register"]


def add_parsers(sub: Any) -> None:
    """Add ``record``, ``replay`` and ``doctor`` to ``python -m sixmm``'s subparsers."""
    record = sub.add_parser("record", help="record TOPIC... (every frame) to a file")
    record.add_argument("topics", nargs="+", metavar="TOPIC", help="e.g. market.trade.BTCUSDT")
    record.add_argument("--out", required=True, help="the recording (.jsonl, or .jsonl.gz)")
    record.add_argument("--url", default=DEFAULT_WS_URL, help=f"WebSocket URL ({DEFAULT_WS_URL})")
    record.add_argument("--seconds", type=float, help="stop after this many seconds")
    record.add_argument(
        "--user",
        action="store_true",
        help="also record the private stream (SIXMM_API_KEY/SIXMM_API_SECRET or SIXMM_TOKEN, "
        "--rest-url)",
    )
    record.add_argument("--rest-url", default=DEFAULT_REST_URL, help="REST URL (for --user)")

    replay = sub.add_parser("replay", help="print a recording's pushes as JSON lines")
    replay.add_argument("file", help="a recording made by `record` or record=PATH")
    replay.add_argument("--speed", type=float, help="1.0: the recorded timing (default: flat out)")

    doctor = sub.add_parser("doctor", help="check a server end to end; exit 0 if all is well")
    doctor.add_argument("--url", default=DEFAULT_WS_URL, help=f"WebSocket URL ({DEFAULT_WS_URL})")
    doctor.add_argument("--rest-url", default=None, help="REST URL (default: from --url)")
    doctor.add_argument("--symbol", default="BTCUSDT", help="symbol to look at (BTCUSDT)")
    doctor.add_argument("--seconds", type=float, default=10.0, help="how long to watch (10)")
    doctor.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    doctor.add_argument("--capture", help="also write a redacted recording of the checks")


def _env_rest(rest_url: str) -> Any:
    from ..rest.client import RestClient

    key, secret, token = (
        os.environ.get(n) for n in ("SIXMM_API_KEY", "SIXMM_API_SECRET", "SIXMM_TOKEN")
    )
    if key and secret:
        return RestClient(api_key=key, api_secret=secret, base_url=rest_url)
    if token:
        return RestClient(token=token, base_url=rest_url)
    return None


def _stderr(error: BaseException) -> None:
    print(f"sixmm: {type(error).__name__}: {scrub(str(error))}", file=sys.stderr)


def _cmd_record(args: argparse.Namespace) -> int:
    rest = _env_rest(args.rest_url) if args.user else None
    if args.user and rest is None:
        print("sixmm: --user needs SIXMM_API_KEY/SIXMM_API_SECRET or SIXMM_TOKEN", file=sys.stderr)
        return 2
    try:
        streams = StreamManager(args.url, rest=rest, record=args.out, on_error=_stderr)
        for topic in args.topics:
            streams.subscribe(topic, lambda item: None)
        if rest is not None:
            streams.user(on_event=lambda item: None)
    except ValueError as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return 2
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with streams:
        try:
            while deadline is None or time.monotonic() < deadline:
                if streams.wait(0.5):
                    break
        except KeyboardInterrupt:
            pass
        stats = streams.stats().get("recorder", {})
    print(
        f"sixmm: recorded {stats.get('written', 0)} events to {args.out}"
        f" ({stats.get('dropped', 0)} dropped)",
        file=sys.stderr,
    )
    return 0


def _printer(
    out: TextIO, topic: str, lock: threading.Lock, closed: threading.Event
) -> Callable[[Any], None]:
    def callback(item: Any) -> None:
        if closed.is_set():
            return
        line = json.dumps(
            {"topic": topic, "data": to_json(item)}, separators=(",", ":"), default=str
        )
        try:
            with lock:
                out.write(line + "\n")
        except (BrokenPipeError, ValueError):
            closed.set()

    return callback


def _cmd_replay(args: argparse.Namespace) -> int:
    from ..replay import RecordingError, recorded_topics

    try:
        topics, has_user = recorded_topics(args.file)
        streams = StreamManager.replay(args.file, speed=args.speed, on_error=_stderr)
    except (OSError, RecordingError, ValueError) as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return 2
    lock, closed = threading.Lock(), threading.Event()
    for topic in topics:
        streams.subscribe(topic, _printer(sys.stdout, topic, lock, closed))
    if has_user:
        streams.user(on_event=_printer(sys.stdout, "user", lock, closed))
    with streams:
        streams.wait()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        closed.set()
    if closed.is_set():
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import Doctor

    doctor = Doctor(
        args.url,
        rest_url=args.rest_url,
        symbol=args.symbol,
        seconds=args.seconds,
        capture=args.capture,
        rest=_env_rest(args.rest_url or _rest_from_ws(args.url)),
    )
    report = doctor.run()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.ok else 1


def _rest_from_ws(url: str) -> str:
    from ..doctor import rest_url_for

    return rest_url_for(url)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "record": _cmd_record,
    "replay": _cmd_replay,
    "doctor": _cmd_doctor,
}


def register(sub: Any) -> None:
    """Add ``record``, ``replay`` and ``doctor`` (the :mod:`sixmm.cli` registration hook)."""
    add_parsers(sub)
    for name, run in COMMANDS.items():
        sub.choices[name].set_defaults(run=run)
