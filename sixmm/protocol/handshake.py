"""The WebSocket opening handshake (RFC 6455 §4), client side, as pure code.

:func:`build_request` makes the HTTP/1.1 upgrade request; :func:`parse_response` judges the
server's answer head. Only ``101 Switching Protocols`` with the right ``Upgrade``,
``Connection`` and ``Sec-WebSocket-Accept`` opens the socket. Redirects are never followed:
a ``3xx`` is a failed attempt whose reason names the status and says that redirects are
refused (so a ``wss://`` URL can never be led to plain ``ws://`` or to a host the URL policy
refuses). Every text taken from the server (status line, headers, body, ``Location``) goes
through :func:`sixmm.protocol.redact.scrub` and :func:`redact_query` before it reaches an
exception.

Pure: no sockets, threads or clocks (``os.urandom`` for the key only).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from sixmm.errors import HandshakeRejected, parse_retry_after
from sixmm.protocol.redact import scrub

__all__ = [
    "MAX_RESPONSE_HEAD",
    "HandshakeError",
    "accept_for",
    "build_request",
    "head_end",
    "make_key",
    "parse_response",
    "redact_query",
    "target",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: the largest response head accepted (status line + headers)
MAX_RESPONSE_HEAD = 16 * 1024
_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"]*")
_MAX_QUOTED = 200  # longest piece of server text quoted in a reason


class HandshakeError(HandshakeRejected):
    """The server did not accept the upgrade. ``status`` is the HTTP status (``None`` when the
    answer was not HTTP); ``headers`` the answer's headers (lower-case names, scrubbed);
    ``retry_after`` the ``Retry-After`` seconds if the server gave a number."""

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        found = dict(headers or {})
        super().__init__(message, status, parse_retry_after(found.get("retry-after")))
        self.headers: Dict[str, str] = found


def redact_query(text: str, url: str) -> str:
    """``text`` without the URL's query values (a listenKey or token), wherever they appear
    (a server or proxy may echo the request line), and every ``?query`` cut; then scrubbed."""
    for _name, value in parse_qsl(urlsplit(url).query):
        if len(value) >= 4:
            text = text.replace(value, "…")
    return scrub(_QUERY_IN_TEXT.sub("?…", text))


def _quote(text: str, url: str) -> str:
    text = redact_query(" ".join(text.split()), url)
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"


def target(url: str) -> Tuple[bool, str, int, str]:
    """``(secure, host, port, resource)`` of a ``ws://`` / ``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {parts.scheme or url!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    if not host:
        raise ValueError("WebSocket URL has no host")
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, host, port, resource


def make_key() -> str:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def build_request(url: str, key: str, headers: Optional[Mapping[str, str]] = None) -> bytes:
    """The upgrade request for ``url`` (no extensions, no subprotocol offered)."""
    secure, host, port, resource = target(url)
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        host_header += f":{port}"
    lines = [
        f"GET {resource} HTTP/1.1",
        f"Host: {host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in (headers or {}).items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError("header names and values must not contain line breaks")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_end(buf: bytes) -> int:
    """Index just past the response head's blank line, or -1 if not there yet."""
    i = buf.find(b"\r\n\r\n")
    return -1 if i < 0 else i + 4


def parse_response(head: bytes, key: str, url: str, body: bytes = b"") -> None:
    """Accept a ``101`` answer to the request made with ``key``; raise :class:`HandshakeError`
    (its text scrubbed) for anything else. ``body``: whatever followed the head (quoted, cut
    short, in the reason of a refusal)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError(f"handshake failed: not an HTTP answer: {_quote(status_line, url)!r}")
    status = int(parts[1])
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(
                f"handshake failed: malformed header line {_quote(line, url)!r}", status
            )
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    safe = {name: _quote(value, url) for name, value in headers.items()}
    if 300 <= status < 400:
        location = safe.get("location", "")
        where = f" to {location}" if location else ""
        raise HandshakeError(
            f"handshake refused: HTTP {status} redirect{where}; redirects are refused "
            "(connect to the final wss:// URL directly)",
            status,
            safe,
        )
    if status != 101:
        reason = _quote(parts[2], url) if len(parts) > 2 else ""
        message = f"handshake refused: HTTP {status}"
        if reason:
            message += f" {reason}"
        snippet = _quote(body.decode("utf-8", "replace"), url) if body else ""
        if snippet:
            message += f": {snippet}"
        raise HandshakeError(message, status, safe)
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("handshake failed: 101 without 'Upgrade: websocket'", status, safe)
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "upgrade" not in tokens:
        raise HandshakeError("handshake failed: 101 without 'Connection: Upgrade'", status, safe)
    if headers.get("sec-websocket-accept", "") != accept_for(key):
        raise HandshakeError("handshake failed: wrong Sec-WebSocket-Accept", status, safe)
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("handshake failed: server chose an extension we did not offer")
    if headers.get("sec-websocket-protocol"):
        raise HandshakeError("handshake failed: server chose a subprotocol we did not offer")
