"""'Any raw topic works' (DESIGN.md §1.1): a channel sixmm has no model for is subscribed like
any other and its pushes arrive as the envelope dict, over real sockets."""

from __future__ import annotations

import pytest

from sixmm import StreamManager
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until


def test_unknown_channel_delivers_envelope_dicts(sandbox: Sandbox) -> None:
    pushes, errors = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors) as streams:
        sub = streams.subscribe("market.funding.BTCUSDT", pushes)
        assert sub.wait_ready(10)
        wait_until(lambda: len(pushes) >= 1)  # the sandbox's own funding pushes
        first = pushes.snapshot()[0]
        assert type(first) is dict
        assert first["topic"] == "market.funding.BTCUSDT"
        assert first["data"]["symbol"] == "BTCUSDT" and "fundingRate" in first["data"]
        # anything the server pushes on it arrives as sent
        data = {"symbol": "BTCUSDT", "fundingRate": "-0.0003", "nested": {"a": [1, 2]}}
        assert sandbox.publish("market.funding.BTCUSDT", data) == 1
        wait_until(lambda: any(p["data"] == data for p in pushes.snapshot()))
        stats = streams.stats()
        assert stats["topics"]["market.funding.BTCUSDT"]["messages"] >= 2
        assert stats["connections"]["public-0"]["unknown_topic"] == 0
    assert errors.snapshot() == []


def test_unknown_channel_refused_by_server_raises_subscription_error(sandbox: Sandbox) -> None:
    from sixmm import SubscriptionError

    with StreamManager(sandbox.ws_url) as streams:
        sub = streams.subscribe("market.openInterest.BTCUSDT", lambda p: None)
        with pytest.raises(SubscriptionError, match="unknown channel"):
            sub.wait_ready(10)


@pytest.mark.parametrize("bad", ["market.depth.btcusdt", "market.Depth.BTCUSDT", "market.a..b"])
def test_malformed_topics_are_still_refused_locally(bad: str) -> None:
    streams = StreamManager("ws://127.0.0.1:1/ws")
    with pytest.raises(ValueError):
        streams.subscribe(bad, print)
