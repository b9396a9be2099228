"""A Tk window with a live order book (top 10 bids/asks with sizes) and the latest trades.

Run it:

    python samples/tk_order_book.py                  # against a local sandbox exchange
    python samples/tk_order_book.py ETHUSDT --url wss://6mm.com/ws
    python samples/tk_order_book.py --seconds 10     # close the window by itself after 10 s

Tk widgets may only be touched from Tk's thread, so the manager gets a
``sixmm.QueueDispatcher``: sixmm's threads queue each callback, and ``sixmm.gui.tk_pump``
runs them on Tk's thread every 50 ms. ``conflate=True`` keeps only the newest book update
per symbol when the GUI is busy (trades are never conflated). Closing the window, or Ctrl-C
in the terminal, stops the streams cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import time
import tkinter as tk
from typing import Optional

import sixmm
import sixmm.gui

GREEN, RED, AMBER, GREY = "#0a7d32", "#c0392b", "#b9770e", "#8a8a8a"


class BookWindow:
    """Status line, order book and latest trades. Its methods are sixmm callbacks.

    Thread-safety: Tk's thread only (the QueueDispatcher guarantees it).
    """

    def __init__(self, root: tk.Tk, symbol: str, depth: int = 10) -> None:
        self.root, self.symbol, self.depth = root, symbol, depth
        self.book: Optional[sixmm.OrderBook] = None
        self.state, self.reason = "CONNECTING", "starting"
        root.title(f"{symbol} · sixmm")
        root.geometry("600x480")  # a fixed size: a long status line must not resize the window
        self.status = tk.Label(root, anchor="w", padx=8, pady=4, fg="white", bg=AMBER)
        self.status.pack(fill="x")
        sides = tk.Frame(root, padx=8, pady=6)
        sides.pack(fill="x")
        self.bids = tk.Label(sides, font="TkFixedFont", justify="right", anchor="ne")
        self.asks = tk.Label(sides, font="TkFixedFont", justify="left", anchor="nw")
        self.bids.pack(side="left", expand=True, fill="both", padx=(0, 12))
        self.asks.pack(side="left", expand=True, fill="both", padx=(12, 0))
        tk.Label(root, text="Latest trades", anchor="w", padx=8).pack(fill="x")
        self.trades = tk.Listbox(root, height=12, width=48, font="TkFixedFont")
        self.trades.pack(fill="both", expand=True, padx=8, pady=(0, 8))
        self.show_status()

    def on_book(self, book: sixmm.OrderBook) -> None:
        self.book = book
        view = book.view(self.depth)  # one consistent read
        colour = (GREEN, RED) if view["synced"] else (GREY, GREY)
        bids = [f"{'size':>10} {'bid':>12}"] + [f"{q:>10} {p:>12}" for p, q in view["bids"]]
        asks = [f"{'ask':<12} {'size':>10}"] + [f"{p:<12} {q:>10}" for p, q in view["asks"]]
        self.bids.configure(text="\n".join(bids), fg=colour[0])
        self.asks.configure(text="\n".join(asks), fg=colour[1])
        self.show_status()

    def on_trade(self, trade: sixmm.Trade) -> None:
        when = time.strftime("%H:%M:%S", time.localtime((trade.time or 0) / 1000))
        self.trades.insert(0, f"{when} {trade.side or '-':<4} {trade.quantity:>8} @ {trade.price}")
        self.trades.itemconfigure(0, fg=GREEN if trade.side == "BUY" else RED)
        self.trades.delete(100, "end")  # keep the newest 100
        self.root.title(f"{self.symbol} {trade.price} · sixmm")

    def on_state(self, event: sixmm.StateEvent) -> None:
        self.state, self.reason = event.state.value, event.reason
        if self.book is not None:
            self.on_book(self.book)  # redraw: a SUSPENDED book is greyed out
        else:
            self.show_status()

    def show_status(self) -> None:
        synced = self.book is not None and self.book.synced
        version = self.book.version if self.book is not None else None
        sync = "synced" if synced else "NOT SYNCED: do not trade on it"
        colour = (
            GREEN
            if synced and self.state == "CONNECTED"
            else RED
            if self.state == "LOST"
            else AMBER
        )
        text = f"{self.state} · book {sync} · version {version} · {self.reason}"
        self.status.configure(text=text, bg=colour)


def main() -> None:
    parser = argparse.ArgumentParser(description="A live order book in a Tk window.")
    parser.add_argument("symbol", nargs="?", default="BTCUSDT")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument("--seconds", type=float, help="close the window after N seconds")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            args.url = stack.enter_context(Sandbox(port=0)).ws_url

        root = tk.Tk()
        window = BookWindow(root, args.symbol)
        inbox = sixmm.QueueDispatcher(conflate=True)  # callbacks run where inbox.drain() runs
        streams = sixmm.StreamManager(args.url, dispatcher=inbox, on_state=window.on_state)
        streams.order_book(args.symbol, on_update=window.on_book)
        streams.trades(args.symbol, window.on_trade)
        stop_pump = sixmm.gui.tk_pump(root, inbox)  # drains the inbox on Tk's thread

        def close() -> None:
            stop_pump()
            streams.stop()  # idempotent: closing twice is fine
            root.destroy()

        root.protocol("WM_DELETE_WINDOW", close)
        signal.signal(signal.SIGINT, lambda *_: root.after_idle(close))  # Ctrl-C in the terminal
        if args.seconds is not None:
            root.after(int(args.seconds * 1000), close)
        streams.start()
        try:
            root.mainloop()
        finally:
            streams.stop()


if __name__ == "__main__":
    main()
