"""WebSocket framing (RFC 6455), client side, as pure code: bytes in, frames out.

:class:`FrameDecoder` is fed whatever the socket produced (any split: half a header, many
frames at once) and hands back complete items with :meth:`FrameDecoder.next_frame`: a data
message (fragments already reassembled) or a control frame, as ``(opcode, payload)``. Every
limit is enforced inside it, as soon as the header that breaks it is parsed (before the payload
is buffered): frame size, message size and number of fragments per message (running totals,
never re-summed), RSV bits (no extension is negotiated), unknown opcodes, control frames over
125 bytes or fragmented, a continuation with no message started, a new data message inside a
fragmented one, close codes and close reasons. Control frames may arrive between fragments.
A violation raises :class:`FrameError` carrying the close code to fail the connection with
(1002 protocol error, 1007 invalid UTF-8, 1009 too big); the decoder is then dead.

Text payloads stay ``bytes`` (the JSON parser wants bytes) but are UTF-8-validated here:
``bytes.isascii()`` (C, word at a time) settles the common all-ASCII frame, anything else is
decoded once; a fragmented text message goes through an incremental decoder so that invalid
UTF-8 fails on the fragment that carries it, not at the end.

The common frame (whole, final, unmasked, ASCII text, 7- or 16-bit length) takes one call
into the optional C extension ``_wirefast`` when it is built; the pure path is the reference
it is tested against.

Each header is parsed once (a partial frame keeps its parsed header while the payload trickles
in); unmasking is one big-integer XOR, not a per-byte loop. The encoder side builds the masked
frames a client must send.

Pure: no sockets, threads or clocks (``os.urandom`` for mask keys only).
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import Callable, Optional, Tuple

from sixmm.errors import ProtocolError
from sixmm.protocol._speedups import load as load_extension

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "DEFAULT_MAX_FRAGMENTS",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "FrameError",
    "apply_mask",
    "close_payload",
    "encode_frame",
    "parse_close",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_NO_STATUS = 1005  # never sent: "the close frame had no code"

#: fragments per message; no exchange fragments market data, a flood of tiny fragments is an
#: attack on the reader (each costs a Python-level step even with running totals)
DEFAULT_MAX_FRAGMENTS = 1024
_DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_MAX_CONTROL = 125

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_Header = Tuple[bool, int, int, int, bytes]  # fin, opcode, payload length, header length, mask
_Utf8Decoder = Callable[[bytes, bool], str]

_wirefast = load_extension("_wirefast")
#: the fast path in C (``_wirefast.text_frame``), None without the extension
_c_text_frame = getattr(_wirefast, "text_frame", None)


class FrameError(ProtocolError):
    """The peer broke the WebSocket protocol; fail the connection with :attr:`code`."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def apply_mask(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    n = len(data)
    if not n:
        return b""
    keys = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask_key: Optional[bytes] = None
) -> bytes:
    """One client frame: masked (as RFC 6455 requires of clients) with ``mask_key`` or a fresh
    random key."""
    key = mask_key if mask_key is not None else os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((b0, 0x80 | 127)) + _U64.pack(n)
    return head + key + apply_mask(payload, key)


def close_payload(code: Optional[int] = CLOSE_NORMAL, reason: str = "") -> bytes:
    """The payload of a close frame (``code=None``: an empty close)."""
    if code is None:
        return b""
    raw = reason.encode("utf-8")
    # truncate to fit the 125-byte control limit (on a character boundary)
    while len(raw) > _MAX_CONTROL - 2:
        reason = reason[:-1]
        raw = reason.encode("utf-8")
    return _U16.pack(code) + raw


def _valid_close_code(code: int) -> bool:
    # 1000-1003 and 1007-1014 are defined for the wire; 1004-1006 and 1015 are reserved or
    # local-only; 3000-4999 belong to libraries and applications
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close(payload: bytes) -> Tuple[int, str]:
    """``(code, reason)`` of a close payload (1005 when empty); raises :class:`FrameError`
    (1002 for a bad length or code, 1007 for a reason that is not UTF-8)."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError("close frame with a 1-byte payload")
    if len(payload) > _MAX_CONTROL:
        raise FrameError(f"close frame of {len(payload)} bytes (the limit is 125)")
    code = _U16.unpack_from(payload)[0]
    if not _valid_close_code(code):
        raise FrameError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("close reason is not valid UTF-8", CLOSE_INVALID_DATA) from None
    return code, reason


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("text message is not valid UTF-8", CLOSE_INVALID_DATA) from None


class FrameDecoder:
    """Incremental decoder of server frames. :meth:`feed` bytes, then call :meth:`next_frame`
    until it returns ``None`` (it needs more bytes).

    ``max_frame_bytes`` bounds one frame and one reassembled message; ``max_fragments`` the
    frames of one message. ``accept_masked`` tolerates masked server frames (RFC 6455 says a
    client must fail on them; unmasking them is harmless, and kept for lenient peers).

    Thread-safety: none; one reader thread owns a decoder.
    """

    __slots__ = (
        "_accept_masked",
        "_buf",
        "_failed",
        "_frag_count",
        "_frag_op",
        "_frag_parts",
        "_frag_total",
        "_head",
        "_max_fragments",
        "_max_frame",
        "_peeked",
        "_pos",
        "_utf8",
    )

    def __init__(
        self,
        max_frame_bytes: int = _DEFAULT_MAX_FRAME,
        *,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        accept_masked: bool = True,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_frame = max_frame_bytes
        self._max_fragments = max_fragments
        self._accept_masked = accept_masked
        self._head: Optional[_Header] = None
        self._frag_op = 0  # opcode of the fragmented message in progress (0: none)
        self._frag_parts = bytearray()
        self._frag_total = 0
        self._frag_count = 0
        self._utf8: Optional[_Utf8Decoder] = None
        self._peeked = 0  # payload bytes of the pending text frame already validated
        self._failed: Optional[FrameError] = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes read from the socket."""
        buf = self._buf
        pos = self._pos
        if pos:
            if pos >= len(buf):
                buf.clear()
                self._pos = 0
            elif pos >= len(buf) >> 1:
                del buf[:pos]
                self._pos = 0
        buf += data

    def next_frame(self) -> Optional[Tuple[int, bytes]]:
        """The next complete data message or control frame as ``(opcode, payload)``, or
        ``None`` when more bytes are needed. Raises :class:`FrameError`."""
        # Fast path: a whole unfragmented text frame with a 7- or 16-bit length, unmasked, no
        # RSV bits, no message in progress (the common case): slice it out. In C when built
        # (one call: header, bounds and the ASCII check), else the same test in Python.
        buf = self._buf
        pos = self._pos
        if self._head is None and not self._frag_op:
            if _c_text_frame is not None:
                payload = _c_text_frame(buf, pos, self._max_frame)
                if payload is not None:
                    n = len(payload)
                    self._pos = pos + n + (2 if n < 126 else 4)
                    return OP_TEXT, payload
            elif len(buf) - pos >= 2 and buf[pos] == 0x81:
                n = buf[pos + 1]
                start = 0
                if n < 126:
                    start = pos + 2
                elif n == 126 and len(buf) - pos >= 4:
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                    start = pos + 4
                if start and start + n <= len(buf) and n <= self._max_frame:
                    end = start + n
                    payload = bytes(buf[start:end])
                    if payload.isascii():  # else: validated (and failed) on the general path
                        self._pos = end
                        return OP_TEXT, payload
        return self._next_slow()

    # -- the general path -----------------------------------------------------------------

    def _fail(self, error: FrameError) -> FrameError:
        self._failed = error
        return error

    def _parse_header(self) -> Optional[_Header]:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        if b0 & 0x70:
            raise FrameError("reserved bits set (no extension was negotiated)")
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        if opcode >= 8:
            if opcode > OP_PONG:
                raise FrameError(f"unknown websocket opcode {opcode}")
            if not fin:
                raise FrameError("fragmented control frame")
            if length > _MAX_CONTROL:
                raise FrameError("control frame over 125 bytes")
        elif opcode == OP_CONT:
            if not self._frag_op:
                raise FrameError("continuation frame without a start frame")
        elif opcode <= OP_BINARY:
            if self._frag_op:
                raise FrameError("new data message inside a fragmented one")
        else:
            raise FrameError(f"unknown websocket opcode {opcode}")
        hlen = 2
        if length == 126:
            if avail < 4:
                return None
            length = _U16.unpack_from(buf, pos + 2)[0]
            hlen = 4
        elif length == 127:
            if avail < 10:
                return None
            length = _U64.unpack_from(buf, pos + 2)[0]
            if length >> 63:
                raise FrameError("64-bit frame length with the top bit set")
            hlen = 10
        mask = b""
        if b1 & 0x80:
            if not self._accept_masked:
                raise FrameError("masked frame from the server")
            if avail < hlen + 4:
                return None
            mask = bytes(buf[pos + hlen : pos + hlen + 4])
            hlen += 4
        if length > self._max_frame:
            raise FrameError(
                f"frame of {length} bytes exceeds the limit of {self._max_frame}", CLOSE_TOO_BIG
            )
        if opcode == OP_CONT:
            if self._frag_total + length > self._max_frame:
                raise FrameError(
                    f"fragmented message exceeds the frame size limit of {self._max_frame}",
                    CLOSE_TOO_BIG,
                )
            if self._frag_count >= self._max_fragments:
                raise FrameError(
                    f"fragmented message of more than {self._max_fragments} fragments",
                    CLOSE_TOO_BIG,
                )
        return fin, opcode, length, hlen, mask

    def _next_slow(self) -> Optional[Tuple[int, bytes]]:
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_general()
        except FrameError as exc:
            raise self._fail(exc) from None

    def _next_general(self) -> Optional[Tuple[int, bytes]]:
        buf = self._buf
        while True:
            head = self._head
            if head is None:
                head = self._parse_header()
                if head is None:
                    return None
                self._head = head
            fin, opcode, length, hlen, mask = head
            start = self._pos + hlen
            end = start + length
            if len(buf) < end:
                if opcode == OP_TEXT or (opcode == OP_CONT and self._frag_op == OP_TEXT):
                    self._peek_text(mask, start, len(buf) - start)
                return None
            payload = bytes(buf[start:end])
            self._pos = end
            self._head = None
            peeked = self._peeked
            self._peeked = 0
            if mask:
                payload = apply_mask(payload, mask)
            if opcode >= 8:
                if opcode == OP_CLOSE:
                    parse_close(payload)
                return opcode, payload
            if opcode != OP_CONT:  # a new message
                if fin:
                    if opcode == OP_TEXT:
                        if peeked:
                            self._text_part(payload[peeked:], True)
                            self._utf8 = None
                        elif not payload.isascii():
                            _check_utf8(payload)
                    return opcode, payload
                self._frag_op = opcode
                self._frag_parts = bytearray(payload)
                self._frag_total = length
                self._frag_count = 1
                if opcode == OP_TEXT:
                    if not peeked:
                        self._utf8 = codecs.getincrementaldecoder("utf-8")().decode
                    self._text_part(payload[peeked:], False)
                continue
            self._frag_parts += payload
            self._frag_total += length
            self._frag_count += 1
            if self._utf8 is not None:
                self._text_part(payload[peeked:] if peeked else payload, fin)
            if fin:
                message = bytes(self._frag_parts)
                op = self._frag_op
                self._frag_op = 0
                self._frag_parts = bytearray()
                self._frag_total = 0
                self._frag_count = 0
                self._utf8 = None
                return op, message

    def _peek_text(self, mask: bytes, start: int, have: int) -> None:
        """Validate the UTF-8 of a text frame's payload received so far (fail fast: a frame
        whose first bytes are not UTF-8 fails before its last byte arrives)."""
        done = self._peeked
        if have <= done:
            return
        chunk = bytes(self._buf[start + done : start + have])
        if mask:
            turn = done & 3
            chunk = apply_mask(chunk, mask[turn:] + mask[:turn])
        if self._utf8 is None:
            self._utf8 = codecs.getincrementaldecoder("utf-8")().decode
        self._text_part(chunk, False)
        self._peeked = have

    def _text_part(self, payload: bytes, final: bool) -> None:
        decode = self._utf8
        assert decode is not None
        try:
            decode(payload, final)
        except UnicodeDecodeError:
            raise FrameError("text message is not valid UTF-8", CLOSE_INVALID_DATA) from None
