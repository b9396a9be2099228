"""The client against every wire variant the sandbox can speak (PROTOCOL.md [assumed] rules)."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from sixmm import Backoff, ConnectionLost, RestClient, StreamManager, SubscriptionError, Trade
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 1.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}


@pytest.mark.parametrize("ack_style", ["doc", "msg_field", "numeric_ids"])
@pytest.mark.parametrize("trade_style", ["list", "object"])
def test_acks_and_trades_in_every_style(ack_style: str, trade_style: str) -> None:
    trades = Recorder()
    with Sandbox(port=0, ack_style=ack_style, trade_style=trade_style) as sb:
        sb.reject_next_subscribe("market.trade.SOLUSDT", message="nope")
        with StreamManager(sb.ws_url, **FAST) as streams:
            assert streams.trades("BTCUSDT", trades).wait_ready(5)
            refused = streams.trades("SOLUSDT", lambda t: None)
            with pytest.raises(SubscriptionError, match="nope"):
                refused.wait_ready(5)
            wait_until(lambda: len(trades) >= 3)
            stats = streams.stats()["connections"]["public-0"]
    assert all(isinstance(t, Trade) and t.symbol == "BTCUSDT" for t in trades.snapshot())
    assert stats["unmatched_acks"] == 0


def test_auth_failure_by_close_still_recreates_an_expired_key() -> None:
    orders = Recorder()
    with Sandbox(port=0, auth_failure="close") as sb:
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        with rest, StreamManager(sb.ws_url, rest=rest, **FAST) as streams:
            assert streams.user(on_order=orders).wait_ready(5)
            sb.expire_listen_key()
            wait_until(
                lambda: len([c for c in sb.rest_calls if c["method"] == "POST"]) >= 2, timeout=10
            )
            wait_until(lambda: streams.stats()["connections"]["user"]["authenticated"])
            sb.push_user_event("ORDER_TRADE_UPDATE")
            wait_until(lambda: len(orders) >= 1)


def test_token_refused_by_a_bare_close_is_retried_with_backoff() -> None:
    """A close with no auth frame cannot prove the token bad (it may be the network): sixmm
    keeps retrying with backoff, never reports the stream as authenticated, and tells
    ``on_error`` after 3 such closes in a row (once, not on every attempt)."""
    errors = Recorder()
    with Sandbox(port=0, auth_failure="close") as sb:
        rest = RestClient(token=sb.issue_token(), base_url=sb.rest_url)
        sb.reject_credentials(True)
        with rest, StreamManager(sb.ws_url, rest=rest, on_error=errors, **FAST) as streams:
            streams.user(on_event=lambda e: None)
            user = lambda: streams.stats()["connections"]["user"]  # noqa: E731
            wait_until(lambda: user()["closed_before_auth"] >= 5, timeout=15)
            assert not user()["authenticated"]
            hints = [e for e in errors.snapshot() if "token may be invalid" in str(e)]
            n = user()["closed_before_auth"]  # read after: it may have grown meanwhile
            # one hint at 3, then one per 10 more (exactly 1 unless this thread lagged)
            assert 1 <= len(hints) <= 1 + (n - 3) // 10, (len(hints), n)
            assert isinstance(hints[0], ConnectionLost)
            assert "3 times in a row" in str(hints[0])
            # the token becomes good again: the stream authenticates and the count resets
            sb.reject_credentials(False)
            wait_until(lambda: user()["authenticated"], timeout=15)
            # the session sets "authenticated" a statement before it resets the count
            wait_until(lambda: user()["closed_before_auth"] == 0, timeout=5)
