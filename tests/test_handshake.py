"""The pure opening handshake: the request we build, the answers we accept or refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixmm.protocol import redact
from sixmm.protocol.handshake import (
    HandshakeError,
    accept_for,
    build_request,
    head_end,
    parse_response,
    target,
)

URL = "wss://stream.6mm.example/ws?listenKey=LK-1234567890"


def ok_head(key: str, extra: str = "") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
        f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept_for(key)}\r\n"
        f"{extra}\r\n"
    ).encode()


def test_rfc_6455_sample_accept() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_request_names_host_resource_and_version() -> None:
    req = build_request(URL, "a2V5", {"User-Agent": "sixmm"}).decode()
    lines = req.split("\r\n")
    assert lines[0] == "GET /ws?listenKey=LK-1234567890 HTTP/1.1"
    assert "Host: stream.6mm.example" in lines
    assert "Sec-WebSocket-Version: 13" in lines and "User-Agent: sixmm" in lines
    assert req.endswith("\r\n\r\n")
    assert "Host: 127.0.0.1:8765" in build_request("ws://127.0.0.1:8765/ws", "k").decode()
    assert "Host: [::1]:9" in build_request("ws://[::1]:9/", "k").decode()


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        build_request(URL, "k", {"X": "a\r\nEvil: 1"})


def test_target() -> None:
    assert target("wss://h/x") == (True, "h", 443, "/x")
    assert target("ws://h:81") == (False, "h", 81, "/")


def test_a_proper_101_is_accepted_case_insensitively() -> None:
    parse_response(ok_head("k"), "k", URL)


@pytest.mark.parametrize(
    "head, words",
    [
        (ok_head("other"), "Sec-WebSocket-Accept"),
        (ok_head("k").replace(b"Upgrade: WebSocket", b"Upgrade: h2c"), "Upgrade: websocket"),
        (ok_head("k", "Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extension"),
        (ok_head("k", "Sec-WebSocket-Protocol: chat\r\n"), "subprotocol"),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", "HTTP 404 Not Found"),
        (b"HTTP/1.1 301 Moved\r\nLocation: ws://plain.example/ws\r\n\r\n", "redirects are refused"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
    ],
)
def test_bad_answers_are_refused(head: bytes, words: str) -> None:
    with pytest.raises(HandshakeError, match=words):
        parse_response(head, "k", URL)


def test_refusals_quote_the_server_scrubbed() -> None:
    redact.remember("TOKEN-ABCDEF-99")
    try:
        head = (
            b"HTTP/1.1 302 Found\r\nLocation: https://portal.example/login?next=/ws"
            b"?listenKey=LK-1234567890&t=TOKEN-ABCDEF-99\r\nRetry-After: 3\r\n\r\n"
        )
        with pytest.raises(HandshakeError) as info:
            parse_response(head, "k", URL, b"")
        body_head = b"HTTP/1.1 401 TOKEN-ABCDEF-99\r\n\r\n"
        with pytest.raises(HandshakeError) as info2:
            parse_response(body_head, "k", URL, b"bad token=TOKEN-ABCDEF-99 for LK-1234567890")
    finally:
        redact.forget("TOKEN-ABCDEF-99")
    for err in (info.value, info2.value):
        text = str(err) + repr(err.headers)
        assert "TOKEN-ABCDEF-99" not in text and "LK-1234567890" not in text, text
    assert "portal.example" in str(info.value)
    assert info.value.retry_after == 3.0 and info.value.status == 302


@given(st.binary(max_size=400), st.binary(max_size=100))
def test_any_answer_is_accepted_or_refused_with_a_handshake_error(head: bytes, body: bytes) -> None:
    try:
        parse_response(head, "k", URL, body)
    except HandshakeError as exc:
        assert "LK-1234567890" not in str(exc)


def test_head_end() -> None:
    assert head_end(b"HTTP/1.1 101 x\r\n") == -1
    assert head_end(b"A\r\n\r\nrest") == 5
