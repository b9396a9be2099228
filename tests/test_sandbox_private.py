"""Sandbox REST, auth and private stream, driven by raw ``requests`` + websocket-client."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, Optional

import pytest
import requests
import websocket

from sixmm.sandbox import Sandbox
from tests.helpers import control_sandbox, quit_control
from tests.test_sandbox_helpers import Closed, RawWS

KEY_PATH = "/v1/private/user/listen-key"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(user_event_interval=0, tick_interval=0) as box:
        yield box


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(
    sb: Sandbox,
    method: str,
    path: str,
    query: str = "",
    body: Optional[Dict[str, Any]] = None,
    secret: Optional[str] = None,
    ts: Optional[int] = None,
) -> requests.Response:
    """Sign exactly the query string and body string that are sent (PROTOCOL.md §6.1)."""
    qs = f"{query}&timestamp={ts or now_ms()}" if query else f"timestamp={ts or now_ms()}"
    raw_body = json.dumps(body, separators=(",", ":")) if body is not None else ""
    sig = hmac.new(
        (secret or sb.api_secret).encode(), (qs + raw_body).encode(), hashlib.sha256
    ).hexdigest()
    headers = {"X-API-KEY": sb.api_key}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(
        method,
        f"{sb.rest_url}{path}?{qs}&signature={sig}",
        data=raw_body.encode() if raw_body else None,
        headers=headers,
        timeout=5,
    )


def login(sb: Sandbox, password: str = "sandbox-password") -> requests.Response:
    return requests.post(
        f"{sb.rest_url}/v1/public/user/login",
        json={"username": "sandbox", "password": password},
        timeout=5,
    )


def bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------- REST


def test_time_envelope_and_request_id_echo(sb: Sandbox) -> None:
    r = requests.get(f"{sb.rest_url}/v1/time", headers={"X-Request-ID": "rid-42"}, timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["code"] == 0 and body["message"] == "success"
    assert body["requestId"] == "rid-42"
    data = body["data"]
    assert set(data) == {"timestamp", "timestampMs", "iso", "timezone"}
    assert abs(data["timestampMs"] - now_ms()) < 2000
    assert data["timestamp"] == data["timestampMs"] // 1000
    other = requests.get(f"{sb.rest_url}/v1/time", timeout=5).json()["requestId"]
    assert other and other != "rid-42"


def test_clock_skew_visible_and_tolerance_enforced(sb: Sandbox) -> None:
    sb.set_clock_skew(60_000)
    server = requests.get(f"{sb.rest_url}/v1/time", timeout=5).json()["data"]["timestampMs"]
    assert 58_000 < server - now_ms() < 62_000
    r = signed(sb, "GET", "/v1/private/order/current", "symbol=BTCUSDT")
    assert r.json()["message"] == "Timestamp outside of tolerance window"
    assert r.json()["code"] != 0
    r = signed(sb, "GET", "/v1/private/order/current", "symbol=BTCUSDT", ts=server)
    assert r.json()["code"] == 0  # re-synced timestamp is accepted
    sb.set_clock_skew(0)
    assert signed(sb, "GET", "/v1/private/order/current", ts=now_ms() - 9_000).json()["code"] == 0
    late = signed(sb, "GET", "/v1/private/order/current", ts=now_ms() - 11_000).json()
    assert late["message"] == "Timestamp outside of tolerance window"


def test_hmac_get_post_delete_accepted_wrong_secret_rejected(sb: Sandbox) -> None:
    r = signed(sb, "GET", "/v1/private/order/current", "symbol=BTCUSDT")
    assert r.status_code == 200 and r.json()["code"] == 0 and r.json()["data"] == []
    order = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "orderType": "LIMIT",
        "price": "1.0",
        "quantity": "2",
    }
    placed = signed(sb, "POST", "/v1/private/order/place", body=order).json()
    assert placed["code"] == 0 and placed["data"]["orderStatus"] == "NEW"
    current = signed(sb, "GET", "/v1/private/order/current", "symbol=BTCUSDT").json()["data"]
    assert [o["orderId"] for o in current] == [placed["data"]["orderId"]]
    cancel = {"symbol": "BTCUSDT", "orderId": placed["data"]["orderId"]}
    canceled = signed(sb, "DELETE", "/v1/private/order/cancel", body=cancel).json()
    assert canceled["code"] == 0 and canceled["data"]["orderStatus"] == "CANCELED"
    again = signed(sb, "DELETE", "/v1/private/order/cancel", body=cancel).json()
    assert again["code"] == 3005
    for method, path, body in (
        ("GET", "/v1/private/order/current", None),
        ("POST", "/v1/private/order/place", order),
        ("DELETE", "/v1/private/order/cancel", cancel),
    ):
        bad = signed(sb, method, path, "symbol=BTCUSDT", body=body, secret="wrong")
        assert (bad.status_code, bad.json()["code"]) == (401, 1003)
    calls = sb.rest_calls
    assert calls[1]["method"] == "POST" and calls[1]["body"] == json.dumps(
        order, separators=(",", ":")
    )
    assert calls[0]["query"].startswith("symbol=BTCUSDT&timestamp=")
    assert "&signature=" in calls[0]["query"] and calls[0]["headers"]["X-API-KEY"] == "sandbox-key"


def test_signature_covers_the_raw_query_as_sent(sb: Sandbox) -> None:
    # not re-encoded, not reordered: the signature of "b=2&a=%20x" must not match "a= x&b=2"
    assert signed(sb, "GET", "/v1/private/order/current", "b=2&a=%20x").json()["code"] == 0
    ts = now_ms()
    sig = hmac.new(b"sandbox-secret", f"a= x&b=2&timestamp={ts}".encode(), hashlib.sha256)
    query = f"b=2&a=%20x&timestamp={ts}&signature={sig.hexdigest()}"
    url = f"{sb.rest_url}/v1/private/order/current?{query}"
    r = requests.get(url, headers={"X-API-KEY": sb.api_key}, timeout=5)
    assert r.json()["code"] == 1003


def test_missing_auth_unknown_key_and_missing_signature(sb: Sandbox) -> None:
    r = requests.get(f"{sb.rest_url}/v1/private/order/current", timeout=5)
    assert (r.status_code, r.json()["code"]) == (401, 1001)
    r = requests.get(
        f"{sb.rest_url}/v1/private/order/current?timestamp={now_ms()}&signature=00",
        headers={"X-API-KEY": "someone-else"},
        timeout=5,
    )
    assert (r.status_code, r.json()["code"]) == (401, 1003)
    r = requests.get(
        f"{sb.rest_url}/v1/private/order/current?timestamp={now_ms()}",
        headers={"X-API-KEY": sb.api_key},
        timeout=5,
    )
    assert r.json()["code"] == 1001
    r = requests.get(f"{sb.rest_url}/v1/nope", timeout=5)
    assert r.status_code == 404 and r.json()["code"] != 0


def test_replayed_signature_rejected_on_order_paths(sb: Sandbox) -> None:
    order = {"symbol": "ETHUSDT", "side": "SELL", "quantity": "1"}
    ts = now_ms()
    first = signed(sb, "POST", "/v1/private/order/place", body=order, ts=ts).json()
    assert first["code"] == 0
    replay = signed(sb, "POST", "/v1/private/order/place", body=order, ts=ts).json()
    assert (replay["code"], replay["message"]) == (3004, "Signature replay detected")


def test_login_bearer_token_accepted_bad_token_rejected(sb: Sandbox) -> None:
    r = login(sb)
    data = r.json()["data"]
    token = data["accessToken"]
    assert data["expiresIn"] == 3600 and token.count(".") == 2
    ok = requests.get(
        f"{sb.rest_url}/v1/private/order/current", headers=bearer(token), timeout=5
    ).json()
    assert ok["code"] == 0
    header, payload, sig = token.split(".")
    for bad in (token + "x", f"{header}.{payload}.{sig[::-1]}", "garbage"):
        r = requests.post(f"{sb.rest_url}{KEY_PATH}", headers=bearer(bad), timeout=5)
        assert (r.status_code, r.json()["code"]) == (401, 1003)
    expired = sb.issue_token(ttl=-1)
    r = requests.post(f"{sb.rest_url}{KEY_PATH}", headers=bearer(expired), timeout=5)
    assert (r.status_code, r.json()["code"]) == (401, 1002)
    wrong = login(sb, "nope")
    assert (wrong.status_code, wrong.json()["code"]) == (401, 1003)
    auths = [c["headers"].get("Authorization") for c in sb.rest_calls]
    assert f"Bearer {token}" in auths


def test_reject_credentials(sb: Sandbox) -> None:
    token = login(sb).json()["data"]["accessToken"]
    key = requests.post(f"{sb.rest_url}{KEY_PATH}", headers=bearer(token), timeout=5).json()
    sb.reject_credentials()
    for r in (
        login(sb),
        requests.post(f"{sb.rest_url}{KEY_PATH}", headers=bearer(token), timeout=5),
        signed(sb, "GET", "/v1/private/order/current"),
    ):
        assert (r.status_code, r.json()["code"]) == (401, 1003)
    ws = RawWS(f"{sb.ws_url}?listenKey={key['data']['listenKey']}")
    try:
        auth = ws.recv()
        assert auth["event"] == "auth" and auth["success"] is False and auth["message"]
        with pytest.raises(Closed):
            ws.recv()
    finally:
        ws.close()
    sb.reject_credentials(False)
    assert login(sb).json()["code"] == 0


def test_fail_next_rest(sb: Sandbox) -> None:
    sb.fail_next_rest(5003, http_status=429, count=2, message="Too many requests")
    for _ in range(2):
        r = requests.get(f"{sb.rest_url}/v1/time", timeout=5)
        assert (r.status_code, r.json()["code"], r.json()["message"]) == (
            429,
            5003,
            "Too many requests",
        )
    assert requests.get(f"{sb.rest_url}/v1/time", timeout=5).json()["code"] == 0
    sb.fail_next_rest(5002, path=KEY_PATH)
    assert requests.get(f"{sb.rest_url}/v1/time", timeout=5).json()["code"] == 0
    r = signed(sb, "POST", KEY_PATH)
    assert r.json()["code"] == 5002
    assert [c["code"] for c in sb.rest_calls] == [5003, 5003, 0, 0, 5002]


# ------------------------------------------------------------------- listenKeys


def test_listen_key_lifecycle(sb: Sandbox) -> None:
    created = signed(sb, "POST", KEY_PATH).json()["data"]
    key, expire_at = created["listenKey"], created["expireAt"]
    assert sb.listen_keys == {key: expire_at}
    assert 3_590_000 < expire_at - now_ms() <= 3_600_000
    sb.set_listen_key_ttl(7200)
    renewed = signed(sb, "PUT", KEY_PATH, body={"listenKey": key}).json()
    assert renewed["code"] == 0 and sb.listen_keys[key] > expire_at + 3_000_000
    assert signed(sb, "DELETE", KEY_PATH, body={"listenKey": key}).json()["code"] == 0
    assert sb.listen_keys == {}
    gone = signed(sb, "PUT", KEY_PATH, body={"listenKey": key}).json()
    assert gone["code"] != 0 and "listenKey" in gone["message"]


def test_expired_key_closes_private_socket_and_renew_fails(sb: Sandbox) -> None:
    key = signed(sb, "POST", KEY_PATH).json()["data"]["listenKey"]
    ws = RawWS(f"{sb.ws_url}?listenKey={key}")
    try:
        assert ws.recv() == {"event": "auth", "success": True, "data": sb.user_id}
        (conn,) = sb.connections
        assert conn["kind"] == "private" and conn["key"] == key and conn["user"] == sb.user_id
        sb.expire_listen_key(key)
        with pytest.raises(Closed):
            ws.recv_all(2.0)
    finally:
        ws.close()
    assert sb.connections == []
    assert signed(sb, "PUT", KEY_PATH, body={"listenKey": key}).json()["code"] == 2002
    again = RawWS(f"{sb.ws_url}?listenKey={key}")
    try:
        refused = again.recv()
        assert refused["event"] == "auth" and refused["success"] is False
        with pytest.raises(Closed):
            again.recv()
    finally:
        again.close()


def test_short_ttl_expires_by_itself(sb: Sandbox) -> None:
    sb.set_listen_key_ttl(0.3)
    key = signed(sb, "POST", KEY_PATH).json()["data"]["listenKey"]
    ws = RawWS(f"{sb.ws_url}?listenKey={key}")
    try:
        assert ws.recv()["success"] is True
        with pytest.raises(Closed):
            ws.recv_all(3.0)
    finally:
        ws.close()
    assert sb.listen_keys == {}


# ---------------------------------------------------------------- private stream


def test_private_stream_by_token_receives_user_events(sb: Sandbox) -> None:
    token = login(sb).json()["data"]["accessToken"]
    ws = RawWS(f"{sb.ws_url}?token={token}")
    try:
        assert ws.recv() == {"event": "auth", "success": True, "data": "1188041528"}
        for kind in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "MARGIN_CALL"):
            sent = sb.push_user_event(kind)
            frame = ws.recv()
            assert set(frame) == {"topic", "ts", "data"}  # no "event" key, as documented
            assert frame["topic"] == "user.1188041528" and frame["data"] == sent
            assert sent["eventType"] == kind
        custom = sb.push_user_event(data={"orderId": "42", "orderStatus": "FILLED"})
        assert ws.recv()["data"]["orderId"] == "42" and custom["orderStatus"] == "FILLED"
    finally:
        ws.close()


def test_user_event_fields(sb: Sandbox) -> None:
    order = sb.push_user_event("ORDER_TRADE_UPDATE")
    for field in (
        "symbol", "orderId", "clientOrderId", "side", "positionSide", "orderType",
        "timeInForce", "orderStatus", "price", "quantity", "filledQuantity", "avgPrice",
        "lastFilledPrice", "lastFilledQuantity", "updateTime", "eventTime",
    ):  # fmt: skip
        assert field in order, field
    account = sb.push_user_event("ACCOUNT_UPDATE")
    (balance,) = account["balances"]
    assert set(balance) == {"asset", "walletBalance", "availableBalance", "frozenBalance"}
    position = account["positions"][0]
    assert position["marginMode"] in ("ISOLATED", "CROSS")
    assert {"symbol", "positionSide", "positionAmount", "entryPrice"} <= set(position)


def test_periodic_user_events_and_replay_on_connect() -> None:
    with Sandbox(user_event_interval=0.05, tick_interval=0, replay_on_connect=3) as box:
        token = box.issue_token()
        first = RawWS(f"{box.ws_url}?token={token}")
        try:
            assert first.recv()["success"] is True
            seen = [first.recv(2.0)["data"] for _ in range(4)]
        finally:
            first.close()
        assert all("eventType" in e for e in seen)
        assert box.wait_for(lambda: box.connections == [])  # periodic events stop with no one
        box.push_user_event(data={"orderId": "last-one"})
        second = RawWS(f"{box.ws_url}?token={token}")
        try:
            assert second.recv()["success"] is True
            replayed = [second.recv()["data"] for _ in range(3)]
        finally:
            second.close()
        assert replayed[-1]["orderId"] == "last-one"  # the last 3 events again: duplicates


def test_invalid_private_credentials_get_auth_failure_then_close(sb: Sandbox) -> None:
    for query in ("listenKey=nope", "token=a.b.c"):
        ws = RawWS(f"{sb.ws_url}?{query}")
        try:
            failure = ws.recv()
            assert failure["event"] == "auth" and failure["success"] is False
            assert isinstance(failure["message"], str)
            with pytest.raises(Closed):
                ws.recv()
        finally:
            ws.close()


# -------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_banner_and_exits_cleanly_on_signal(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm.sandbox", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "ws://127.0.0.1:" in banner and "http://127.0.0.1:" in banner
        assert "sandbox-key" in banner
        rest = banner.split("rest=")[1].split()[0]
        assert requests.get(f"{rest}/v1/time", timeout=5).json()["code"] == 0
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out == ""  # exactly one banner line


def test_cli_control_commands() -> None:
    with control_sandbox() as (proc, ws_url):
        assert proc.stdin is not None
        ws = RawWS(ws_url)
        try:
            # the handshake can complete a moment before the server registers the socket;
            # a pong proves it is registered, so "malformed" below reaches it
            ws.op("ping", "registered")
            assert ws.recv() == {"id": "registered", "event": "pong"}
            proc.stdin.write("bogus\nmalformed hello\ndrop\n")
            proc.stdin.flush()
            assert ws.recv() == "hello"
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                ws.recv(3.0)
        finally:
            ws.close()
        out, err = quit_control(proc)
    assert proc.returncode == 0, err
    assert "unknown command 'bogus'" in out and "dropped 1" in out


def test_auth_failure_close_style_just_closes() -> None:
    with Sandbox(user_event_interval=0, tick_interval=0, auth_failure="close") as box:
        ws = RawWS(f"{box.ws_url}?listenKey=unknown")
        try:
            with pytest.raises(Closed) as info:
                ws.recv()
            assert info.value.code == 1008
        finally:
            ws.close()
