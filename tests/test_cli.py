"""``python -m sixmm`` in subprocesses: demo, stream, book, sandbox, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import List

import pytest


def run(args: List[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixmm", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_command() -> None:
    proc = run(["--help"])
    assert proc.returncode == 0
    for command in ("demo", "stream", "book", "sandbox", "--log-level"):
        assert command in proc.stdout


def test_demo_shows_a_live_synced_book_and_trades() -> None:
    proc = run(["demo", "--seconds", "1.5"])
    assert proc.returncode == 0, proc.stderr
    assert "BTCUSDT  version" in proc.stdout and "synced" in proc.stdout
    assert "latest trades:" in proc.stdout and " @ " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_stream_prints_json_lines() -> None:
    # tickers come every 0.5 s: 3 s leaves room for a slow connect on a loaded machine
    proc = run(["stream", "--sandbox", "--seconds", "3", "market.trade.BTCUSDT", "market.tickers"])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    topics = {line["topic"] for line in lines}
    assert topics == {"market.trade.BTCUSDT", "market.tickers"}
    trade = next(line["data"] for line in lines if line["topic"] == "market.trade.BTCUSDT")
    assert trade["symbol"] == "BTCUSDT" and "price" in trade


def test_stream_exits_cleanly_when_stdout_closes() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm", "stream", "--sandbox", "market.trade.BTCUSDT"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert json.loads(first)["topic"] == "market.trade.BTCUSDT"
    proc.stdout.close()  # like `| head -1`
    try:
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_stream_rejects_bad_topic_clearly() -> None:
    proc = run(["stream", "--sandbox", "market.kline.BTCUSDT.7m"])
    assert proc.returncode == 2
    assert "bad topic" in proc.stderr and "7m" in proc.stderr


def test_stream_rejects_insecure_url() -> None:
    proc = run(["stream", "--url", "ws://example.com/ws", "market.tickers"])
    assert proc.returncode == 2
    assert "ws://" in proc.stderr


def test_book_view() -> None:
    proc = run(["book", "ETHUSDT", "--sandbox", "--seconds", "1.5", "--depth", "3"])
    assert proc.returncode == 0, proc.stderr
    assert "ETHUSDT  version" in proc.stdout and "bid size" in proc.stdout


def test_sandbox_passthrough_help() -> None:
    proc = run(["sandbox", "--help"])
    assert proc.returncode == 0
    assert "--port" in proc.stdout


@pytest.mark.parametrize("level", ["debug", "INFO"])
def test_log_level_goes_to_stderr(level: str) -> None:
    proc = run(["--log-level", level, "stream", "--sandbox", "--seconds", "0.5", "market.tickers"])
    assert proc.returncode == 0
    assert "sixmm" in proc.stderr and "connection public-0" in proc.stderr


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "sixmm demo" in proc.stdout.readline()  # running and drawing
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err
