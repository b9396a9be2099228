"""Security: TLS verified by default (and a CA bundle option), plain ws:// only to loopback,
no secret in any exception text, REST rate limits honoured without a retry storm."""

from __future__ import annotations

import logging
import select
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from sixmm import (
    ApiError,
    AuthError,
    Backoff,
    ConnectionLost,
    RestClient,
    StreamManager,
    StreamState,
)
from sixmm.sandbox import Sandbox

from .helpers import Recorder, refused_port, wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 1.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}
LISTEN_KEY_PATH = "/v1/private/user/listen-key"

# --------------------------------------------------------------------------- TLS


def _make_cert(directory: Path, name: str, san: str) -> Tuple[str, str]:
    """A self-signed certificate for ``san`` made with the openssl CLI: (cert, key) paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    result = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=sixmm-test"),
            *("-addext", f"subjectAltName={san}"),
        ],
        capture_output=True,
        timeout=60,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {result.stderr[-300:]!r}")
    return str(cert), str(key)


class TlsProxy:
    """TLS on 127.0.0.1 in front of a plain TCP port (the sandbox): one thread per client."""

    def __init__(self, target_port: int, cert: str, key: str) -> None:
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop_event = threading.Event()
        self.threads: List[threading.Thread] = []
        self.handshake_failures = 0

    def __enter__(self) -> TlsProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in list(self.threads):
            t.join(5)
        self.listener.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name="tls-proxy", daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            self._spawn(self._pump, client)

    def _pump(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        tls: Optional[ssl.SSLSocket] = None
        try:
            client.settimeout(5)
            try:
                tls = self.context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshake_failures += 1
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            while not self.stop_event.is_set():
                ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], 0.1)[0]
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is tls else tls).sendall(data)
        except (ssl.SSLError, OSError):
            return
        finally:
            for s in (tls, upstream, client):
                if s is not None:
                    s.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[str, str]]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "good": _make_cert(directory, "good", "IP:127.0.0.1,DNS:localhost"),
        "other-host": _make_cert(directory, "other", "DNS:exchange.example"),
    }


@pytest.fixture
def tls_sandbox(sandbox: Sandbox, certs: Dict[str, Tuple[str, str]]) -> Iterator[TlsProxy]:
    with TlsProxy(sandbox.port, *certs["good"]) as proxy:
        yield proxy


def test_wss_with_ca_bundle_streams(
    sandbox: Sandbox, tls_sandbox: TlsProxy, certs: Dict[str, Tuple[str, str]]
) -> None:
    trades = Recorder()
    url = f"wss://127.0.0.1:{tls_sandbox.port}/ws"
    with StreamManager(url, ca_certs=certs["good"][0], **FAST) as streams:
        assert streams.trades("BTCUSDT", trades).wait_ready(5)
        book = streams.order_book("ETHUSDT")
        assert book.wait_synced(5)
        wait_until(lambda: len(trades) >= 3)
    assert tls_sandbox.handshake_failures == 0


def test_wss_without_the_ca_fails_verification_and_retries(tls_sandbox: TlsProxy) -> None:
    states, trades = Recorder(), Recorder()
    url = f"wss://127.0.0.1:{tls_sandbox.port}/ws"
    with StreamManager(url, on_state=states, **FAST) as streams:
        streams.trades("BTCUSDT", trades)
        wait_until(lambda: streams.stats()["connections"]["public-0"]["failed_attempts"] >= 2)
    reasons = [s.reason for s in states.snapshot() if s.state is StreamState.SUSPENDED]
    assert any("CERTIFICATE_VERIFY_FAILED" in r or "certificate" in r.lower() for r in reasons), (
        reasons
    )
    assert len(trades) == 0
    # the proxy thread counts a failed handshake when it sees the client's alert or close,
    # which may be after the client has already moved on
    wait_until(lambda: tls_sandbox.handshake_failures >= 1, timeout=5)


def test_wss_with_a_certificate_for_another_host_is_refused(
    sandbox: Sandbox, certs: Dict[str, Tuple[str, str]]
) -> None:
    states = Recorder()
    cert, key = certs["other-host"]
    with TlsProxy(sandbox.port, cert, key) as proxy:
        url = f"wss://127.0.0.1:{proxy.port}/ws"
        with StreamManager(url, ca_certs=cert, on_state=states, **FAST) as streams:
            streams.trades("BTCUSDT", lambda t: None)
            # >= 2: an attempt is counted before its state event goes out, and a stop in
            # between would drop that event; the second attempt starts after the first's
            wait_until(lambda: streams.stats()["connections"]["public-0"]["failed_attempts"] >= 2)
            assert streams.stats()["connections"]["public-0"]["connects"] == 0
    reasons = " ".join(s.reason for s in states.snapshot())
    assert "match" in reasons.lower() or "hostname" in reasons.lower(), reasons


# --------------------------------------------------------------------------- plain ws://


@pytest.mark.parametrize(
    "url",
    [
        "ws://10.0.0.1/ws",
        "ws://example.com/ws",
        "ws://127.0.0.1.example.com/ws",
        "ws://localhost.example.com/ws",
        "ws://0.0.0.0/ws",
        "ws://[2001:db8::1]/ws",
    ],
)
def test_plain_ws_to_other_hosts_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="allow_insecure"):
        StreamManager(url)
    StreamManager(url, allow_insecure=True)  # explicit opt-in


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8765/ws",
        "ws://127.0.0.2/ws",
        "ws://localhost:1/ws",
        "ws://[::1]:8765/ws",
        "wss://6mm.com/ws",
    ],
)
def test_loopback_and_wss_are_allowed(url: str) -> None:
    StreamManager(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1/ws", "ftp://x/ws", "ws:///ws", "", "6mm.com"])
def test_non_websocket_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        StreamManager(url)


# --------------------------------------------------------------------------- secrets


def _all_text(exc: BaseException) -> str:
    """Everything an exception chain shows: str, repr and args of each link (source lines of
    the traceback are left out: they quote the test's own literals)."""
    texts: List[str] = []
    seen: List[BaseException] = []
    link: Optional[BaseException] = exc
    while link is not None and link not in seen:
        seen.append(link)
        texts += [str(link), repr(link), repr(link.args)]
        texts += traceback.format_exception_only(type(link), link)
        # what tracebacks, logging and error trackers show: the cause, else the unsuppressed
        # context (``raise ... from None`` hides it)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return "\n".join(texts)


def _signatures(sb: Sandbox) -> List[str]:
    out = []
    for call in sb.rest_calls:
        for part in str(call.get("query") or "").split("&"):
            if part.startswith("signature="):
                out.append(part.split("=", 1)[1])
    return out


def test_auth_and_api_errors_carry_no_secret(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sixmm")
    secret = "s3cr3t-VALUE-that-must-not-leak"
    bad = RestClient(api_key=sandbox.api_key, api_secret=secret, base_url=sandbox.rest_url)
    with bad, pytest.raises(AuthError) as auth:
        bad.create_listen_key()
    good = RestClient(
        api_key=sandbox.api_key, api_secret=sandbox.api_secret, base_url=sandbox.rest_url
    )
    stolen = "listen-KEY-that-must-not-leak-0123456789"
    with good, pytest.raises(ApiError) as api:
        good.renew_listen_key(stolen)
    token = "tok-SECRET-that-must-not-leak"
    with RestClient(token=token, base_url=sandbox.rest_url) as tok, pytest.raises(AuthError) as ta:
        tok.create_listen_key()
    texts = [_all_text(auth.value), _all_text(api.value), _all_text(ta.value)]
    texts += [r.getMessage() for r in caplog.records]
    blob = "\n".join(texts)
    for needle in [secret, stolen, token, sandbox.api_secret, *_signatures(sandbox)]:
        assert needle not in blob, needle


def test_network_errors_carry_no_signature_or_secret() -> None:
    secret = "s3cr3t-network-value"
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    rest = RestClient(
        api_key="key-123",
        api_secret=secret,
        base_url=f"http://127.0.0.1:{port}",
        max_retries=0,
    )
    with rest, pytest.raises(ConnectionLost) as info:
        rest.renew_listen_key("listen-key-network-0001")
    text = _all_text(info.value)
    assert secret not in text
    assert "listen-key-network-0001" not in text
    assert "signature=" not in text and "timestamp=" not in text


def test_private_stream_failures_never_show_the_listen_key(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The listenKey travels in the WS URL: no connect error, state reason or log may echo it."""
    caplog.set_level(logging.DEBUG, logger="sixmm")
    states, errors = Recorder(), Recorder()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    rest = RestClient(
        api_key=sandbox.api_key, api_secret=sandbox.api_secret, base_url=sandbox.rest_url
    )
    url = f"ws://127.0.0.1:{port}/ws"  # the REST side works, the WS side refuses
    with rest, StreamManager(url, rest=rest, on_state=states, on_error=errors, **FAST) as streams:
        streams.user(on_event=lambda e: None)
        wait_until(lambda: streams.stats()["connections"]["user"]["failed_attempts"] >= 2)
        keys = list(sandbox.listen_keys)
        texts = [repr(streams), repr(streams.stats())]
    assert keys
    texts += [s.reason for s in states.snapshot()]
    texts += [_all_text(e) for e in errors.snapshot()]
    texts += [r.getMessage() for r in caplog.records]
    blob = "\n".join(texts)
    for key in keys:
        assert key not in blob


# --------------------------------------------------------------------------- rate limits


def test_rate_limited_rest_is_retried_a_bounded_number_of_times(sandbox: Sandbox) -> None:
    rest = RestClient(
        api_key=sandbox.api_key,
        api_secret=sandbox.api_secret,
        base_url=sandbox.rest_url,
        retry_backoff=Backoff(initial=0.01, maximum=0.05),
        max_retries=3,
    )
    with rest:
        key = rest.create_listen_key()
        before = len(sandbox.rest_calls)
        sandbox.fail_next_rest(5003, http_status=429, count=50, message="rate limited")
        with pytest.raises(ApiError) as info:
            rest.renew_listen_key(key)
        calls = len(sandbox.rest_calls) - before
        assert info.value.code == 5003 and info.value.http_status == 429
        assert calls == 4  # the first try + max_retries, not a storm
        before = len(sandbox.rest_calls)
        with pytest.raises(ApiError):
            rest.create_listen_key()  # POST is never retried
        assert len(sandbox.rest_calls) - before == 1


def test_rate_limited_renewals_back_off_and_the_stream_lives(sandbox: Sandbox) -> None:
    events = Recorder()
    rest = RestClient(
        api_key=sandbox.api_key,
        api_secret=sandbox.api_secret,
        base_url=sandbox.rest_url,
        retry_backoff=Backoff(initial=0.05, maximum=0.1),
        max_retries=1,
    )
    with (
        rest,
        StreamManager(sandbox.ws_url, rest=rest, listen_key_renew_interval=0.1, **FAST) as streams,
    ):
        assert streams.user(on_event=events).wait_ready(5)
        sandbox.fail_next_rest(
            5003, http_status=429, count=10_000, message="rate limited", path=LISTEN_KEY_PATH
        )
        start = len(sandbox.rest_calls)
        wait_until(
            lambda: streams.stats()["connections"]["user"]["listen_key"]["renew_failures"] >= 2,
            timeout=10,
        )
        threading.Event().wait(2.0)  # a window to count calls in
        calls = len(sandbox.rest_calls) - start
        sandbox.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(events) >= 1)  # the private stream is still alive
        assert streams.stats()["connections"]["user"]["authenticated"]
    # renewing every 0.1 s with 2 attempts each would be ~40 calls in 2 s: backoff keeps it low
    assert calls <= 12, calls


class EchoingHttpServer:
    """A server that answers every handshake with garbage quoting the request path (as a
    broken proxy or captive portal might): the path carries the listenKey."""

    RESPONSES = (
        "garbage {path}\r\n\r\n",
        "HTTP/1.1 301 Moved\r\nLocation: http://elsewhere{path}\r\n\r\n",
        "HTTP/1.1 403 {path}\r\nContent-Length: 0\r\n\r\n",
    )

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.served = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="echo-http", daemon=True)

    def __enter__(self) -> EchoingHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.listener.close()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(2)
                    request = conn.recv(65536).decode("latin-1")
                    path = request.split(" ")[1] if " " in request else "/"
                    template = self.RESPONSES[self.served % len(self.RESPONSES)]
                    conn.sendall(template.format(path=path).encode("latin-1"))
                except OSError:
                    pass
            self.served += 1


def test_handshake_errors_quoting_the_url_do_not_leak_the_listen_key(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sixmm")
    states, errors = Recorder(), Recorder()
    rest = RestClient(
        api_key=sandbox.api_key, api_secret=sandbox.api_secret, base_url=sandbox.rest_url
    )
    with EchoingHttpServer() as echo:
        url = f"ws://127.0.0.1:{echo.port}/ws"
        with (
            rest,
            StreamManager(url, rest=rest, on_state=states, on_error=errors, **FAST) as streams,
        ):
            streams.user(on_event=lambda e: None)
            wait_until(lambda: echo.served >= 4)
            keys = list(sandbox.listen_keys)
    assert keys
    texts = [s.reason for s in states.snapshot()]
    texts += [_all_text(e) for e in errors.snapshot()]
    texts += [r.getMessage() for r in caplog.records]
    blob = "\n".join(texts)
    # the echoing responses were seen and reported (the wording depends on websocket-client's
    # version: "Invalid status line ..." or a ValueError quoting the status line)
    assert "connect failed: " in blob and "?…" in blob
    for key in keys:
        assert key not in blob


def test_connection_errors_keep_no_original_exception_that_could_carry_secrets() -> None:
    from sixmm import ConnectionLost, RestClient
    from sixmm.transport import Transport

    with refused_port() as port:
        with pytest.raises(ConnectionLost) as info:
            Transport.connect(f"ws://127.0.0.1:{port}/ws?listenKey=SECRETKEY", timeout=2)
        assert info.value.__context__ is None and info.value.__cause__ is None
        assert "SECRETKEY" not in str(info.value)
        url = f"http://127.0.0.1:{port}"
        rest = RestClient(api_key="k", api_secret="s", base_url=url, timeout=2)
        with rest, pytest.raises(ConnectionLost) as info2:
            rest.request("GET", "/v1/private/order/current", params={"symbol": "BTCUSDT"})
    assert info2.value.__context__ is None and info2.value.__cause__ is None
    assert "signature" not in str(info2.value)
