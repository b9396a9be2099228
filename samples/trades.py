"""Print every trade of a symbol as it happens.

Run it:

    python samples/trades.py                       # against a local sandbox exchange
    python samples/trades.py ETHUSDT --url wss://6mm.com/ws
    python samples/trades.py --seconds 10          # stop by itself after 10 s (else Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import time

import sixmm


def on_trade(trade: sixmm.Trade) -> None:
    when = time.strftime("%H:%M:%S", time.localtime((trade.time or 0) / 1000))
    side = f"{trade.side or '-':4}"
    print(when, trade.symbol, side, trade.quantity, "@", trade.price, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print every trade of a symbol.")
    parser.add_argument("symbol", nargs="?", default="BTCUSDT")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument("--seconds", type=float, help="stop after N seconds (default: Ctrl-C)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            args.url = stack.enter_context(Sandbox(port=0)).ws_url

        with sixmm.StreamManager(args.url) as streams:
            streams.trades(args.symbol, on_trade)
            streams.wait(args.seconds)  # Ctrl-C stops everything cleanly


if __name__ == "__main__":
    main()
