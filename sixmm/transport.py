"""The socket under one WebSocket: it moves bytes, the pure layers decide what they mean.

:meth:`Transport.open` does the TCP connect, TLS (``ssl.create_default_context``: certificate
and hostname verified, ``ca_certs`` to trust a private CA) and the HTTP upgrade itself, all of
it within ONE deadline (``timeout`` bounds the whole handshake, so a server trickling its
``101`` cannot stretch it), and :meth:`Transport.abort` interrupts it from another thread in
any phase (connecting, TLS, upgrade, reading). What to send and how to judge the answer is
:mod:`sixmm.protocol.handshake` (pure; redirects are refused, server texts scrubbed); frames
are :mod:`sixmm.protocol.framing` (pure; every limit and validity rule). This module only
reads the socket into the decoder and writes what the encoder made.

websocket-client is no longer used here: its handshake could not be given an overall deadline
nor be aborted from another thread, and it followed redirects. It stays a runtime dependency
(``bench/`` measures against its bare loop as the baseline). An HTTP(S) proxy from the
environment (``https_proxy`` for ``wss://``, ``http_proxy`` for ``ws://``, ``no_proxy``
honoured, never for loopback hosts) is used through an HTTP ``CONNECT`` tunnel, as
websocket-client did.

Text payloads are returned as ``bytes`` (the JSON parser wants bytes), UTF-8-validated by the
decoder: ``bytes.isascii()`` for the common ASCII frame, a full decode otherwise.

Thread-safety: one thread reads (``open``, ``fill``, ``recv``); ``send_text``, ``ping``,
``abort`` and ``close`` may be called from any thread.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

from .config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME_BYTES
from .errors import ConnectionLost
from .protocol import handshake
from .protocol.framing import (
    CLOSE_NORMAL,
    DEFAULT_MAX_FRAGMENTS,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    FrameError,
    close_payload,
    encode_frame,
    parse_close,
)
from .protocol.redact import scrub

__all__ = ["ConnectionClosed", "FrameTimeout", "Transport", "check_url"]

logger = logging.getLogger(__name__)

_READ_SIZE = 65536


class ConnectionClosed(ConnectionLost):
    """The peer closed the connection (close frame, EOF or reset)."""


class FrameTimeout(Exception):
    """No bytes within the socket timeout (not an error: the caller loops)."""


def check_url(url: str, *, allow_insecure: bool = False) -> str:
    """Validate a WebSocket URL: ``wss://`` anywhere, ``ws://`` only to loopback hosts
    unless ``allow_insecure``. Returns the URL; raises ``ValueError`` with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (need ws:// or wss://): {parts.scheme or url!r}")
    if not parts.hostname:
        raise ValueError(f"WebSocket URL has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"WebSocket URL has a bad port: {url!r}") from None
    if parts.scheme == "ws" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ValueError(
            f"refusing plain ws:// to non-loopback host {parts.hostname!r}; "
            "use wss:// or pass allow_insecure=True"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy_for(secure: bool, host: str) -> Optional[str]:
    """The proxy URL the environment names for this host, if any."""
    if _is_loopback(host):
        return None
    proxies = getproxies_environment()
    proxy = proxies.get("https" if secure else "http") or (proxies.get("http") if secure else None)
    if not proxy or proxy_bypass_environment(host):
        return None
    return proxy


class _Aborted(Exception):
    pass


class Transport:
    """One WebSocket. :meth:`connect` (or construct, then :meth:`open`), then read with
    :meth:`fill` + ``decoder.next_frame()`` (the hot loop) or :meth:`recv`."""

    __slots__ = (
        "_aborted",
        "_ca_certs",
        "_close_sent",
        "_closed",
        "_fail_code",
        "_headers",
        "_lock",
        "_send_lock",
        "_sock",
        "_timeout",
        "bytes_in",
        "decoder",
        "phase",
        "pongs",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ca_certs: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._ca_certs = ca_certs
        self._headers = dict(headers or {})
        self.decoder = FrameDecoder(max_frame_bytes, max_fragments=max_fragments)
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()  # guards _sock / _aborted against abort()
        self._send_lock = threading.Lock()
        self._aborted = False
        self._closed = False
        self._close_sent = False
        self._fail_code = CLOSE_NORMAL
        self.bytes_in = 0
        self.pongs = 0
        #: "new", "tcp", "tls", "proxy", "upgrade", "open"
        self.phase = "new"

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ca_certs: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
    ) -> Transport:
        """Open ``url`` (the whole handshake bounded by ``timeout``); TLS is verified."""
        transport = cls(
            url,
            timeout=timeout,
            ca_certs=ca_certs,
            headers=headers,
            max_frame_bytes=max_frame_bytes,
            max_fragments=max_fragments,
        )
        transport.open()
        return transport

    # -- opening --------------------------------------------------------------------------

    def open(self) -> None:
        """TCP + TLS + upgrade within ``timeout`` seconds in all. Raises
        :class:`~sixmm.errors.ConnectionLost` (:class:`~sixmm.protocol.handshake.HandshakeError`
        when the server answered but refused), its text scrubbed and no original exception
        kept (its text or traceback may carry the URL's listenKey/token)."""
        url = self.url
        failure: Optional[ConnectionLost] = None
        try:
            self._open(time.monotonic() + self._timeout)
        except ConnectionLost as exc:  # HandshakeError, or the server hung up mid-upgrade
            failure = exc
        except _Aborted:
            failure = ConnectionLost(f"connect aborted (during {self.phase})")
        except (socket.timeout, TimeoutError):
            failure = ConnectionLost(
                f"handshake not completed within {self._timeout:g}s (during {self.phase})"
            )
        except ssl.SSLError as exc:
            text = handshake.redact_query(str(exc), url)
            failure = ConnectionLost(f"TLS: {text}")
        except Exception as exc:  # OSError, ValueError from a bad URL, ...
            if self._aborted:
                failure = ConnectionLost(f"connect aborted (during {self.phase})")
            else:
                text = handshake.redact_query(str(exc), url)
                failure = ConnectionLost(f"{type(exc).__name__}: {text}")
        if failure is not None:
            self._drop()
            raise failure  # outside the except blocks: no __context__ kept

    def _remaining(self, deadline: float) -> float:
        if self._aborted:
            raise _Aborted()
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        return left

    def _open(self, deadline: float) -> None:
        secure, host, port, _resource = handshake.target(self.url)
        proxy = _proxy_for(secure, host)
        if proxy:
            parts = urlsplit(proxy)
            via_host, via_port = parts.hostname or "", parts.port or 8080
        else:
            via_host, via_port = host, port
        self.phase = "tcp"
        sock = self._tcp(via_host, via_port, deadline)
        if proxy:
            self.phase = "proxy"
            self._tunnel(sock, host, port, proxy, deadline)
        if secure:
            self.phase = "tls"
            sock = self._tls(sock, host, deadline)
        self.phase = "upgrade"
        self._upgrade(sock, deadline)
        sock.settimeout(None)
        self.phase = "open"

    def _adopt(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self._aborted:
                raise _Aborted()

    def _tcp(self, host: str, port: int, deadline: float) -> socket.socket:
        self._remaining(deadline)
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        error: Optional[OSError] = None
        for family, kind, proto, _name, addr in infos:
            sock = socket.socket(family, kind, proto)
            self._adopt(sock)
            try:
                sock.settimeout(self._remaining(deadline))
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                if self._aborted:
                    raise _Aborted() from None
                if isinstance(exc, socket.timeout):
                    raise
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise error or OSError(f"no address for {host}")

    def _tunnel(
        self, sock: socket.socket, host: str, port: int, proxy: str, deadline: float
    ) -> None:
        parts = urlsplit(proxy)
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if parts.username:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(creds.encode()).decode())
        self._send_all(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), deadline)
        head, _rest = self._read_head(sock, deadline)
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or fields[1] != "200":
            raise handshake.HandshakeError(
                f"proxy refused the tunnel: {scrub(status_line[:200])!r}",
                int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None,
            )

    def _tls(self, raw: socket.socket, host: str, deadline: float) -> socket.socket:
        context = ssl.create_default_context(cafile=self._ca_certs)
        sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
        self._adopt(sock)
        sock.setblocking(False)
        with selectors.DefaultSelector() as sel:
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    events = selectors.EVENT_READ
                except ssl.SSLWantWriteError:
                    events = selectors.EVENT_WRITE
                sel.register(sock, events)
                try:
                    ready = sel.select(self._remaining(deadline))
                finally:
                    sel.unregister(sock)
                if not ready:
                    self._remaining(deadline)  # raises once the deadline has passed
        sock.setblocking(True)
        return sock

    def _send_all(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            sock.settimeout(self._remaining(deadline))
            sent = sock.send(view)
            view = view[sent:]

    def _read_head(self, sock: socket.socket, deadline: float) -> Tuple[bytes, bytes]:
        """An HTTP response head and what came after it, each read bounded by the deadline."""
        buf = b""
        while True:
            end = handshake.head_end(buf)
            if end >= 0:
                return buf[:end], buf[end:]
            if len(buf) > handshake.MAX_RESPONSE_HEAD:
                raise handshake.HandshakeError(
                    f"handshake failed: response head over {handshake.MAX_RESPONSE_HEAD} bytes"
                )
            sock.settimeout(self._remaining(deadline))
            chunk = sock.recv(8192)
            if not chunk:
                if self._aborted:
                    raise _Aborted()
                raise ConnectionLost(f"connection closed by the server during the {self.phase}")
            buf += chunk

    def _upgrade(self, sock: socket.socket, deadline: float) -> None:
        key = handshake.make_key()
        self._send_all(sock, handshake.build_request(self.url, key, self._headers), deadline)
        head, rest = self._read_head(sock, deadline)
        handshake.parse_response(head, key, self.url, rest[:512])
        if rest:
            self.bytes_in += len(rest)
            self.decoder.feed(rest)

    # -- reading --------------------------------------------------------------------------

    def settimeout(self, timeout: Optional[float]) -> None:
        """Bound each blocking read; :meth:`fill` raises :class:`FrameTimeout` when it expires."""
        sock = self._sock
        if sock is not None:
            sock.settimeout(timeout)

    def fill(self) -> None:
        """One socket read into the decoder (blocks up to the socket timeout)."""
        sock = self._sock
        if sock is None:
            raise ConnectionClosed("not connected")
        try:
            chunk = sock.recv(_READ_SIZE)
        except socket.timeout:
            raise FrameTimeout() from None
        except ssl.SSLError as exc:
            if "timed out" in str(exc):
                raise FrameTimeout() from None
            raise ConnectionClosed(f"TLS error: {scrub(str(exc))}") from None
        except OSError as exc:
            raise ConnectionClosed(f"socket error: {exc}") from None
        if not chunk:
            raise ConnectionClosed("connection closed by peer (EOF)")
        self.bytes_in += len(chunk)
        self.decoder.feed(chunk)

    def control(self, opcode: int, payload: bytes) -> None:
        """Act on a control frame from the decoder: answer a ping, count a pong, answer a
        close and raise :class:`ConnectionClosed` (its reason scrubbed)."""
        if opcode == OP_PING:
            self._send(encode_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            self.pongs += 1
        elif opcode == OP_CLOSE:
            code, reason = parse_close(payload)  # the decoder validated it already
            try:
                self._send(encode_frame(OP_CLOSE, payload[:2]))
            except ConnectionClosed:
                pass
            self._close_sent = True
            raise ConnectionClosed(f"closed by server: {code} {scrub(reason)}".rstrip())

    def recv(self) -> Tuple[int, bytes]:
        """Block for the next data message: ``(opcode, payload)`` with opcode 1 (text) or 2.

        Answers pings, counts pongs. Raises :class:`FrameTimeout` when the socket timeout
        expires, :class:`ConnectionClosed` when the peer goes away, and
        :class:`~sixmm.protocol.framing.FrameError` (a ``ProtocolError``) for a frame that
        breaks the protocol (then :meth:`close` sends its close code).
        """
        next_frame = self.decoder.next_frame
        while True:
            try:
                item = next_frame()
            except FrameError as exc:
                self._fail_code = exc.code
                raise
            if item is None:
                self.fill()
                continue
            if item[0] <= 2:
                return item
            self.control(*item)

    # -- writing --------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionClosed("send failed: not connected")
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as exc:
            raise ConnectionClosed(f"send failed: {exc}") from None

    def send_text(self, text: str) -> None:
        """Send one text message (thread-safe)."""
        self._send(encode_frame(OP_TEXT, text.encode("utf-8")))

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Send one (masked) frame of any kind (thread-safe)."""
        self._send(encode_frame(opcode, payload, fin=fin))

    def ping(self, payload: bytes = b"") -> None:
        """Send a websocket-protocol ping (thread-safe)."""
        self._send(encode_frame(OP_PING, payload))

    # -- closing --------------------------------------------------------------------------

    def abort(self) -> None:
        """Interrupt the transport from another thread, in any phase: a pending connect, TLS
        handshake or upgrade fails at once, a blocked read sees EOF."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _drop(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            self._closed = True
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def close(self, code: Optional[int] = None, timeout: float = 1.0) -> None:
        """Send a close frame (``code``, or the one a protocol error called for; best effort,
        bounded) and close the socket. Idempotent."""
        if self._closed:
            return
        sock = self._sock
        if sock is not None and not self._close_sent and not self._aborted:
            self._close_sent = True
            try:
                sock.settimeout(timeout)
                self._send(encode_frame(OP_CLOSE, close_payload(code or self._fail_code)))
            except Exception:
                pass
        self._drop()
