"""The samples are documentation that runs: each is started as a user would start it (a
subprocess, briefly) and judged on what a user sees: exit code 0, nothing on stderr, the
expected lines.

Most runs use the sample's own in-process sandbox (no ``--url``). Where the test must steer
the exchange (drop it, skew its clock, read its records), it runs a sandbox itself and passes
``--url``, exactly as a user points a sample at a live exchange.
"""

from __future__ import annotations

import csv
import datetime
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

import pytest

import sixmm
from sixmm.sandbox import Sandbox
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
RUN_TIMEOUT = 40.0  # a hung sample fails the test instead of hanging the suite


def sample_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for a sample: this checkout importable, no stray credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIXMM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    env.update(extra or {})
    return env


def run_sample(
    name: str, *args: str, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """Run ``samples/NAME`` to completion and return the finished process."""
    return subprocess.run(
        [sys.executable, str(SAMPLES / name), *args],
        cwd=str(ROOT),
        env=sample_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def assert_clean(returncode: int, stderr: str) -> None:
    """Exit code 0 and an empty stderr (no traceback, no stray log line)."""
    assert returncode == 0, f"exit code {returncode}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert stderr.strip() == "", f"unexpected stderr:\n{stderr}"


class Running:
    """A sample running in the background; its output goes to files the test can poll."""

    def __init__(self, tmp: Path, name: str, *args: str, env: Optional[Dict[str, str]] = None):
        self._out_path, self._err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        self._out: IO[Any] = open(self._out_path, "w")  # noqa: SIM115 (closed in finish)
        self._err: IO[Any] = open(self._err_path, "w")  # noqa: SIM115 (closed in finish)
        self.proc = subprocess.Popen(
            [sys.executable, str(SAMPLES / name), *args],
            cwd=str(ROOT),
            env=sample_env(env),
            stdout=self._out,
            stderr=self._err,
        )

    def output(self) -> str:
        return self._out_path.read_text()

    def interrupt(self) -> None:
        """Ctrl-C, as a user would press it."""
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 15.0) -> Tuple[int, str, str]:
        """Wait for the exit (killing the sample if it hangs); ``(returncode, stdout, stderr)``."""
        try:
            returncode = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._out.close()
            self._err.close()
        return returncode, self.output(), self._err_path.read_text()


# --------------------------------------------------------------------------------- trades


TRADE_LINE = re.compile(r"^\d\d:\d\d:\d\d ETHUSDT (BUY|SELL) +\d+(\.\d+)? @ \d+(\.\d+)?$")


def test_trades_prints_one_line_per_trade_of_the_symbol() -> None:
    done = run_sample("trades.py", "ETHUSDT", "--seconds", "1.5")
    assert_clean(done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    assert len(lines) >= 5, done.stdout  # the sandbox trades several times a second
    bad = [line for line in lines if not TRADE_LINE.match(line)]
    assert not bad, f"lines that are not ETHUSDT trades: {bad[:5]}"


# ----------------------------------------------------------------------------- order book

BOOK_HEADER = re.compile(r"^BTCUSDT  version (\d+)  CONNECTED  synced$", re.M)
BOOK_ROW = re.compile(r"^ *([\d.]+) +([\d.]+) \| ([\d.]+) +([\d.]+)$", re.M)


def book_views(text: str) -> List[Tuple[int, List[Tuple[Decimal, ...]]]]:
    """Each synced view printed: ``(version, [(bid_qty, bid, ask, ask_qty), ...])``."""
    views: List[Tuple[int, List[Tuple[Decimal, ...]]]] = []
    for line in text.splitlines():
        header = BOOK_HEADER.match(line)
        row = BOOK_ROW.match(line)
        if header:
            views.append((int(header.group(1)), []))
        elif row and views:
            views[-1][1].append(tuple(Decimal(x) for x in row.groups()))
    return views


def test_order_book_prints_a_synced_top_5_every_second() -> None:
    # a view at once, then one a second: 2.5 s leaves 1.5 s of slack for the second one
    done = run_sample("order_book.py", "--seconds", "2.5")
    assert_clean(done.returncode, done.stderr)
    views = book_views(done.stdout)
    assert len(views) >= 2, done.stdout  # refreshed, not printed once
    assert views[-1][0] > views[0][0], "the version moves on between refreshes"
    for _version, rows in views:
        assert len(rows) == 5, done.stdout
        bids = [r[1] for r in rows]
        asks = [r[2] for r in rows]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0], "best bid below best ask"
        assert all(r[0] > 0 and r[3] > 0 for r in rows)


def test_order_book_hides_levels_while_suspended_and_exits_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    with Sandbox(port=0) as exchange:
        sample = Running(tmp_path, "order_book.py", "--url", exchange.ws_url, "--seconds", "60")
        try:
            wait_until(lambda: book_views(sample.output()), timeout=20)
            exchange.stop()  # the exchange goes away: sixmm keeps reconnecting
            wait_until(lambda: "SUSPENDED" in sample.output(), timeout=20)
        finally:
            sample.interrupt()
            returncode, out, err = sample.finish()
    assert_clean(returncode, err)
    after = out[out.index("SUSPENDED") :]
    assert "book hidden until it is synced again" in after.splitlines()[0]
    assert not BOOK_ROW.search(after), "no price levels are shown while suspended"


# --------------------------------------------------------------------------- klines to CSV

CSV_HEADER = "symbol,interval,open_time,open_time_utc,open,high,low,close,volume,close_time"


def test_klines_to_csv_appends_one_row_per_closed_kline_and_the_header_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "klines.csv"
    # 1) a short run on the sample's own sandbox: the header, and no in-progress kline. The
    #    sandbox runs on the wall clock: a run spanning a minute boundary may close a kline
    #    for real (a row then is right), so such a run is repeated, not judged.
    for _ in range(3):
        before = time.time()
        done = run_sample("klines_to_csv.py", "--out", str(out), "--seconds", "1")
        if int(before // 60) == int(time.time() // 60):
            break
        out.unlink()
    assert_clean(done.returncode, done.stderr)
    assert out.read_text().splitlines() == [CSV_HEADER]

    # 2) klines close at minute boundaries: the test moves the exchange's clock to 1 s into
    #    a fresh minute, lets in-progress klines flow, then moves it one minute on
    with Sandbox(port=0, kline_interval=0.1) as exchange:
        now = int(time.time() * 1000)
        skew = (now // 60_000 + 1) * 60_000 + 1_000 - now
        exchange.set_clock_skew(skew)
        # the klines open before the jump close at the market's next tick: wait for it, so
        # that a sample subscribing on a loaded machine cannot see them close
        minute = (now + skew) // 60_000 * 60_000
        books = exchange._server.market.books.values()
        wait_until(lambda: all(b.klines["1m"][0] == minute for b in books), timeout=10)
        sample = Running(
            tmp_path, "klines_to_csv.py", "BTCUSDT", "ETHUSDT", "--out", str(out),
            "--url", exchange.ws_url, "--seconds", "60",
        )  # fmt: skip
        try:
            wait_until(lambda: sample.output().count(": receiving;") == 2, timeout=20)
            assert out.read_text().splitlines() == [CSV_HEADER], "no in-progress kline"
            exchange.set_clock_skew(skew + 60_000)  # the current klines are over
            wait_until(lambda: len(out.read_text().splitlines()) >= 3, timeout=20)
        finally:
            sample.interrupt()  # Ctrl-C: rows already written stay
            returncode, printed, err = sample.finish()
    assert_clean(returncode, err)

    lines = out.read_text().splitlines()
    assert lines.count(CSV_HEADER) == 1 and lines[0] == CSV_HEADER
    rows = list(csv.DictReader(lines))
    assert {r["symbol"] for r in rows} == {"BTCUSDT", "ETHUSDT"}
    for r in rows:
        assert r["interval"] == "1m"
        open_ms, close_ms = int(r["open_time"]), int(r["close_time"])
        assert open_ms % 60_000 == 0 and close_ms == open_ms + 59_999
        opened = datetime.datetime.fromtimestamp(open_ms / 1000, datetime.timezone.utc)
        assert r["open_time_utc"] == opened.strftime("%Y-%m-%dT%H:%M:%SZ")
        o, h, low, c = (Decimal(r[k]) for k in ("open", "high", "low", "close"))
        assert low <= min(o, c) <= max(o, c) <= h and Decimal(r["volume"]) >= 0
    assert len({(r["symbol"], r["open_time"]) for r in rows}) == len(rows), "no duplicates"
    assert len(re.findall(r"^(BTCUSDT|ETHUSDT) 1m \d{4}-", printed, re.M)) == len(rows)


def load_sample(name: str) -> Any:
    """Import ``samples/NAME`` as a module (the samples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name[:-3], SAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kline(open_time: int, close: str, closed: Optional[bool]) -> sixmm.Kline:
    data: Dict[str, Any] = {"symbol": "BTCUSDT", "interval": "1m", "openTime": open_time}
    data.update(open="1", high="9", low="1", close=close, volume="2", closeTime=open_time + 59_999)
    if closed is not None:
        data["closed"] = closed
    return sixmm.Kline.from_wire(data)


@pytest.mark.parametrize("flagged", [True, None], ids=["closed-flag", "no-closed-flag"])
def test_kline_writer_writes_each_kline_once_when_it_closes(
    tmp_path: Path, flagged: Optional[bool], capsys: pytest.CaptureFixture[str]
) -> None:
    writer = load_sample("klines_to_csv.py").KlineWriter(str(tmp_path / "k.csv"))
    in_progress = None if flagged is None else False
    for k in (kline(0, "5", in_progress), kline(0, "6", in_progress), kline(0, "7", flagged)):
        writer.on_kline(k)
    writer.on_kline(kline(60_000, "8", in_progress))  # the next kline begins
    writer.on_kline(kline(60_000, "9", in_progress))
    writer.close()
    rows = list(csv.DictReader((tmp_path / "k.csv").read_text().splitlines()))
    assert [(r["open_time"], r["close"]) for r in rows] == [("0", "7")]
    assert capsys.readouterr().out.count("BTCUSDT 1m 1970-01-01T00:00:00Z") == 1


# ---------------------------------------------------------------------------- user stream


def test_user_stream_prints_orders_balances_and_other_events() -> None:
    done = run_sample("user_stream.py", "--seconds", "1.5")
    assert_clean(done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    assert "[CONNECTED] authenticated" in lines, done.stdout
    assert any(re.match(r"^order +[A-Z]+USDT (BUY|SELL) ", line) for line in lines)
    assert any(re.match(r"^balance +USDT wallet [\d.]+ available [\d.]+$", line) for line in lines)
    assert any(line.startswith("event    MARGIN_CALL ") for line in lines)
    assert "sandbox-secret" not in done.stdout


def test_user_stream_against_a_url_uses_env_credentials_and_closes_the_listen_key(
    tmp_path: Path,
) -> None:
    with Sandbox(port=0, user_event_interval=0.2) as exchange:
        creds = {"SIXMM_API_KEY": exchange.api_key, "SIXMM_API_SECRET": exchange.api_secret}
        sample = Running(
            tmp_path, "user_stream.py", "--url", exchange.ws_url, "--rest-url",
            exchange.rest_url, "--seconds", "60", env=creds,
        )  # fmt: skip
        try:
            wait_until(lambda: exchange.listen_keys, timeout=20)
            wait_until(lambda: "order " in sample.output(), timeout=20)
        finally:
            sample.interrupt()
            returncode, _out, err = sample.finish()
        assert_clean(returncode, err)
        assert exchange.listen_keys == {}, "Ctrl-C closed the listenKey"
        assert any(c["method"] == "DELETE" for c in exchange.rest_calls)


def test_user_stream_refuses_a_live_url_without_credentials() -> None:
    done = run_sample(
        "user_stream.py", "--url", "wss://6mm.invalid/ws", "--rest-url", "https://6mm.invalid",
        "--seconds", "1",
    )  # fmt: skip
    assert done.returncode == 2
    assert "SIXMM_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_user_stream_refuses_a_url_without_its_rest_url() -> None:
    # without --rest-url the listenKey would be asked of the real exchange's REST host
    done = run_sample("user_stream.py", "--url", "wss://6mm.invalid/ws", "--seconds", "1")
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert "--rest-url" in error and "Traceback" not in done.stderr


def test_user_stream_derives_a_loopback_sandbox_rest_url(tmp_path: Path) -> None:
    with Sandbox(port=0) as exchange:
        creds = {"SIXMM_API_KEY": exchange.api_key, "SIXMM_API_SECRET": exchange.api_secret}
        done = run_sample("user_stream.py", "--url", exchange.ws_url, "--seconds", "2", env=creds)
        assert_clean(done.returncode, done.stderr)
        assert "[CONNECTED] authenticated" in done.stdout.splitlines(), done.stdout
        # the listenKey came from this sandbox's REST API, and was closed there at the end
        methods = [c["method"] for c in exchange.rest_calls]
        assert "POST" in methods and "DELETE" in methods, methods


# ----------------------------------------------------------------------- legacy main loop

LEGACY_LINE = re.compile(
    r"^\d\d:\d\d:\d\d BTCUSDT last [\d.]+  ([\d.]+) / ([\d.]+)  (\d+) trades, volume [\d.]+"
    r"  \[CONNECTED\]$",
    re.M,
)


def test_legacy_loop_prints_periodic_lines_and_stops_in_finally() -> None:
    # a line a second; 3.5 s gives 3-4 of them, so 2 complete ones even if the first came
    # before the first ticker or snapshot on a loaded machine
    done = run_sample("legacy_integration.py", "--seconds", "3.5")
    assert_clean(done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    periodic = [m for m in map(LEGACY_LINE.match, lines) if m]
    assert len(periodic) >= 2, done.stdout
    assert all(Decimal(m.group(1)) < Decimal(m.group(2)) for m in periodic), "bid < ask"
    # every line counts its trades, also one printed before the ticker or the book came
    total = sum(int(n) for n in re.findall(r"  (\d+) trades, volume ", done.stdout))
    assert lines[-1] == f"stopped cleanly after {total} trades"
    assert total > 0


def test_legacy_loop_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    sample = Running(tmp_path, "legacy_integration.py", "--seconds", "60")
    try:
        wait_until(lambda: LEGACY_LINE.search(sample.output()), timeout=20)
    finally:
        sample.interrupt()
        returncode, out, err = sample.finish()
    assert_clean(returncode, err)
    assert out.splitlines()[-1].startswith("stopped cleanly after ")


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.py")))
def test_samples_import_only_public_names(name: str) -> None:
    source = (SAMPLES / name).read_text()
    docstring = source.split('"""')[1]
    assert "\n    python samples/" + name in docstring, "the docstring says how to run it"
    imports = re.findall(r"^\s*(?:from (\S+) import ([^\n]+)|import (\S+))", source, re.M)
    for module, names, plain in imports:
        dotted = module or plain
        if dotted != "__future__":
            assert not any(part.startswith("_") for part in dotted.split(".")), dotted
        assert not re.search(r"\b_\w", names), names
        if dotted.startswith("sixmm"):
            assert dotted in ("sixmm", "sixmm.gui", "sixmm.sandbox"), dotted
    assert not re.search(r"\bsixmm(\.\w+)*\._", source), "no private sixmm names"
