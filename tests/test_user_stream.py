"""The private user stream end to end: listenKey lifecycle, token auth, events, de-duplication."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List

import pytest

import sixmm
from sixmm import (
    AccountUpdate,
    AuthError,
    Backoff,
    OrderUpdate,
    RestClient,
    StreamManager,
    StreamState,
    UserEvent,
)
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 1.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}


@pytest.fixture
def quiet() -> Iterator[Sandbox]:
    """A sandbox sending no periodic user events, only those a test pushes (the default one
    pushes a random event every second, which races any test expecting exact events)."""
    with Sandbox(port=0, seed=0, user_event_interval=0) as sb:
        yield sb


def hmac_rest(sb: Sandbox) -> RestClient:
    return RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)


def calls(sb: Sandbox, method: str, path: str = "/v1/private/user/listen-key") -> List[Any]:
    return [c for c in sb.rest_calls if c["method"] == method and c["path"] == path]


def private_conns(sb: Sandbox) -> List[Dict[str, Any]]:
    return [c for c in sb.connections if c["kind"] == "private"]


def test_user_events_are_typed_and_routed(quiet: Sandbox) -> None:
    orders, accounts, others = Recorder(), Recorder(), Recorder()
    rest = hmac_rest(quiet)
    with rest, StreamManager(quiet.ws_url, rest=rest, **FAST) as streams:
        sub = streams.user(on_order=orders, on_account=accounts, on_event=others)
        assert sub.wait_ready(5)
        sent = quiet.push_user_event("ORDER_TRADE_UPDATE")
        quiet.push_user_event("ACCOUNT_UPDATE")
        quiet.push_user_event("MARGIN_CALL")
        wait_until(lambda: len(orders) and len(accounts) and len(others))
    order = orders.snapshot()[0]
    assert isinstance(order, OrderUpdate)
    assert order.order_id == str(sent["orderId"])
    assert order.order_status == sent["orderStatus"]
    assert isinstance(accounts.snapshot()[0], AccountUpdate)
    other = others.snapshot()[0]
    assert isinstance(other, UserEvent) and other.event_type == "MARGIN_CALL"
    # one key created, closed (DELETE) on stop
    assert len(calls(quiet, "POST")) == 1
    assert len(calls(quiet, "DELETE")) == 1
    assert quiet.listen_keys == {}


def test_events_without_their_own_callback_reach_on_event(quiet: Sandbox) -> None:
    events = Recorder()
    rest = hmac_rest(quiet)
    with rest, StreamManager(quiet.ws_url, rest=rest, **FAST) as streams:
        assert streams.user(on_event=events).wait_ready(5)
        quiet.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(events) >= 1)
    assert isinstance(events.snapshot()[0], OrderUpdate)


def test_listen_key_is_renewed_on_schedule(sandbox: Sandbox) -> None:
    rest = hmac_rest(sandbox)
    with (
        rest,
        StreamManager(sandbox.ws_url, rest=rest, listen_key_renew_interval=0.2, **FAST) as streams,
    ):
        assert streams.user(on_event=lambda e: None).wait_ready(5)

        def renewals() -> int:
            return int(streams.stats()["connections"]["user"]["listen_key"]["renewals"])

        # The sandbox records a PUT before its response reaches the keeper, so wait on the
        # client's own count, not on the sandbox's.
        wait_until(lambda: renewals() >= 3, timeout=5)
    assert len(calls(sandbox, "PUT")) >= 3
    assert all(c["code"] == 0 for c in calls(sandbox, "PUT"))


def test_expired_key_is_replaced_and_stream_reopened(sandbox: Sandbox) -> None:
    orders, states = Recorder(), Recorder()
    rest = hmac_rest(sandbox)
    with rest, StreamManager(sandbox.ws_url, rest=rest, on_state=states, **FAST) as streams:
        assert streams.user(on_order=orders).wait_ready(5)
        first_key = next(iter(sandbox.listen_keys))
        sandbox.expire_listen_key()
        wait_until(lambda: len(calls(sandbox, "POST")) >= 2, timeout=10)
        wait_until(
            lambda: private_conns(sandbox) and private_conns(sandbox)[0].get("key") != first_key
        )
        wait_until(lambda: streams.stats()["connections"]["user"]["authenticated"], timeout=5)
        sandbox.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(orders) >= 1)
        assert first_key not in sandbox.listen_keys
    assert any("listenKey" in s.reason for s in states.snapshot())


def test_short_key_lifetime_is_survived_by_renewal(sandbox: Sandbox) -> None:
    # TTL 1.5 s, a renewal every 0.25 s: a renewal may run 1.25 s late (a loaded machine)
    # before the key expires
    sandbox.set_listen_key_ttl(1.5)
    orders = Recorder()
    rest = hmac_rest(sandbox)
    with (
        rest,
        StreamManager(sandbox.ws_url, rest=rest, listen_key_renew_interval=0.25, **FAST) as streams,
    ):
        assert streams.user(on_order=orders).wait_ready(5)
        wait_until(lambda: len(calls(sandbox, "PUT")) >= 9, timeout=20)  # > 1.5 key lifetimes
        sandbox.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(orders) >= 1)
    assert len(calls(sandbox, "POST")) == 1  # renewal kept the one key alive


def test_rejected_credentials_are_terminal_without_retry_storm(sandbox: Sandbox) -> None:
    errors, states = Recorder(), Recorder()
    rest = RestClient(api_key=sandbox.api_key, api_secret="wrong-secret", base_url=sandbox.rest_url)
    with (
        rest,
        StreamManager(
            sandbox.ws_url, rest=rest, on_error=errors, on_state=states, **FAST
        ) as streams,
    ):
        sub = streams.user(on_event=lambda e: None)
        assert streams.wait(5)  # the only connection is lost for good: wait() returns
        assert not sub.ready
    assert any(isinstance(e, AuthError) for e in errors.snapshot())
    assert states.snapshot()[-1].state is StreamState.LOST
    assert len(sandbox.rest_calls) <= 2


def test_credentials_revoked_while_running_end_in_lost(sandbox: Sandbox) -> None:
    errors = Recorder()
    rest = hmac_rest(sandbox)
    with rest, StreamManager(sandbox.ws_url, rest=rest, on_error=errors, **FAST) as streams:
        assert streams.user(on_event=lambda e: None).wait_ready(5)
        sandbox.reject_credentials(True)
        sandbox.expire_listen_key()
        assert streams.wait(10)
        n = len(sandbox.rest_calls)
    assert any(isinstance(e, AuthError) for e in errors.snapshot())
    assert n <= 8


def test_token_path_connects_with_token(sandbox: Sandbox) -> None:
    orders = Recorder()
    token = sandbox.issue_token()
    rest = RestClient(token=token, base_url=sandbox.rest_url)
    with rest, StreamManager(sandbox.ws_url, rest=rest, **FAST) as streams:
        assert streams.user(on_order=orders).wait_ready(5)
        assert private_conns(sandbox)[0].get("key") in (None, "")
        sandbox.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(orders) >= 1)
    assert calls(sandbox, "POST") == []  # no listenKey with a token


def test_bad_token_is_terminal(sandbox: Sandbox) -> None:
    errors = Recorder()
    rest = RestClient(token="not-a-token", base_url=sandbox.rest_url)
    with rest, StreamManager(sandbox.ws_url, rest=rest, on_error=errors, **FAST) as streams:
        streams.user(on_event=lambda e: None)
        assert streams.wait(5)
    assert any(isinstance(e, AuthError) for e in errors.snapshot())


def test_replayed_events_after_reconnect_are_delivered_once(quiet: Sandbox) -> None:
    orders = Recorder()
    quiet.set_replay_on_connect(5)
    rest = hmac_rest(quiet)
    with rest, StreamManager(quiet.ws_url, rest=rest, **FAST) as streams:
        assert streams.user(on_order=orders).wait_ready(5)
        for _ in range(3):
            quiet.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(orders) >= 3)
        quiet.drop_all()
        wait_until(lambda: streams.stats()["connections"]["user"]["connects"] >= 2)
        wait_until(lambda: streams.stats()["connections"]["user"]["duplicates"] >= 3)
        quiet.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(orders) >= 4)
    keys = [o.dedupe_key for o in orders.snapshot()]
    assert len(keys) == len(set(keys)) == 4


def test_user_requires_credentials() -> None:
    streams = StreamManager("ws://127.0.0.1:1/ws")
    with pytest.raises(ValueError):
        streams.user(on_event=print)
    with pytest.raises(ValueError):
        StreamManager("ws://127.0.0.1:1/ws", rest=RestClient()).user(on_event=print)


def test_no_secret_in_debug_logs_or_reprs(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sixmm")
    token = sandbox.issue_token()
    rest = hmac_rest(sandbox)
    keys: List[str] = []
    with (
        rest,
        StreamManager(sandbox.ws_url, rest=rest, listen_key_renew_interval=0.2, **FAST) as streams,
    ):
        assert streams.user(on_event=lambda e: None).wait_ready(5)
        keys.extend(sandbox.listen_keys)
        wait_until(lambda: len(calls(sandbox, "PUT")) >= 1)
        sandbox.expire_listen_key()
        wait_until(lambda: len(calls(sandbox, "POST")) >= 2, timeout=10)
        wait_until(lambda: streams.stats()["connections"]["user"]["authenticated"], timeout=5)
        keys.extend(sandbox.listen_keys)
        texts = [repr(streams), repr(rest), repr(streams.stats())]
    token_rest = RestClient(token=token, base_url=sandbox.rest_url)
    texts.append(repr(token_rest))
    token_rest.close()
    texts.extend(r.getMessage() for r in caplog.records)
    texts.extend(str(r.exc_info) for r in caplog.records if r.exc_info)
    blob = "\n".join(texts)
    assert caplog.records, "expected DEBUG logs"
    assert sandbox.api_secret not in blob
    assert token not in blob
    for key in keys:
        assert key not in blob


def test_sixmm_exports_the_contract() -> None:
    for name in (
        "StreamManager",
        "RestClient",
        "QueueDispatcher",
        "Backoff",
        "Trade",
        "Kline",
        "Ticker",
        "DepthUpdate",
        "OrderUpdate",
        "AccountUpdate",
        "UserEvent",
        "SixMMError",
        "ApiError",
        "AuthError",
        "SubscriptionError",
        "ProtocolError",
        "ConnectionLost",
        "CallbackError",
    ):
        assert hasattr(sixmm, name), name


def test_unparsable_user_event_is_reported_and_still_delivered(quiet: Sandbox) -> None:
    orders, events, errors = Recorder(), Recorder(), Recorder()
    rest = hmac_rest(quiet)
    with rest, StreamManager(quiet.ws_url, rest=rest, on_error=errors, **FAST) as streams:
        assert streams.user(on_order=orders, on_event=events).wait_ready(5)
        quiet.push_user_event("ORDER_TRADE_UPDATE", {"price": "not-a-price"})
        wait_until(lambda: len(events) >= 1)
    event = events.snapshot()[0]
    assert isinstance(event, UserEvent) and event.event_type == "ORDER_TRADE_UPDATE"
    assert event.data["price"] == "not-a-price"
    assert orders.snapshot() == []
    assert any("ORDER_TRADE_UPDATE" in str(e) for e in errors.snapshot())
