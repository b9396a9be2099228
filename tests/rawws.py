"""A scripted raw WebSocket server for transport tests: real handshake, hand-made frames."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
from typing import Callable, List, Optional, Tuple

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: Optional[bytes] = None) -> bytes:
    """One WebSocket frame as a server would write it (optionally masked, which is illegal
    from a server but tolerated by sixmm)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def read_client_frame(conn: socket.socket) -> Tuple[int, bytes]:
    """Read one (masked) client frame: ``(opcode, payload)``."""

    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    key = exact(4) if b1 & 0x80 else b"\0\0\0\0"
    data = exact(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


class RawServer:
    """Accepts one connection, completes the handshake, then runs ``script(conn)``."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self._script = script
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self._sock.settimeout(10)
        self.port = self._sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.errors: List[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="rawws-server", daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(10)
        self._sock.close()

    def _run(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        with conn:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            try:
                self._script(conn)
            except BaseException as exc:  # surfaced by the test
                self.errors.append(exc)
