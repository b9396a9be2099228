"""A thin seam over websocket-client: its handshake, TLS and send path; our own frame reader.

websocket-client's ``recv()`` issues three socket reads per frame and, by default, validates
UTF-8 in pure Python. This transport lets websocket-client open the connection (handshake,
proxies, TLS verification) and then reads frames itself from the socket with a read-ahead
buffer: one ``recv`` system call serves as many frames as have arrived. Text payloads are
returned as ``bytes``; the JSON parser validates UTF-8 anyway.

Thread-safety: one thread reads (``recv``); ``send_text``, ``ping`` and ``abort`` may be called
from any thread.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import websocket

from .config import DEFAULT_MAX_FRAME_BYTES
from .errors import ConnectionLost, HandshakeRejected, ProtocolError, parse_retry_after

__all__ = ["ConnectionClosed", "FrameTimeout", "Transport", "check_url"]

logger = logging.getLogger(__name__)

_OP_CONT = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_READ_SIZE = 65536
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class ConnectionClosed(ConnectionLost):
    """The peer closed the connection (close frame, EOF or reset)."""


class FrameTimeout(Exception):
    """No complete frame within the socket timeout (not an error: the caller loops)."""


def check_url(url: str, *, allow_insecure: bool = False) -> str:
    """Validate a WebSocket URL: ``wss://`` anywhere, ``ws://`` only to loopback hosts
    unless ``allow_insecure``. Returns the URL; raises ``ValueError`` with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (need ws:// or wss://): {parts.scheme or url!r}")
    if not parts.hostname:
        raise ValueError(f"WebSocket URL has no host: {url!r}")
    if parts.scheme == "ws" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ValueError(
            f"refusing plain ws:// to non-loopback host {parts.hostname!r}; "
            "use wss:// or pass allow_insecure=True"
        )
    return url


_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"]*")


def _redact_query(text: str, url: str) -> str:
    """``text`` without the URL's query values (a listenKey or token), wherever they appear:
    a server or proxy may echo the request line or a redirect target into the error."""
    for _name, value in parse_qsl(urlsplit(url).query):
        if len(value) >= 4:
            text = text.replace(value, "…")
    return _QUERY_IN_TEXT.sub("?…", text)


def _header(headers: Optional[Mapping[str, str]], name: str = "retry-after") -> Optional[str]:
    """A response header by case-insensitive name (``None`` when absent)."""
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Transport:
    """One open WebSocket. Create with :meth:`connect`."""

    __slots__ = ("_buf", "_closed", "_max_frame", "_pos", "_sock", "_ws", "bytes_in", "pongs")

    def __init__(self, ws: Any, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._ws = ws
        self._sock: socket.socket = ws.sock
        self._buf = bytearray()
        self._pos = 0
        self._max_frame = max_frame_bytes
        self._closed = False
        self.bytes_in = 0
        self.pongs = 0

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float = 10.0,
        ca_certs: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> Transport:
        """Open ``url`` (handshake bounded by ``timeout``); TLS certificates are verified."""
        sslopt: Dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED}
        if ca_certs:
            sslopt["ca_certs"] = ca_certs
        header: List[str] = [f"{k}: {v}" for k, v in (headers or {}).items()]
        failure = ""
        rejected: Optional[HandshakeRejected] = None
        try:
            ws = websocket.create_connection(
                url,
                timeout=timeout,
                skip_utf8_validation=True,
                enable_multithread=True,
                sslopt=sslopt,
                header=header,
                sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            )
        except websocket.WebSocketBadStatusException as exc:
            failure = f"handshake refused: HTTP {exc.status_code}"
            rejected = HandshakeRejected(  # status + Retry-After for sixmm.ratelimit
                failure, exc.status_code, parse_retry_after(_header(exc.resp_headers))
            )
        except Exception as exc:  # OSError, WebSocketException, and whatever else a version
            # of websocket-client lets out (1.9.0 raises ValueError on a garbage status line)
            failure = f"connect failed: {type(exc).__name__}: {_redact_query(str(exc), url)}"
        if rejected is not None:
            raise rejected
        if failure:
            # raised outside the except block: the original error (whose text or traceback
            # may carry the URL's listenKey/token) is not even kept as __context__
            raise ConnectionLost(failure)
        return cls(ws, max_frame_bytes)

    def settimeout(self, timeout: Optional[float]) -> None:
        """Bound each blocking read; :meth:`recv` raises :class:`FrameTimeout` when it expires."""
        self._sock.settimeout(timeout)

    # -- reading ------------------------------------------------------------------------

    def _fill(self, need: int) -> None:
        """Make sure at least ``need`` unread bytes are buffered."""
        buf = self._buf
        if self._pos and self._pos >= len(buf) // 2:
            del buf[: self._pos]
            self._pos = 0
        while len(buf) - self._pos < need:
            try:
                chunk = self._sock.recv(_READ_SIZE)
            except socket.timeout:
                raise FrameTimeout() from None
            except ssl.SSLError as exc:
                if "timed out" in str(exc):
                    raise FrameTimeout() from None
                raise ConnectionClosed(f"TLS error: {exc}") from None
            except OSError as exc:
                raise ConnectionClosed(f"socket error: {exc}") from None
            if not chunk:
                raise ConnectionClosed("connection closed by peer (EOF)")
            self.bytes_in += len(chunk)
            buf += chunk

    def _read_frame(self) -> Tuple[bool, int, bytes]:
        """Return ``(fin, opcode, payload)`` of the next frame. Resumable after FrameTimeout."""
        self._fill(2)
        buf, pos = self._buf, self._pos
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        header = 2
        if length == 126:
            self._fill(4)
            buf, pos = self._buf, self._pos
            length = _U16.unpack_from(buf, pos + 2)[0]
            header = 4
        elif length == 127:
            self._fill(10)
            buf, pos = self._buf, self._pos
            length = _U64.unpack_from(buf, pos + 2)[0]
            header = 10
        masked = b1 & 0x80
        if masked:
            header += 4
        if length > self._max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_frame}")
        self._fill(header + length)
        buf, pos = self._buf, self._pos
        start = pos + header
        payload = bytes(buf[start : start + length])
        if masked:  # servers must not mask, but unmasking is cheap to support
            key = buf[start - 4 : start]
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        self._pos = start + length
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self) -> Tuple[int, bytes]:
        """Block for the next data message: ``(opcode, payload)`` with opcode 1 (text) or 2.

        Answers pings, counts pongs, reassembles fragments. Raises :class:`FrameTimeout` when
        the socket timeout expires, :class:`ConnectionClosed` when the peer goes away, and
        :class:`~sixmm.errors.ProtocolError` for an oversized or invalid frame.
        """
        # Fast path: a whole unfragmented, unmasked text frame with a 7- or 16-bit length is
        # already buffered (the common case): slice it out without the general machinery.
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= 4 and buf[pos] == 0x81:
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:  # 64-bit length or a masked frame
                start = 0
            end = start + length
            if start and end <= len(buf) and length <= self._max_frame:
                self._pos = end
                return _OP_TEXT, bytes(buf[start:end])
        fragments: Optional[List[bytes]] = None
        frag_opcode = 0
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode in (_OP_TEXT, _OP_BINARY):
                if fin:
                    return opcode, payload
                fragments, frag_opcode = [payload], opcode
            elif opcode == _OP_CONT:
                if fragments is None:
                    raise ProtocolError("continuation frame without a start frame")
                fragments.append(payload)
                if sum(map(len, fragments)) > self._max_frame:
                    raise ProtocolError("fragmented message exceeds the frame size limit")
                if fin:
                    return frag_opcode, b"".join(fragments)
            elif opcode == _OP_PING:
                self._send_control(payload, _OP_PONG)
            elif opcode == _OP_PONG:
                self.pongs += 1
            elif opcode == _OP_CLOSE:
                code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                self._send_control(payload[:2], _OP_CLOSE)
                raise ConnectionClosed(f"closed by server: {code} {reason}".rstrip())
            else:
                raise ProtocolError(f"unknown websocket opcode {opcode}")

    # -- writing ------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send one text message (thread-safe)."""
        try:
            self._ws.send(text)
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionClosed(f"send failed: {exc}") from None

    def ping(self, payload: bytes = b"") -> None:
        """Send a websocket-protocol ping (thread-safe)."""
        self._send_control(payload, _OP_PING)

    def _send_control(self, payload: bytes, opcode: int) -> None:
        try:
            self._ws.send(payload, opcode)
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionClosed(f"send failed: {exc}") from None

    # -- closing ------------------------------------------------------------------------

    def abort(self) -> None:
        """Wake a blocked :meth:`recv` from another thread; the reader then sees EOF."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, timeout: float = 1.0) -> None:
        """Send a close frame (best effort, bounded) and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.settimeout(timeout)
            self._ws.send(struct.pack("!H", 1000), websocket.ABNF.OPCODE_CLOSE)
        except Exception:
            pass
        try:
            self._ws.shutdown()
        except Exception:
            pass
