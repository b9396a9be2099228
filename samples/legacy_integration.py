"""sixmm inside an existing blocking program that has its own main loop.

Run it:

    python samples/legacy_integration.py                 # against a local sandbox exchange
    python samples/legacy_integration.py --url wss://6mm.com/ws --symbol ETHUSDT
    python samples/legacy_integration.py --seconds 10    # stop by itself (else Ctrl-C)

The program keeps its ``while`` loop; sixmm's callbacks run on sixmm's own thread and only
hand data over:

- state-like values (the newest ticker) go into a dict guarded by a lock: the loop reads
  the latest value whenever it wants;
- events that must not be lost (every trade) go into a ``queue.Queue`` the loop drains;
- the live ``OrderBook`` needs no callback at all: its reads are thread-safe.

(Alternative: ``sixmm.QueueDispatcher()`` as the manager's dispatcher, and
``inbox.drain()`` in the loop, runs the callbacks themselves on the loop's thread.)
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import threading
import time
from decimal import Decimal
from typing import Dict, Optional

import sixmm


def main() -> None:
    parser = argparse.ArgumentParser(description="sixmm inside a blocking main loop.")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument("--seconds", type=float, help="stop after N seconds (default: Ctrl-C)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            args.url = stack.enter_context(Sandbox(port=0)).ws_url
        run(args.url, args.symbol, args.seconds)


def run(url: str, symbol: str, seconds: Optional[float]) -> None:
    latest: Dict[str, sixmm.Ticker] = {}  # newest ticker per symbol, guarded by `lock`
    lock = threading.Lock()
    trades: queue.Queue[sixmm.Trade] = queue.Queue(maxsize=100_000)

    def on_ticker(ticker: sixmm.Ticker) -> None:  # runs on a sixmm thread: store, return
        with lock:
            latest[ticker.symbol] = ticker

    streams = sixmm.StreamManager(url)  # the program's existing code creates it once
    streams.ticker(symbol, on_ticker)
    streams.trades(symbol, trades.put_nowait)  # a full queue is reported, never silent
    book = streams.order_book(symbol)
    streams.start()  # sixmm's threads start here, and stop in the `finally` below
    total = 0
    started = time.monotonic()
    try:
        while seconds is None or time.monotonic() - started < seconds:
            time.sleep(1.0)  # ... the program's own periodic work goes here ...

            count, volume = 0, Decimal(0)
            while True:  # drain everything queued since the last round
                try:
                    trade = trades.get_nowait()
                except queue.Empty:
                    break
                count, volume = count + 1, volume + trade.quantity
            total += count
            with lock:
                ticker = latest.get(symbol)
            last = ticker.last_price if ticker is not None else "-"
            view = book.view(1)  # one consistent read of the live book (thread-safe)
            bids, asks = view["bids"], view["asks"]
            synced = view["synced"] and bids and asks
            quote = f"{bids[0][0]} / {asks[0][0]}" if synced else "book not synced"
            print(
                f"{time.strftime('%H:%M:%S')} {symbol} last {last}  {quote}  "
                f"{count} trades, volume {volume}  [{streams.state.value}]",
                flush=True,
            )
    except KeyboardInterrupt:
        print()  # Ctrl-C ends the loop (perhaps mid-line); the finally block cleans up
    finally:
        streams.stop()  # closes sockets, joins sixmm's threads; safe to call twice
    print(f"stopped cleanly after {total} trades")


if __name__ == "__main__":
    main()
