"""Append every closed kline (candle) of some symbols to a CSV file, one row per kline.

Run it:

    python samples/klines_to_csv.py                          # BTCUSDT 1m, local sandbox
    python samples/klines_to_csv.py BTCUSDT ETHUSDT --interval 5m --out candles.csv \\
        --url wss://6mm.com/ws
    python samples/klines_to_csv.py --seconds 600            # stop by itself (else Ctrl-C)

The header is written once (when the file is new or empty); each row is flushed as soon as
its kline closes, so another program can tail the file. A kline counts as closed when the
exchange says so (``closed``), or when the next kline of the same symbol and interval begins
(then the last values seen are written: the closing message may never come, e.g. across a
reconnect). Each kline is written once; in-progress klines are never written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import threading
from typing import Dict, Tuple

import sixmm

HEADER = [
    "symbol", "interval", "open_time", "open_time_utc",
    "open", "high", "low", "close", "volume", "close_time",
]  # fmt: skip


class KlineWriter:
    """Writes closed klines as CSV rows.

    Thread-safety: callbacks may come from several connections' threads; a lock guards the file.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (see close)
        self._csv = csv.writer(self._file)
        self._lock = threading.Lock()
        self._current: Dict[Tuple[str, str], sixmm.Kline] = {}  # in progress, per stream
        self._written: Dict[Tuple[str, str], int] = {}  # newest open_time written, per stream
        if self._file.tell() == 0:
            self._csv.writerow(HEADER)
            self._file.flush()

    def on_kline(self, kline: sixmm.Kline) -> None:
        key = (kline.symbol, kline.interval)
        with self._lock:
            if key not in self._current and key not in self._written:
                print(f"{kline.symbol} {kline.interval}: receiving; rows come as klines close")
            current = self._current.pop(key, None)
            if current is not None and current.open_time < kline.open_time:
                self._write(current)  # the next kline began: the previous one is over
            if kline.closed:
                self._write(kline)
            else:
                self._current[key] = kline

    def _write(self, k: sixmm.Kline) -> None:
        key = (k.symbol, k.interval)
        if k.open_time <= self._written.get(key, -1):
            return  # already written (e.g. a closing message after the next kline began)
        self._written[key] = k.open_time
        opened = datetime.datetime.fromtimestamp(k.open_time / 1000, datetime.timezone.utc)
        utc = opened.strftime("%Y-%m-%dT%H:%M:%SZ")
        row = [k.symbol, k.interval, k.open_time, utc, k.open, k.high, k.low, k.close, k.volume]
        self._csv.writerow([*row, k.close_time])
        self._file.flush()
        print(f"{k.symbol} {k.interval} {utc} close {k.close} volume {k.volume}", flush=True)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Append closed klines to a CSV file.")
    parser.add_argument("symbols", nargs="*", default=["BTCUSDT"])
    parser.add_argument("--interval", default="1m", help="1m 5m 15m 30m 1h 4h 1d 1w 1M")
    parser.add_argument("--out", default="klines.csv", help="CSV file to append to")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument("--seconds", type=float, help="stop after N seconds (default: Ctrl-C)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            args.url = stack.enter_context(Sandbox(port=0)).ws_url

        writer = KlineWriter(args.out)
        stack.callback(writer.close)  # runs after the streams have stopped
        print(f"appending closed {args.interval} klines of {' '.join(args.symbols)} to {args.out}")
        with sixmm.StreamManager(args.url) as streams:
            for symbol in args.symbols:
                streams.klines(symbol, args.interval, writer.on_kline)
            streams.wait(args.seconds)  # Ctrl-C stops everything cleanly


if __name__ == "__main__":
    main()
