"""A live top-of-book view in the terminal, refreshed every second.

Run it:

    python samples/order_book.py                   # against a local sandbox exchange
    python samples/order_book.py ETHUSDT --depth 10 --url wss://6mm.com/ws
    python samples/order_book.py --seconds 10      # stop by itself after 10 s (else Ctrl-C)

While a connection is SUSPENDED (reconnecting) or the book is resyncing, the levels are
hidden: an unsynced book may be wrong, and sixmm says so instead of showing stale prices.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Dict

import sixmm

CLEAR = "\033[H\033[J"  # cursor home + clear screen (only when printing to a terminal)


def render(book: sixmm.OrderBook, depth: int, state: sixmm.StreamState, why: str) -> str:
    view = book.view(depth)  # one consistent read: version, synced, bids, asks
    header = f"{book.symbol}  version {view['version']}  {state.value}"
    if state is not sixmm.StreamState.CONNECTED:
        return f"{header} ({why}): book hidden until it is synced again\n"
    if not view["synced"]:
        return f"{header}  NOT SYNCED: waiting for a fresh snapshot\n"
    lines = [f"{header}  synced", f"{'bid qty':>12} {'bid':>12} | {'ask':<12} ask qty"]
    for i in range(depth):
        bid = view["bids"][i] if i < len(view["bids"]) else ("", "")
        ask = view["asks"][i] if i < len(view["asks"]) else ("", "")
        lines.append(f"{bid[1]!s:>12} {bid[0]!s:>12} | {ask[0]!s:<12} {ask[1]!s}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="A live top-of-book view.")
    parser.add_argument("symbol", nargs="?", default="BTCUSDT")
    parser.add_argument("--depth", type=int, default=5, help="levels per side (default 5)")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument("--seconds", type=float, help="stop after N seconds (default: Ctrl-C)")
    args = parser.parse_args()

    last: Dict[str, str] = {"why": "connecting"}

    def on_state(event: sixmm.StateEvent) -> None:
        last["why"] = event.reason  # e.g. "dropped: ...", "connected"

    with contextlib.ExitStack() as stack:
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            args.url = stack.enter_context(Sandbox(port=0)).ws_url

        with sixmm.StreamManager(args.url, on_state=on_state) as streams:
            book = streams.order_book(args.symbol)
            book.wait_synced(timeout=5.0)  # the first snapshot (shown as NOT SYNCED if late)
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            try:
                while deadline is None or time.monotonic() < deadline:
                    view = render(book, args.depth, streams.state, last["why"])
                    print(CLEAR + view if sys.stdout.isatty() else view, flush=True)
                    if streams.wait(1.0):  # True once stopped (Ctrl-C, or lost for good)
                        break
            except KeyboardInterrupt:
                pass  # Ctrl-C while drawing: leaving the `with` block stops the streams


if __name__ == "__main__":
    main()
