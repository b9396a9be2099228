"""Sandbox faults for one topic at a time (silence, an unparseable depth update) and pushes on
any topic (a channel the client has no model for), driven by a raw websocket-client."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator, List

import pytest
import websocket

from sixmm.sandbox import Sandbox
from tests.helpers import control_sandbox, quit_control
from tests.test_sandbox_helpers import RawWS, is_ack, on_topic

BTC, ETH = "market.depth.BTCUSDT", "market.depth.ETHUSDT"


@pytest.fixture
def quiet() -> Iterator[Sandbox]:
    with Sandbox(user_event_interval=0, depth_quirks=False) as sb:
        sb.pause_market()
        yield sb


@pytest.fixture
def client(quiet: Sandbox) -> Iterator[RawWS]:
    ws = RawWS(quiet.ws_url)
    yield ws
    ws.close()


def drain(ws: RawWS, timeout: float = 0.5) -> List[Any]:
    """Frames until the socket stays quiet for ``timeout`` (the market is paused)."""
    out: List[Any] = []
    while True:
        try:
            out.append(ws.recv(timeout))
        except websocket.WebSocketTimeoutException:
            return out


def topics(frames: List[Any]) -> List[str]:
    return [f.get("topic") for f in frames if isinstance(f, dict) and "topic" in f]


def subscribe(ws: RawWS, rid: str, *topic: str) -> None:
    ws.op("subscribe", rid, *topic)
    ws.recv_until(is_ack(rid, True))


def test_silenced_topic_goes_quiet_alone_until_resubscribed(quiet: Sandbox, client: RawWS) -> None:
    subscribe(client, "1", BTC, ETH)
    drain(client)  # the two snapshots
    quiet.silence_topic(BTC)
    quiet.step(3)
    seen = topics(drain(client))
    assert seen.count(ETH) == 3 and BTC not in seen
    assert {c["id"] for c in quiet.connections}  # the socket is still open
    client.op("ping", "p")
    assert client.recv_until(lambda f: isinstance(f, dict) and f.get("event") == "pong")
    client.op("unsubscribe", "2", BTC)
    client.recv_until(is_ack("2", True))
    subscribe(client, "3", BTC)  # a fresh subscription heals it: snapshot at the truth
    snap = client.recv_until(on_topic(BTC))
    version, _bids, _asks = quiet.book_truth("BTCUSDT")
    assert snap["data"]["type"] == "snapshot" and snap["data"]["endVersion"] == version
    quiet.step(1)
    assert BTC in topics(drain(client))


def test_silence_for_a_time_outlasts_resubscribes(quiet: Sandbox, client: RawWS) -> None:
    subscribe(client, "1", BTC)
    drain(client)
    quiet.silence_topic(BTC, math.inf)
    subscribe(client, "2", BTC)  # acked, but no snapshot and no updates
    quiet.step(2)
    assert BTC not in topics(drain(client))
    quiet.unsilence_topic(BTC)
    quiet.step(1)
    assert BTC in topics(drain(client))


@pytest.mark.parametrize("how", ["nan", "truncate", "headless"])
def test_corrupt_next_depth_is_unparseable_and_advances_the_truth(
    quiet: Sandbox, client: RawWS, how: str
) -> None:
    subscribe(client, "1", BTC)
    drain(client)
    before = quiet.book_truth("BTCUSDT")[0]
    quiet.corrupt_next_depth("BTCUSDT", how)
    quiet.step(1)
    (frame,) = drain(client)
    assert quiet.book_truth("BTCUSDT")[0] > before
    if how == "nan":
        assert math.isnan(frame["data"]["endVersion"])  # Python's json reads NaN; JSON doesn't
    else:
        assert isinstance(frame, str)  # not JSON at all
        assert ("market.depth.BTCUSDT" in frame) is (how == "truncate")
    quiet.step(1)
    (after,) = drain(client)
    assert after["data"]["endVersion"] == quiet.book_truth("BTCUSDT")[0]  # back to normal
    with pytest.raises(ValueError):
        quiet.corrupt_next_depth("BTCUSDT", "bogus")


def test_funding_channel_and_publish_on_any_topic(quiet: Sandbox, client: RawWS) -> None:
    subscribe(client, "1", "market.funding.BTCUSDT")
    quiet.step(25)  # the ticker cadence: funding pushes come with it
    push = client.recv_until(on_topic("market.funding.BTCUSDT"))
    assert push["event"] == "data" and push["data"]["symbol"] == "BTCUSDT"
    assert quiet.publish("market.funding.BTCUSDT", {"x": 1}) == 1
    assert client.recv_until(lambda f: isinstance(f, dict) and f.get("data") == {"x": 1})
    assert quiet.publish("market.funding.ETHUSDT", {"x": 2}) == 0  # nobody subscribed


def test_control_commands_for_topics() -> None:
    with control_sandbox() as (proc, ws_url):
        assert proc.stdin is not None
        ws = RawWS(ws_url)
        try:
            subscribe(ws, "1", "market.funding.BTCUSDT")
            proc.stdin.write(
                "pause\nsilence-topic market.funding.BTCUSDT\n"
                'publish market.funding.BTCUSDT {"lost": true}\n'
                "unsilence-topic\n"
                'publish market.funding.BTCUSDT {"a": 1}\n'
                "corrupt-depth NOPE\ncorrupt-depth BTCUSDT headless\n"
            )
            proc.stdin.flush()
            frame = ws.recv_until(lambda f: isinstance(f, dict) and "data" in f)
            assert frame["data"] == {"a": 1}  # the first one was silenced
        finally:
            ws.close()
        out, err = quit_control(proc)
    assert proc.returncode == 0, err
    assert "sent to 0" in out and "sent to 1" in out
    assert "error: ValueError" in out  # unknown symbol
    assert json.dumps({"a": 1}) not in err
