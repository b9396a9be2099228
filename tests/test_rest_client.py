"""RestClient over real HTTP on 127.0.0.1: signing, envelopes, retries, clock re-sync, auth.

Most tests run against the sandbox exchange; connection failures and timeouts use bare
loopback sockets.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
import requests

from sixmm.config import Backoff
from sixmm.errors import ApiError, AuthError, ConnectionLost, SixMMError
from sixmm.rest.client import RestClient, _retry_after, is_transient

FAST = Backoff(initial=0.01, maximum=0.02, jitter=False)
ORDER = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "positionSide": "BOTH",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "price": "85000.1",
    "quantity": "0.010",
}


def api_key(sb: Any) -> str:
    return str(getattr(sb, "api_key", "sandbox-key"))


def api_secret(sb: Any) -> str:
    return str(getattr(sb, "api_secret", "sandbox-secret"))


def hmac_client(sb: Any) -> RestClient:
    return RestClient(
        base_url=sb.rest_url, api_key=api_key(sb), api_secret=api_secret(sb), retry_backoff=FAST
    )


def login(sb: Any) -> str:
    r = requests.post(
        sb.rest_url + "/v1/public/user/login",
        json={"username": "sandbox", "password": "sandbox-password"},
        timeout=5,
    )
    token = r.json()["data"]["accessToken"]
    assert isinstance(token, str)
    return token


def calls(sb: Any, path: str, method: str = "") -> List[Dict[str, Any]]:
    return [
        c
        for c in list(sb.rest_calls)
        if c["path"] == path and (not method or c["method"] == method)
    ]


def header(call: Dict[str, Any], name: str) -> Any:
    headers = call["headers"]
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


@pytest.fixture
def rest(sandbox: Any) -> Iterator[RestClient]:
    with hmac_client(sandbox) as client:
        yield client


# ------------------------------------------------------------------- public + time


def test_server_time_and_offset(sandbox: Any, rest: RestClient) -> None:
    ms = rest.server_time()
    assert isinstance(ms, int) and abs(ms - time.time() * 1000) < 5_000
    offset = rest.sync_time()
    assert abs(offset) < 5_000 and rest.stats()["time_offset_ms"] == offset
    assert rest.request("GET", "/v1/time", signed=False)["timestampMs"] > 0


def test_signed_call_without_credentials_fails_before_the_network(sandbox: Any) -> None:
    with RestClient(base_url=sandbox.rest_url) as anon:
        before = len(sandbox.rest_calls)
        with pytest.raises(AuthError):
            anon.create_listen_key()
        assert len(sandbox.rest_calls) == before
        assert anon.auth_kind is None and anon.token is None


# ------------------------------------------------------------------- HMAC signing


def test_signed_get_with_params(sandbox: Any, rest: RestClient) -> None:
    data = rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    assert data is not None
    call = calls(sandbox, "/v1/private/order/current")[-1]
    assert call["code"] == 0 and call["status"] == 200
    assert call["query"].startswith("symbol=BTCUSDT&timestamp=")
    assert "&signature=" in call["query"]
    assert header(call, "X-API-KEY") == api_key(sandbox)
    assert len(header(call, "X-Request-ID")) == 32
    rest.request("GET", "/v1/private/order/current?symbol=BTCUSDT")  # an inline query works too
    call = calls(sandbox, "/v1/private/order/current")[-1]
    assert call["code"] == 0 and call["query"].startswith("symbol=BTCUSDT&timestamp=")


def test_signed_post_and_delete_with_body(sandbox: Any, rest: RestClient) -> None:
    placed = rest.request("POST", "/v1/private/order/place", body=ORDER)
    assert isinstance(placed, dict)
    call = calls(sandbox, "/v1/private/order/place")[-1]
    assert call["code"] == 0
    assert call["body"].startswith('{"symbol":"BTCUSDT","side":"BUY"')  # compact, in order
    order_id = placed.get("orderId")
    assert order_id is not None
    rest.request(
        "DELETE", "/v1/private/order/cancel", body={"symbol": "BTCUSDT", "orderId": order_id}
    )
    assert calls(sandbox, "/v1/private/order/cancel", "DELETE")[-1]["code"] == 0


def test_identical_orders_in_a_burst_never_replay_a_signature(sandbox: Any) -> None:
    frozen = time.time()  # every request in the same millisecond, as on a fast machine
    with RestClient(
        base_url=sandbox.rest_url,
        api_key=api_key(sandbox),
        api_secret=api_secret(sandbox),
        clock=lambda: frozen,
    ) as client:
        for _ in range(5):
            client.request("POST", "/v1/private/order/place", body=ORDER)
    assert [c["code"] for c in calls(sandbox, "/v1/private/order/place")] == [0] * 5


def test_listen_key_lifecycle(sandbox: Any, rest: RestClient) -> None:
    key = rest.create_listen_key()
    assert isinstance(key, str) and key in sandbox.listen_keys
    rest.renew_listen_key(key)
    rest.close_listen_key(key)
    assert key not in sandbox.listen_keys
    with pytest.raises(ApiError) as info:
        rest.renew_listen_key(key)  # the key is gone: a non-zero, non-auth, non-transient code
    assert not isinstance(info.value, AuthError) and not is_transient(info.value)
    assert key not in str(info.value)


def test_wrong_secret_is_an_auth_error(sandbox: Any) -> None:
    bad = RestClient(base_url=sandbox.rest_url, api_key=api_key(sandbox), api_secret="wrong")
    with bad, pytest.raises(AuthError) as info:
        bad.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    err = info.value
    assert err.code == 1003 and isinstance(err, PermissionError)
    sent = header(calls(sandbox, "/v1/private/order/current")[-1], "X-Request-ID")
    assert err.request_id == sent  # the echoed requestId is kept for support tickets
    assert "signature=" not in str(err) and "wrong" not in str(err)


def test_rejected_credentials_are_auth_errors(sandbox: Any, rest: RestClient) -> None:
    token = login(sandbox)
    sandbox.reject_credentials(True)
    try:
        with pytest.raises(AuthError) as info:
            rest.create_listen_key()
        assert info.value.code in (1001, 1002, 1003, 1004) or info.value.http_status == 401
        with RestClient(base_url=sandbox.rest_url, token=token) as tok, pytest.raises(AuthError):
            tok.create_listen_key()
    finally:
        sandbox.reject_credentials(False)
    assert rest.create_listen_key()


@pytest.mark.parametrize("code,status", [(1001, 200), (1002, 200), (1004, 200), (2002, 401)])
def test_auth_codes_and_http_401_map_to_auth_error(
    sandbox: Any, rest: RestClient, code: int, status: int
) -> None:
    sandbox.fail_next_rest(code, http_status=status, message="nope")
    with pytest.raises(AuthError) as info:
        rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    assert (info.value.code, info.value.http_status) == (code, status)


def test_business_error_fields(sandbox: Any, rest: RestClient) -> None:
    sandbox.fail_next_rest(3003, http_status=200, message="Order not found")
    with pytest.raises(ApiError) as info:
        rest.request(
            "DELETE", "/v1/private/order/cancel", body={"symbol": "BTCUSDT", "orderId": "1"}
        )
    err = info.value
    assert type(err) is ApiError and isinstance(err, SixMMError)
    assert (err.code, err.message, err.http_status) == (3003, "Order not found", 200)
    assert err.request_id and len(err.request_id) > 0
    assert rest.stats()["retries"] == 0  # a business error is never retried


def test_unknown_endpoint_is_an_api_error_with_http_status(sandbox: Any, rest: RestClient) -> None:
    with pytest.raises(ApiError) as info:
        rest.request("GET", "/v1/no/such/endpoint", signed=False)
    assert info.value.http_status == 404 and not isinstance(info.value, AuthError)


class _TextHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 401 if self.path.startswith("/401") else 502
        body = b"<html>Bad Gateway</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def text_server() -> Iterator[str]:
    """A loopback HTTP server answering every GET with an HTML error page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TextHandler)
    thread = threading.Thread(target=server.serve_forever, name="test-text-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_non_json_bodies_are_api_errors_with_http_status(text_server: str) -> None:
    with RestClient(base_url=text_server, retry_backoff=FAST, max_retries=1) as client:
        with pytest.raises(ApiError) as info:
            client.request("GET", "/502", signed=False)
        assert (info.value.code, info.value.http_status) == (None, 502)
        assert client.stats()["retries"] == 1  # a 5xx on GET is transient
        with pytest.raises(AuthError) as auth:
            client.request("GET", "/401", signed=False)
        assert auth.value.http_status == 401


# ------------------------------------------------------------------- clock skew


def test_clock_skew_is_recovered_with_exactly_one_resigned_retry(
    sandbox: Any, rest: RestClient
) -> None:
    sandbox.set_clock_skew(30_000)
    data = rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    assert data is not None
    signed = calls(sandbox, "/v1/private/order/current")
    assert len(signed) == 2 and signed[0]["code"] != 0 and signed[1]["code"] == 0
    assert signed[0]["query"] != signed[1]["query"]  # fresh timestamp and signature
    assert len(calls(sandbox, "/v1/time")) == 1
    stats = rest.stats()
    assert stats["resyncs"] == 1 and abs(stats["time_offset_ms"] - 30_000) < 2_000
    rest.request("POST", "/v1/private/order/place", body=ORDER)  # offset kept: no new resync
    assert rest.stats()["resyncs"] == 1


def test_persistent_tolerance_error_is_raised_after_one_retry(
    sandbox: Any, rest: RestClient
) -> None:
    sandbox.fail_next_rest(
        2003,
        http_status=400,
        count=5,
        message="Timestamp outside of tolerance window",
        path="/v1/private/user/listen-key",
    )
    with pytest.raises(ApiError) as info:
        rest.renew_listen_key("0" * 64)
    assert not isinstance(info.value, AuthError)
    assert len(calls(sandbox, "/v1/private/user/listen-key", "PUT")) == 2
    assert rest.stats()["resyncs"] == 1


# ------------------------------------------------------------------- retries


def test_rate_limit_is_retried_for_idempotent_calls(sandbox: Any, rest: RestClient) -> None:
    sandbox.fail_next_rest(5003, http_status=429, count=2, message="Too many requests")
    rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    got = calls(sandbox, "/v1/private/order/current")
    assert [c["code"] for c in got] == [5003, 5003, 0]
    assert rest.stats()["retries"] == 2


def test_retries_are_bounded(sandbox: Any, rest: RestClient) -> None:
    sandbox.fail_next_rest(5002, http_status=503, count=50, message="Service unavailable")
    with pytest.raises(ApiError) as info:
        rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    assert info.value.code == 5002 and is_transient(info.value)
    assert len(calls(sandbox, "/v1/private/order/current")) == 4  # 1 + max_retries (3)


def test_post_is_never_retried(sandbox: Any, rest: RestClient) -> None:
    for code, status in ((5003, 429), (5001, 500)):
        sandbox.fail_next_rest(code, http_status=status, message="try later")
        with pytest.raises(ApiError) as info:
            rest.request("POST", "/v1/private/order/place", body=ORDER)
        assert info.value.code == code
    assert len(calls(sandbox, "/v1/private/order/place")) == 2
    assert rest.stats()["retries"] == 0


def test_retry_after_parsing() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after(" 0.5 ") == 0.5
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _retry_after("-1") is None and _retry_after(None) is None


# ------------------------------------------------------------------- token path


def test_token_auth(sandbox: Any) -> None:
    token = login(sandbox)
    with RestClient(base_url=sandbox.rest_url, token=token) as client:
        assert client.auth_kind == "token" and client.token == token
        assert token not in repr(client)
        key = client.create_listen_key()
        assert key in sandbox.listen_keys
        call = calls(sandbox, "/v1/private/user/listen-key", "POST")[-1]
        assert header(call, "Authorization") == f"Bearer {token}"
        assert "signature=" not in (call["query"] or "")
        client.close_listen_key(key)


# ------------------------------------------------------------------- network failures


def test_connection_refused_is_connection_lost_without_the_query() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RestClient(base_url=f"http://127.0.0.1:{port}", api_key="k", api_secret="s")
    with client, pytest.raises(ConnectionLost) as info:
        client.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    text = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert "signature" not in text and "timestamp=" not in text
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_every_call_has_a_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the TCP handshake, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with RestClient(base_url=url, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionLost, match="timed out"):
                client.server_time()
            assert time.monotonic() - started < 3.0


# ------------------------------------------------------------------- hygiene


def test_no_secret_token_or_listen_key_in_logs_or_reprs(
    sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = login(sandbox)
    secret = api_secret(sandbox)
    seen: List[str] = []
    with caplog.at_level(logging.DEBUG):
        with hmac_client(sandbox) as h:
            seen.append(repr(h))
            keys = [h.create_listen_key()]
            h.renew_listen_key(keys[0])
            sandbox.fail_next_rest(5002, http_status=503, message="busy")
            h.renew_listen_key(keys[0])
            sandbox.set_clock_skew(-25_000)
            h.request("POST", "/v1/private/order/place", body=ORDER)
            h.close_listen_key(keys[0])
            try:
                h.renew_listen_key(keys[0])
            except ApiError as exc:
                seen.append(str(exc))
        with RestClient(base_url=sandbox.rest_url, token=token) as t:
            seen.append(repr(t))
            keys.append(t.create_listen_key())
            t.close_listen_key(keys[1])
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("sixmm")]
    everything = seen + [r.getMessage() for r in caplog.records]
    assert any("REST PUT /v1/private/user/listen-key" in line for line in ours)
    for line in everything:  # urllib3's own DEBUG lines included
        assert secret not in line and token not in line
        for key in keys:
            assert key not in line and key[:8] not in line
    for line in seen + ours:  # sixmm never shows a signature (urllib3 DEBUG logs the path)
        assert "signature=" not in line


def test_server_messages_echoing_a_key_are_scrubbed(sandbox: Any, rest: RestClient) -> None:
    key = rest.create_listen_key()
    sandbox.fail_next_rest(2002, message=f"listenKey {key} does not exist")
    with pytest.raises(ApiError) as info:
        rest.renew_listen_key(key)
    assert key not in str(info.value) and key[:8] not in info.value.message
    assert "does not exist" in info.value.message
