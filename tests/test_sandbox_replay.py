"""``Sandbox(replay=...)`` serves a recording over the 6MM protocol; the ``record`` and
``replay`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from sixmm import Backoff, RestClient, StreamManager
from sixmm.sandbox import Sandbox

from .helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 2.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}


def _record(path: Path) -> List[Any]:
    trades: List[Any] = []
    orders: List[Any] = []
    with Sandbox(port=0, seed=11, user_event_interval=0) as sb:
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        with rest, StreamManager(sb.ws_url, rest=rest, record=str(path), **FAST) as s:
            book = s.order_book("BTCUSDT")
            s.trades("BTCUSDT", trades.append)
            s.user(on_order=orders.append)
            assert book.wait_synced(10)
            wait_until(lambda: s.stats()["topics"]["user"]["ready"])
            wait_until(lambda: len(trades) >= 10)
            sb.skip_versions("BTCUSDT", 2)  # a gap in the recording, and the resync
            wait_until(lambda: s.stats()["books"]["BTCUSDT"]["resyncs"] >= 1 and book.synced)
            sb.push_user_event("ORDER_TRADE_UPDATE")
            wait_until(lambda: orders)
            n = len(trades)
            wait_until(lambda: len(trades) >= n + 10)
    return trades


def test_a_recording_served_over_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "served.jsonl.gz"
    recorded = _record(path)
    # what the recording's book ends as, through the replay manager
    last: List[Any] = []
    with StreamManager.replay(str(path)) as r:
        r.order_book("BTCUSDT", lambda b: last.append((b.version, b.top(50))))
        assert r.wait(30)
    version, expected_top = last[-1]
    trades: List[Any] = []
    orders: List[Any] = []
    with Sandbox(port=0, replay=str(path), replay_speed=1.0) as sb:
        assert sb.symbols == ("BTCUSDT",)
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        with rest, StreamManager(sb.ws_url, rest=rest, **FAST) as s:
            book = s.order_book("BTCUSDT")
            s.trades("BTCUSDT", trades.append)
            s.user(on_order=orders.append)
            assert sb.wait_for(lambda: sb.replay_finished, timeout=60)
            wait_until(lambda: book.version == version)
            assert book.synced
            top = book.top(50)
            assert top == expected_top
            # trades recorded after the last depth update may still be on their way
            wait_until(lambda: len(trades) >= len(recorded), timeout=10)
        wait_until(lambda: orders, timeout=5)
    assert trades == recorded
    assert top[0] and top[1]
    assert len(orders) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sixmm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(ROOT),
    )


def test_record_and_replay_commands(tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    with Sandbox(port=0, seed=12) as sb:
        done = _cli(
            "record",
            "market.trade.BTCUSDT",
            "market.ticker.ETHUSDT",
            "--out",
            str(out),
            "--url",
            sb.ws_url,
            "--seconds",
            "2",
        )
    assert done.returncode == 0, done.stderr
    assert "recorded" in done.stderr and "0 dropped" in done.stderr
    replayed = _cli("replay", str(out))
    assert replayed.returncode == 0, replayed.stderr
    lines = [json.loads(line) for line in replayed.stdout.splitlines()]
    trades = [x for x in lines if x["topic"] == "market.trade.BTCUSDT"]
    assert trades and {x["topic"] for x in lines} <= {
        "market.trade.BTCUSDT",
        "market.ticker.ETHUSDT",
    }
    recorded = 0
    for line in out.read_text().splitlines()[1:]:
        ev = json.loads(line)
        if ev["ev"] == "recv" and '"topic":"market.trade.BTCUSDT"' in ev["text"]:
            recorded += len(json.loads(ev["text"])["data"])
    assert len(trades) == recorded
    assert all(set(x["data"]) >= {"price", "quantity"} for x in trades)


def test_sandbox_command_serves_a_replay_file_check(tmp_path: Path) -> None:
    done = _cli("sandbox", "--replay", str(tmp_path / "missing.jsonl"), "--port", "0")
    assert done.returncode == 1 and "no such recording" in done.stderr
