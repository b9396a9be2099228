"""``doctor`` against real servers on 127.0.0.1: every sandbox wire variant passes and is named;
a silent server, a gap-injecting server and a server that never acks fail the right check."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from aiohttp import WSMsgType, web

from sixmm import RestClient, StreamManager
from sixmm.doctor import ASSUMED_RULES, Doctor, Report
from sixmm.sandbox import Sandbox
from sixmm.sandbox.wire import DEPTH_STYLES

ROOT = Path(__file__).resolve().parents[1]


def checks(report: Report) -> Dict[str, Any]:
    return {c.name: c for c in report.checks}


@pytest.mark.parametrize("style", DEPTH_STYLES)
def test_each_sandbox_variant_passes_and_is_named(style: str) -> None:
    with Sandbox(port=0, depth_style=style, seed=7) as sb:
        report = Doctor(sb.ws_url, seconds=1.5).run()
    by = checks(report)
    assert report.ok, "\n".join(report.lines())
    assert by["depth_form"].detail.startswith(f"variant {style}:")
    assert set(report.observed) == set(ASSUMED_RULES)
    assert report.observed["depth_continuity"]["status"] == "held"
    assert report.observed["args_list"]["status"] == "held"
    assert report.observed["ack_failure_shape"]["status"] == "held"
    levels = "violated" if style == "object_levels" else "held"
    assert report.observed["depth_levels"]["status"] == levels


def test_numeric_ack_ids_are_reported() -> None:
    with Sandbox(port=0, ack_style="numeric_ids") as sb:
        report = Doctor(sb.ws_url, seconds=1.0).run()
    assert report.ok
    assert "id as number" in checks(report)["subscribe_ack"].detail
    assert report.observed["ack_id_type"] == {"status": "violated", "detail": "id as number"}


def test_credentials_round_trip_and_capture_replays(tmp_path: Path) -> None:
    cap = tmp_path / "cap.jsonl"
    with Sandbox(port=0) as sb:
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        with rest:
            report = Doctor(sb.ws_url, seconds=1.0, rest=rest, capture=str(cap)).run()
        created = [c for c in sb.rest_calls if c["path"] == "/v1/private/user/listen-key"]
        assert [c["method"] for c in created] == ["POST", "PUT", "DELETE"]
        assert not sb.listen_keys
    by = checks(report)
    assert report.ok, "\n".join(report.lines())
    assert by["listen_key"].ok and by["listen_key_close"].ok
    assert by["private_auth"].ok and sb.user_id in by["private_auth"].detail
    # the capture is a recording like any other, and it holds no credential
    raw = cap.read_bytes()
    assert sb.api_secret.encode() not in raw and b"signature" not in raw
    trades: List[Any] = []
    with StreamManager.replay(str(cap)) as r:
        r.trades("BTCUSDT", trades.append)
        assert r.wait(30)
    assert trades


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("SIXMM_API_KEY", "SIXMM_API_SECRET", "SIXMM_TOKEN"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "sixmm", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(ROOT),
    )


def test_a_silent_server_fails_the_ack_check_and_exits_1() -> None:
    with Sandbox(port=0) as sb:
        sb.go_silent()
        done = _run_cli("--url", sb.ws_url, "--seconds", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("FAIL subscribe_ack") and "no subscribe ack" in line for line in lines
    )
    assert any(line.startswith("ok   upgrade") for line in lines)
    assert lines[-1].startswith("FAILED: subscribe_ack")


def test_json_output_of_a_healthy_server_exits_0() -> None:
    with Sandbox(port=0) as sb:
        done = _run_cli("--url", sb.ws_url, "--seconds", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and {"name", "ok", "detail"} == set(out["checks"][0])
    assert set(out["observed"]) == set(ASSUMED_RULES)


def test_a_gap_injecting_server_fails_continuity() -> None:
    with Sandbox(port=0, depth_quirks=False) as sb:
        stop = threading.Event()

        def inject() -> None:
            while not stop.wait(0.2):
                sb.skip_versions("BTCUSDT", 2)

        t = threading.Thread(target=inject, name="gap-injector")
        t.start()
        try:
            report = Doctor(sb.ws_url, seconds=1.5).run()
        finally:
            stop.set()
            t.join(5)
    by = checks(report)
    assert not report.ok
    assert not by["depth_continuity"].ok and "version gap" in by["depth_continuity"].detail
    assert by["subscribe_ack"].ok and by["data"].ok
    assert report.observed["depth_continuity"]["status"] == "violated"


@pytest.fixture
def no_ack_server() -> Iterator[str]:
    """A WebSocket server that streams trades for any subscribe but never acks anything."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    holder: Dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            op = json.loads(msg.data)
            for topic in op.get("args") or []:
                if topic.startswith("market.trade."):
                    data = {
                        "symbol": "BTCUSDT",
                        "tradeId": "1",
                        "price": "1",
                        "quantity": "1",
                        "side": "BUY",
                        "time": 1,
                    }
                    frame = {"topic": topic, "event": "data", "ts": 1, "data": [data]}
                    await ws.send_str(json.dumps(frame))
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = runner.addresses[0][1]
        holder["stop"] = asyncio.Event()
        ready.set()
        await holder["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="no-ack")
    thread.start()
    assert ready.wait(10)
    try:
        yield f"ws://127.0.0.1:{holder['port']}/ws"
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        loop.close()


def test_a_server_without_acks_fails_the_ack_check(no_ack_server: str) -> None:
    report = Doctor(no_ack_server, seconds=1.0, timeout=1.5).run()
    by = checks(report)
    assert not report.ok
    assert not by["subscribe_ack"].ok
    assert "no subscribe ack within 2s" in by["subscribe_ack"].detail
    assert by["upgrade"].ok and by["tcp"].ok
    assert not by["rest_envelope"].ok  # this server has no REST either
