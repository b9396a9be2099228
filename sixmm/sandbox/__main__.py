"""``python -m sixmm.sandbox``: run the local 6MM exchange in the foreground.

Prints one banner line, then serves until Ctrl-C or SIGTERM (exit status 0). With
``--control`` (or when stdin is a terminal) it reads fault-injection commands from stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Dict, List, Optional

from .sandbox import Sandbox
from .wire import ACK_STYLES, AUTH_FAILURES, DEPTH_STYLES, TRADE_STYLES

COMMANDS = """\
control commands (one per line on stdin, with --control or a terminal):
  drop                    abort every WebSocket connection
  half-frame [SECONDS]    stall every WebSocket mid-frame (a byte a second, no frame completes)
  trickle-upgrade [COUNT] answer the next COUNT upgrades with a 101 trickled byte by byte
  redirect URL [STATUS]   answer the next upgrade with a redirect (default 301) to URL
  silent [SECONDS]        stop sending/answering (until 'resume' if no SECONDS)
  resume                  end silence
  gap SYMBOL [N]          next depth update of SYMBOL skips N versions (default 1)
  cross SYMBOL            send one crossed depth update
  malformed [TEXT]        send garbage frames (or TEXT) to every connection
  reject-sub [TOPIC]      reject the next subscribe (naming TOPIC)
  expire [KEY]            expire one or every listenKey
  reject-auth on|off      reject credentials
  skew MS                 server clock skew in milliseconds
  fail-rest CODE [HTTP]   fail the next REST call
  dead-keys on|off        new listenKeys are dead on arrival (auth/renew/close: not found)
  echo-auth on|off        refusals quote the refused key/token/api key
  rate-limit SECONDS [COUNT] [rest|ws|all] [STATUS]
                          answer the next COUNT calls 429 (or STATUS) + Retry-After
  stall-rest [METHOD|any] [SECONDS|never] [COUNT]
                          hold the next REST call(s) before answering (never: no answer)
  pause | unpause | step [N]   freeze / unfreeze / advance the market
  user [EVENT_TYPE]       push a private event
  burst SYMBOL N          publish N trades back to back
  silence-topic TOPIC [SECONDS]  stop pushing one topic (until resubscribed, or SECONDS)
  unsilence-topic [TOPIC] end silence-topic (for TOPIC, or every topic)
  corrupt-depth SYMBOL [nan|truncate|headless]  next depth update of SYMBOL unparseable
  publish TOPIC JSON      push JSON as the data of one TOPIC push (e.g. market.funding.X)
  status                  show connections and listenKeys
  quit                    stop the sandbox"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the epilog's layout and shows every option's default."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sixmm.sandbox",
        description="Run the local 6MM exchange sandbox (REST + WebSocket on one port).",
        epilog=COMMANDS,
        formatter_class=_Formatter,
    )
    p.add_argument("--port", type=int, default=8765, help="port to listen on (0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--seed", type=int, default=0, help="market random seed")
    p.add_argument("--depth-style", default="doc", choices=DEPTH_STYLES, help="depth wire variant")
    p.add_argument("--ack-style", default="doc", choices=ACK_STYLES, help="ack wire variant")
    p.add_argument("--trade-style", default="list", choices=TRADE_STYLES, help="trade push variant")
    p.add_argument(
        "--auth-failure", default="frame", choices=AUTH_FAILURES, help="refused private auth"
    )
    p.add_argument(
        "--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT", help="comma-separated symbols to simulate"
    )
    p.add_argument("--tick-interval", type=float, default=0.02, help="market tick period (s)")
    p.add_argument("--ticker-interval", type=float, default=0.5, help="ticker period (s)")
    p.add_argument("--kline-interval", type=float, default=1.0, help="kline period (s)")
    p.add_argument("--depth-levels", type=int, default=50, help="initial levels per side")
    p.add_argument("--user-event-interval", type=float, default=1.0, help="0 disables")
    p.add_argument("--listen-key-ttl", type=float, default=3600.0, help="listenKey TTL (s)")
    p.add_argument("--no-quirks", action="store_true", help="no stale/overlapping depth quirks")
    p.add_argument("--replay-on-connect", type=int, default=0, help="replay the last N user events")
    p.add_argument("--control", action="store_true", help="read control commands from stdin")
    p.add_argument("--replay", metavar="FILE", help="serve this sixmm recording (no simulation)")
    p.add_argument(
        "--replay-speed", type=float, default=1.0, help="pace of --replay (1.0 = as recorded)"
    )
    return p


def _commands(sb: Sandbox, out: Callable[[str], None]) -> Dict[str, Callable[[List[str]], None]]:
    def opt(args: List[str], i: int) -> Optional[str]:
        return args[i] if len(args) > i else None

    def status(args: List[str]) -> None:
        out(f"connections: {sb.connections}")
        out(f"listenKeys: {len(sb.listen_keys)}")

    return {
        **_network_commands(sb, out),
        "drop": lambda a: out(f"dropped {sb.drop_all()}"),
        "silent": lambda a: sb.go_silent(float(a[0]) if a else None),
        "resume": lambda a: sb.resume(),
        "gap": lambda a: sb.skip_versions(a[0], int(a[1]) if len(a) > 1 else 1),
        "cross": lambda a: sb.cross_book(a[0]),
        "malformed": lambda a: sb.send_malformed(" ".join(a) if a else None),
        "reject-sub": lambda a: sb.reject_next_subscribe(opt(a, 0)),
        "expire": lambda a: sb.expire_listen_key(opt(a, 0)),
        "reject-auth": lambda a: sb.reject_credentials(not a or a[0] != "off"),
        "skew": lambda a: sb.set_clock_skew(int(a[0])),
        "fail-rest": lambda a: sb.fail_next_rest(int(a[0]), int(a[1]) if len(a) > 1 else 200),
        "dead-keys": lambda a: sb.keys_dead_on_arrival(not a or a[0] != "off"),
        "echo-auth": lambda a: sb.echo_refusals(not a or a[0] != "off"),
        "rate-limit": lambda a: sb.rate_limit(
            float(a[0]),
            int(a[1]) if len(a) > 1 else 1,
            a[2] if len(a) > 2 else "all",
            int(a[3]) if len(a) > 3 else 429,
        ),
        "stall-rest": lambda a: sb.stall_rest(
            None if len(a) < 2 or a[1] == "never" else float(a[1]),
            None if not a or a[0] == "any" else a[0],
            None,
            int(a[2]) if len(a) > 2 else 1,
        ),
        "pause": lambda a: sb.pause_market(),
        "unpause": lambda a: sb.resume_market(),
        "step": lambda a: sb.step(int(a[0]) if a else 1),
        "user": lambda a: out(str(sb.push_user_event(a[0] if a else "ORDER_TRADE_UPDATE"))),
        "burst": lambda a: sb.burst(a[0], int(a[1])),
        "silence-topic": lambda a: sb.silence_topic(a[0], float(a[1]) if len(a) > 1 else None),
        "unsilence-topic": lambda a: sb.unsilence_topic(opt(a, 0)),
        "corrupt-depth": lambda a: sb.corrupt_next_depth(a[0], a[1] if len(a) > 1 else "nan"),
        "publish": lambda a: out(f"sent to {sb.publish(a[0], json.loads(' '.join(a[1:])))}"),
        "status": status,
    }


def _network_commands(
    sb: Sandbox, out: Callable[[str], None]
) -> Dict[str, Callable[[List[str]], None]]:
    """The socket-level faults (sixmm.sandbox.netfaults)."""
    return {
        "half-frame": lambda a: out(f"stalled {sb.stall_half_frame(float(a[0]) if a else 60.0)}"),
        "trickle-upgrade": lambda a: sb.trickle_handshake(int(a[0]) if a else 1),
        "redirect": lambda a: sb.redirect_upgrade(a[0], int(a[1]) if len(a) > 1 else 301),
    }


def _control_loop(sb: Sandbox, done: threading.Event) -> None:
    def out(text: str) -> None:
        print(text, flush=True)

    table = _commands(sb, out)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] in ("quit", "exit"):
            break
        fn = table.get(words[0])
        if fn is None:
            out(f"unknown command {words[0]!r}; see --help")
            continue
        try:
            fn(words[1:])
            out("ok")
        except (IndexError, ValueError, KeyError) as exc:
            out(f"error: {exc!r}")
    done.set()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.replay is not None and not os.path.isfile(args.replay):
        print(f"sixmm sandbox: no such recording: {args.replay}", file=sys.stderr)
        return 1
    sb = Sandbox(
        port=args.port,
        seed=args.seed,
        host=args.host,
        symbols=tuple(x.strip() for x in args.symbols.split(",") if x.strip()),
        depth_style=args.depth_style,
        depth_levels=args.depth_levels,
        tick_interval=args.tick_interval,
        ticker_interval=args.ticker_interval,
        kline_interval=args.kline_interval,
        replay_on_connect=args.replay_on_connect,
        ack_style=args.ack_style,
        trade_style=args.trade_style,
        auth_failure=args.auth_failure,
        user_event_interval=args.user_event_interval,
        listen_key_ttl=args.listen_key_ttl,
        depth_quirks=not args.no_quirks,
        replay=args.replay,
        replay_speed=args.replay_speed,
    )
    try:
        sb.start()
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"sixmm sandbox: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"sixmm sandbox: ws={sb.ws_url} rest={sb.rest_url} "
            f"api_key={sb.api_key} api_secret={sb.api_secret} (Ctrl-C to stop)",
            flush=True,
        )
        if args.control or sys.stdin.isatty():
            # daemon: a blocking stdin read must not keep the process alive after Ctrl-C
            threading.Thread(
                target=_control_loop, args=(sb, done), name="sixmm-sandbox-control", daemon=True
            ).start()
        while not done.wait(0.5):
            pass
    finally:
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
