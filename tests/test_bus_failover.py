"""Bridges as real processes: ``kill -9`` of the active one with a standby running, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, List, Optional

from sixmm import StreamManager
from tests.helpers import Recorder, wait_until
from tests.redisserver import redis_server_fixture  # noqa: F401

TRADE = "market.trade.BTCUSDT"
DEPTH = "market.depth.BTCUSDT"


class BridgeProcess:
    """``python -m sixmm bridge ...`` in a subprocess; stderr collected by a thread."""

    def __init__(self, redis_url: str, ws_url: str, *extra: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        args = [sys.executable, "-m", "sixmm", "bridge", TRADE, DEPTH, "--redis", redis_url]
        args += ["--url", ws_url, *extra]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, name="test-bridge-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def session(self) -> Optional[str]:
        for line in list(self.lines):
            if "session=" in line:
                return line.split("session=", 1)[1].split()[0]
        return None

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 15.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


def lease_holder(server: Any) -> str:
    client = server.client()
    keys = client.keys("sixmm:lease:*")
    if not keys:
        return ""
    value = client.get(keys[0])
    return value.decode() if value else ""


def truth_matches(sandbox: Any, book: Any) -> bool:
    version, bids, asks = sandbox.book_truth("BTCUSDT")
    return book.synced and book.version == version and book.levels() == (bids, asks)


def test_kill_9_of_the_active_bridge_hands_over_to_the_standby(sandbox, redis_server) -> None:
    opts = ("--lease-ttl", "2", "--snapshot-interval", "1")
    first = BridgeProcess(redis_server.url, sandbox.ws_url, *opts)
    second: Optional[BridgeProcess] = None
    direct, trades, gaps, states = Recorder(), Recorder(), Recorder(), Recorder()
    try:
        wait_until(lambda: first.session and lease_holder(redis_server) == first.session, 30)
        second = BridgeProcess(redis_server.url, sandbox.ws_url, *opts)
        wait_until(lambda: second.session is not None and "standby" not in second.stderr(), 30)
        consumer = StreamManager.from_redis(redis_server.url, on_gap=gaps, idle_after=1.0)
        with consumer, StreamManager(sandbox.ws_url) as streams:
            assert streams.trades("BTCUSDT", direct).wait_ready(15)
            assert consumer.trades("BTCUSDT", trades).wait_ready(15)
            book = consumer.order_book("BTCUSDT", on_update=states)
            assert book.wait_synced(20)
            sandbox.burst("BTCUSDT", 50)
            wait_until(lambda: len(trades) >= 50, 20)
            # let the standby's exchange connection settle: it must have seen these trades
            wait_until(lambda: len(direct) >= 50, 20)
            first.proc.kill()  # SIGKILL: no cleanup, the lease just expires
            first.finish()
            sandbox.burst("BTCUSDT", 50)  # during the outage: the standby buffers them
            wait_until(lambda: lease_holder(redis_server) == second.session, 30)
            wait_until(lambda: any(g.topic == TRADE for g in gaps.snapshot()), 20)
            sandbox.burst("BTCUSDT", 50)
            wait_until(lambda: book.synced and len(trades) >= 150, 30)
            sandbox.pause_market()
            wait_until(lambda: truth_matches(sandbox, book), 30)
            got = [t.trade_id for t in trades.snapshot()]
            assert len(got) == len(set(got)), "a trade was delivered twice"
            assert got == sorted(got, key=int)
            # the direct subscription may still be behind the consumer's last trade
            wait_until(lambda: got[-1] in {t.trade_id for t in direct.snapshot()}, 20)
            want = [t.trade_id for t in direct.snapshot()]
            # a busy bridge may publish, after the consumer starts, a trade made before the
            # direct subscription was acked: compare from the first trade both could see
            got = [t for t in got if int(t) >= int(want[0])]
            assert len(got) >= 100
            lo, hi = want.index(got[0]), want.index(got[-1])
            assert got == want[lo : hi + 1], "a trade was lost across the handover"
            topic_stats = consumer.stats()["bus"]["topics"]
            assert topic_stats[TRADE]["handovers"] == 1
            assert topic_stats[DEPTH]["handovers"] == 1
            assert book.stats()["snapshots"] >= 2  # resynced from the new bridge's snapshot
    finally:
        for p in (first, second):
            if p is not None and p.proc.poll() is None:
                p.proc.terminate()
                p.finish()


def test_sigterm_stops_a_bridge_cleanly(sandbox, redis_server) -> None:
    bridge = BridgeProcess(redis_server.url, sandbox.ws_url)
    try:
        wait_until(lambda: bridge.session and lease_holder(redis_server) == bridge.session, 30)
        wait_until(lambda: redis_server.client().xlen(f"sixmm:stream:{DEPTH}") > 0, 20)
        bridge.proc.send_signal(signal.SIGTERM)
        code = bridge.finish()
        assert code == 0, bridge.stderr()
        assert "Traceback" not in bridge.stderr()
        assert "stopped" in bridge.stderr()
        assert lease_holder(redis_server) == ""  # released: a standby takes over at once
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.finish()


def test_a_stalled_bridge_is_an_idle_stream_then_a_gap(sandbox, redis_server) -> None:
    # SIGSTOP for less than the lease: nobody takes over, the stream just goes quiet
    bridge = BridgeProcess(
        redis_server.url, sandbox.ws_url, "--lease-ttl", "30", "--snapshot-interval", "1"
    )
    gaps = Recorder()
    try:
        wait_until(lambda: bridge.session and lease_holder(redis_server) == bridge.session, 30)
        consumer = StreamManager.from_redis(redis_server.url, on_gap=gaps, idle_after=1.0)
        with consumer:
            book = consumer.order_book("BTCUSDT")
            assert book.wait_synced(20)
            bridge.proc.send_signal(signal.SIGSTOP)
            try:
                wait_until(lambda: not book.synced, 20)  # idle: no entry, not even a heartbeat
                assert consumer.stats()["bus"]["topics"][DEPTH]["idle"]
            finally:
                bridge.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: any(g.topic == DEPTH for g in gaps.snapshot()), 20)
            assert book.wait_synced(20)  # the next periodic snapshot
            sandbox.pause_market()
            wait_until(lambda: truth_matches(sandbox, book), 30)
            assert consumer.stats()["bus"]["topics"][DEPTH]["handovers"] == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.terminate()
            bridge.finish()
