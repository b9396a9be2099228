"""``python -m sixmm bridge TOPIC... --redis URL``: the bridge on the command line.

Registered in :mod:`sixmm.cli` with two lines (``register(sub)`` and ``"bridge": run``).
Runs until Ctrl-C or SIGTERM, then stops cleanly (exit 0). Prints one line to stderr at start
(session id, group, topics) and one per role change; the library never prints.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any, Optional

from ..config import DEFAULT_WS_URL

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``bridge`` subcommand to ``python -m sixmm``'s subparsers."""
    p = sub.add_parser("bridge", help="publish public TOPIC... into Redis Streams")
    p.add_argument("topics", nargs="+", metavar="TOPIC", help="e.g. market.trade.BTCUSDT")
    p.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    p.add_argument(
        "--url", default=DEFAULT_WS_URL, help=f"WebSocket URL (default {DEFAULT_WS_URL})"
    )
    p.add_argument("--shard", default=None, help="I/N: publish only shard I of N (1-based)")
    p.add_argument("--group", default=None, help="lease group (default: from topics and shard)")
    p.add_argument("--prefix", default="sixmm", help="Redis key prefix (default sixmm)")
    p.add_argument("--maxlen", type=int, default=10_000, help="XADD MAXLEN ~ N (default 10000)")
    p.add_argument("--queue-size", type=int, default=10_000, help="entries (default 10000)")
    p.add_argument("--snapshot-interval", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--lease-ttl", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument(
        "--allow-insecure", action="store_true", help="allow plain ws:// to a non-loopback host"
    )


def run(args: argparse.Namespace) -> int:
    """Run the bridge described by ``args`` until Ctrl-C, SIGTERM or ``--seconds``."""
    try:
        from .bridge import Bridge
        from .format import parse_shard
    except ImportError as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_role(role: str, reason: str) -> None:
        print(f"sixmm bridge: {role} ({reason})", file=sys.stderr, flush=True)

    def on_error(error: BaseException) -> None:
        print(f"sixmm bridge: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    try:
        shard = parse_shard(args.shard) if args.shard else None
        bridge = Bridge(
            args.topics,
            args.redis,
            url=args.url,
            shard=shard,
            group=args.group,
            prefix=args.prefix,
            maxlen=args.maxlen,
            queue_size=args.queue_size,
            snapshot_interval=args.snapshot_interval,
            lease_ttl=args.lease_ttl,
            on_error=on_error,
            on_role=on_role,
            allow_insecure=args.allow_insecure,
        )
    except (ValueError, ImportError) as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    print(
        f"sixmm bridge: session={bridge.session} group={bridge.group} "
        f"topics={','.join(bridge.topics) or '-'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        bridge.start()
        try:
            stop.wait(args.seconds) if args.seconds else _wait_forever(stop)
        except KeyboardInterrupt:
            pass
    finally:
        bridge.stop()
        signal.signal(signal.SIGTERM, previous)
    print("sixmm bridge: stopped", file=sys.stderr, flush=True)
    return 0


def _wait_forever(stop: threading.Event) -> None:
    while not stop.wait(0.5):  # short waits so Ctrl-C is seen promptly on every platform
        pass
