"""The pure WebSocket framing layer: bytes in at any split, frames out; every limit inside."""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sixmm.protocol import framing
from sixmm.protocol.framing import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    FrameError,
    apply_mask,
    close_payload,
    encode_frame,
    parse_close,
)

from .rawws import frame

Item = Tuple[int, bytes]


def naive_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def feed_split(data: bytes, cuts: List[int], **opts: int) -> List[Item]:
    """Feed ``data`` cut at ``cuts`` and drain the decoder after every piece."""
    dec = FrameDecoder(**opts)  # type: ignore[arg-type]
    out: List[Item] = []
    last = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
        dec.feed(data[last:cut])
        last = cut
        while True:
            item = dec.next_frame()
            if item is None:
                break
            out.append(item)
    assert dec.buffered == 0
    return out


def decode_all(data: bytes, **opts: int) -> List[Item]:
    return feed_split(data, [], **opts)


def error_of(data: bytes, **opts: int) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_all(data, **opts)
    return info.value


# -- hypothesis: messages survive every split -------------------------------------------

text_payloads = st.text(max_size=300).map(lambda s: s.encode("utf-8"))
binary_payloads = st.binary(max_size=70_000 // 50)


@st.composite
def streams(draw: st.DrawFn) -> Tuple[bytes, List[Item]]:
    """Server frames for a few messages (some fragmented, pings between fragments, some
    masked, lengths of every class) and the items a decoder must produce."""
    wire = b""
    expected: List[Item] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong", "big"]))
        mask = draw(st.one_of(st.none(), st.binary(min_size=4, max_size=4)))
        if kind in ("ping", "pong"):
            payload = draw(st.binary(max_size=125))
            op = OP_PING if kind == "ping" else OP_PONG
            wire += frame(payload, opcode=op, mask=mask)
            expected.append((op, payload))
            continue
        if kind == "big":
            payload = draw(st.sampled_from([b"a" * 126, b"b" * 65535, b"c" * 65536, b"d" * 70_000]))
            op = OP_BINARY
        elif kind == "text":
            payload, op = draw(text_payloads), OP_TEXT
        else:
            payload, op = draw(binary_payloads), OP_BINARY
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
        for i, part in enumerate(parts):
            fin = i == len(parts) - 1
            wire += frame(part, opcode=op if i == 0 else OP_CONT, fin=fin, mask=mask)
            if not fin and draw(st.booleans()):
                ping = draw(st.binary(max_size=20))
                wire += frame(ping, opcode=OP_PING)
                expected.append((OP_PING, ping))
        expected.append((op, payload))
    return wire, expected


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(0, 200_000), max_size=30))
def test_any_split_gives_the_same_frames(stream: Tuple[bytes, List[Item]], cuts: List[int]) -> None:
    wire, expected = stream
    assert feed_split(wire, cuts) == expected


@settings(max_examples=100, deadline=None)
@given(streams())
def test_byte_at_a_time_gives_the_same_frames(stream: Tuple[bytes, List[Item]]) -> None:
    wire, expected = stream
    if len(wire) > 5000:
        wire, expected = (
            frame(b"x" * 300) + frame(b"", opcode=OP_PONG),
            [
                (OP_TEXT, b"x" * 300),
                (OP_PONG, b""),
            ],
        )
    assert feed_split(wire, list(range(len(wire)))) == expected


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_mask_matches_the_per_byte_definition(data: bytes, key: bytes) -> None:
    assert apply_mask(data, key) == naive_mask(data, key)
    assert apply_mask(apply_mask(data, key), key) == data


@given(
    st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE]),
    st.binary(max_size=70_000),
    st.booleans(),
)
def test_client_frames_are_masked_and_decode_back(op: int, payload: bytes, fin: bool) -> None:
    if op >= 8:
        payload, fin = payload[:125], True
    if op == OP_CLOSE:
        payload = close_payload(1000, "bye")
    if op == OP_TEXT:
        payload = payload.decode("utf-8", "replace").encode("utf-8")
    data = encode_frame(op, payload, fin=fin)
    assert data[1] & 0x80, "client frames must be masked"
    dec = FrameDecoder()
    dec.feed(data)
    if fin:
        assert dec.next_frame() == (op, payload)
    else:
        assert dec.next_frame() is None  # a fragment: the message is not complete yet
        dec.feed(frame(b"", opcode=OP_CONT))
        assert dec.next_frame() == (op, payload)


# -- the rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, code, words",
    [
        (bytes([0x80 | 0x40 | OP_TEXT, 1]) + b"x", 1002, "reserved bits"),
        (bytes([0x80 | 0x10 | OP_BINARY, 0]), 1002, "reserved bits"),
        (frame(b"p" * 126, opcode=OP_PING), 1002, "over 125"),
        (frame(b"p", opcode=OP_PING, fin=False), 1002, "fragmented control"),
        (frame(b"a", fin=False) + frame(b"b"), 1002, "inside a fragmented"),
        (frame(b"a", fin=False) + frame(b"b", opcode=OP_BINARY), 1002, "inside a fragmented"),
        (frame(b"a", opcode=OP_CONT), 1002, "continuation frame without"),
        (frame(b"a", opcode=3), 1002, "unknown websocket opcode"),
        (frame(b"a", opcode=0xB), 1002, "unknown websocket opcode"),
        (bytes([0x82, 127]) + struct.pack("!Q", 1 << 63), 1002, "top bit"),
        (frame(b"\xff\xfe"), 1007, "UTF-8"),
        (frame(b"\xce\xba\xe1\xbd", fin=False) + frame(b"\xff", opcode=OP_CONT), 1007, "UTF-8"),
        (frame(b"\xce", fin=False) + frame(b"", opcode=OP_CONT), 1007, "UTF-8"),  # truncated
        (frame(b"\x03", opcode=OP_CLOSE), 1002, "1-byte"),
        (frame(struct.pack("!H", 1000) + b"\xff", opcode=OP_CLOSE), 1007, "UTF-8"),
        (frame(b"x" * 2000), 1009, "exceeds"),
        (frame(b"a" * 600, fin=False) + frame(b"b" * 600, opcode=OP_CONT), 1009, "exceeds"),
    ],
)
def test_violations_fail_with_their_close_code(data: bytes, code: int, words: str) -> None:
    err = error_of(data, max_frame_bytes=1000)
    assert err.code == code
    assert words in str(err)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000])
def test_invalid_close_codes_are_protocol_errors(code: int) -> None:
    assert error_of(frame(struct.pack("!H", code), opcode=OP_CLOSE)).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_codes_pass(code: int) -> None:
    payload = struct.pack("!H", code) + "ok ✓".encode()
    assert decode_all(frame(payload, opcode=OP_CLOSE)) == [(OP_CLOSE, payload)]
    assert parse_close(payload) == (code, "ok ✓")


def test_empty_close_means_no_status() -> None:
    assert parse_close(b"") == (1005, "")


def test_close_payload_fits_the_control_limit() -> None:
    payload = close_payload(1000, "é" * 200)
    assert len(payload) <= 125
    assert parse_close(payload)[1] == "é" * 61


def test_control_frames_between_fragments_are_delivered_in_order() -> None:
    data = (
        frame(b'{"a":', fin=False)
        + frame(b"1", opcode=OP_PING)
        + frame(b"1", opcode=OP_CONT, fin=False)
        + frame(b"", opcode=OP_PONG)
        + frame(b"}", opcode=OP_CONT)
    )
    assert decode_all(data) == [(OP_PING, b"1"), (OP_PONG, b""), (OP_TEXT, b'{"a":1}')]


def test_invalid_utf8_fails_on_the_fragment_that_carries_it() -> None:
    dec = FrameDecoder()
    dec.feed(frame("κόσμε".encode(), fin=False))
    assert dec.next_frame() is None
    dec.feed(frame(b"\xed\xa0\x80", opcode=OP_CONT, fin=False))  # a surrogate: never UTF-8
    with pytest.raises(FrameError) as info:
        dec.next_frame()
    assert info.value.code == 1007


def test_invalid_utf8_fails_before_its_frame_is_complete() -> None:
    dec = FrameDecoder()
    data = frame(b"ok" + b"\xf8" + b"z" * 100)
    dec.feed(data[:5])  # header + "ok" + the bad byte; 100 bytes still to come
    with pytest.raises(FrameError) as info:
        dec.next_frame()
    assert info.value.code == 1007


def test_a_multibyte_character_split_across_fragments_is_fine() -> None:
    word = "€uro".encode()
    data = frame(word[:1], fin=False) + frame(word[1:2], opcode=OP_CONT, fin=False)
    data += frame(word[2:], opcode=OP_CONT)
    assert feed_split(data, list(range(len(data)))) == [(OP_TEXT, word)]


def test_the_decoder_stays_failed() -> None:
    dec = FrameDecoder()
    dec.feed(frame(b"a", opcode=OP_CONT) + frame(b"fine"))
    for _ in range(2):
        with pytest.raises(FrameError, match="continuation"):
            dec.next_frame()


def test_fragment_cap() -> None:
    head = frame(b"", fin=False)
    flood = frame(b"", opcode=OP_CONT, fin=False) * 10
    err = error_of(head + flood, max_fragments=5)
    assert err.code == 1009 and "more than 5 fragments" in str(err)
    # exactly at the cap is fine
    ok = head + frame(b"", opcode=OP_CONT, fin=False) * 3 + frame(b"x", opcode=OP_CONT)
    assert decode_all(ok, max_fragments=5) == [(OP_TEXT, b"x")]


def test_100_kib_of_empty_fragments_is_refused_by_the_default_cap() -> None:
    flood = frame(b"", fin=False) + frame(b"", opcode=OP_CONT, fin=False) * 51_200
    dec = FrameDecoder()
    dec.feed(flood)
    with pytest.raises(FrameError, match="fragments"):
        dec.next_frame()
    # refused at the cap: the rest of the flood was never walked
    assert dec.buffered > len(flood) - 3 * framing.DEFAULT_MAX_FRAGMENTS


def test_many_fragments_keep_a_running_total() -> None:
    # 60,000 one-byte fragments reassemble (a generous cap); each fragment costs O(1)
    n = 60_000
    data = frame(b"a", opcode=OP_BINARY, fin=False)
    data += frame(b"a", opcode=OP_CONT, fin=False) * (n - 2) + frame(b"a", opcode=OP_CONT)
    assert decode_all(data, max_fragments=n) == [(OP_BINARY, b"a" * n)]


def test_limit_is_checked_from_the_header_before_the_payload_arrives() -> None:
    dec = FrameDecoder(1000)
    dec.feed(bytes([0x82, 127]) + struct.pack("!Q", 2**40))  # no payload at all
    with pytest.raises(FrameError, match="exceeds"):
        dec.next_frame()


def test_a_header_is_parsed_once_while_its_payload_trickles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = FrameDecoder._parse_header

    def counting(self: FrameDecoder) -> Optional[Tuple[bool, int, int, int, bytes]]:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(FrameDecoder, "_parse_header", counting)
    data = frame(b"z" * 300, opcode=OP_BINARY)
    dec = FrameDecoder()
    dec.feed(data[:4])  # the whole 16-bit-length header
    for i in range(4, len(data)):
        assert dec.next_frame() is None
        dec.feed(data[i : i + 1])
    assert dec.next_frame() == (OP_BINARY, b"z" * 300)
    assert len(calls) == 1


def test_masked_server_frames_are_refused_when_strict() -> None:
    data = frame(b"hi", mask=b"abcd")
    assert decode_all(data) == [(OP_TEXT, b"hi")]
    assert error_of(data, accept_masked=False).code == 1002


# -- the C fast path gives what the pure decoder gives -------------------------------------

needs_c_frames = pytest.mark.skipif(
    framing._c_text_frame is None, reason="the _wirefast C extension is not built"
)

Outcome = Tuple[List[Item], Optional[Tuple[int, str]], int]


def outcome_of(data: bytes, cuts: List[int], c_path: bool, **opts: int) -> Outcome:
    """The items, the error (code, message) if any, and the bytes left buffered, when ``data``
    is fed cut at ``cuts`` with or without the C fast path."""
    saved = framing._c_text_frame
    if not c_path:
        framing._c_text_frame = None
    try:
        dec = FrameDecoder(**opts)  # type: ignore[arg-type]
        out: List[Item] = []
        last = 0
        try:
            for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
                dec.feed(data[last:cut])
                last = cut
                while True:
                    item = dec.next_frame()
                    if item is None:
                        break
                    out.append(item)
        except FrameError as exc:
            return out, (exc.code, str(exc)), dec.buffered
        return out, None, dec.buffered
    finally:
        framing._c_text_frame = saved


ascii_text = st.text(st.characters(max_codepoint=127), max_size=400).map(str.encode)


@st.composite
def mixed_streams(draw: st.DrawFn) -> bytes:
    """Mostly plain text frames (the fast path's case, at every length class and around
    the limits), mixed with streams() and a few flipped bytes."""
    wire = b""
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["plain", "plain", "long", "utf8", "stream"]))
        if kind == "plain":
            wire += frame(draw(ascii_text))
        elif kind == "long":
            wire += frame(b"q" * draw(st.sampled_from([125, 126, 127, 300, 65535, 65536])))
        elif kind == "utf8":
            wire += frame(draw(text_payloads))
        else:
            wire += draw(streams())[0]
    if wire and draw(st.booleans()):
        raw = bytearray(wire)
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        wire = bytes(raw)
    return wire


@needs_c_frames
@settings(max_examples=300, deadline=None)
# a 16-bit length under 126 (non-minimal, accepted): the header is 4 bytes, not 2
@example(wire=b"\x81\x03000\x81\x7e\x00\x00\x81\x00", cuts=[], max_frame=70_000)
@given(
    mixed_streams(),
    st.lists(st.integers(0, 140_000), max_size=20),
    st.sampled_from([70_000, 300, 126, 125, 10]),
)
def test_the_c_fast_path_gives_what_the_python_one_gives(
    wire: bytes, cuts: List[int], max_frame: int
) -> None:
    python = outcome_of(wire, cuts, False, max_frame_bytes=max_frame)
    assert outcome_of(wire, cuts, True, max_frame_bytes=max_frame) == python


@needs_c_frames
def test_the_c_fast_path_takes_only_plain_text_frames() -> None:
    take = framing._c_text_frame
    assert take is not None
    body = b"x" * 300
    buf = bytearray(b"??" + frame(b"hello") + frame(body))
    assert take(buf, 2, 1000) == b"hello"
    assert take(buf, 2 + 7, 1000) == body
    assert take(buf, 2 + 7, 299) is None  # over the limit: the pure path raises 1009
    assert take(bytearray(frame(body)[:-1]), 0, 1000) is None  # not whole yet
    assert take(bytearray(frame(b"h\xc3\xa9")), 0, 1000) is None  # not ASCII
    assert take(bytearray(frame(b"hi", mask=b"abcd")), 0, 1000) is None  # masked
    assert take(bytearray(frame(b"hi", fin=False)), 0, 1000) is None  # a fragment
    assert take(bytearray(frame(b"hi", opcode=OP_BINARY)), 0, 1000) is None
    assert take(bytearray(frame(b"q" * 70_000)), 0, 100_000) is None  # 64-bit length
    assert take(bytearray(b"\xc1\x02hi"), 0, 1000) is None  # RSV1 set
    assert take(bytearray(b"\x81"), 0, 1000) is None
    assert take(bytearray(b"\x81\x02hi"), 5, 1000) is None  # past the end
    # a non-minimal 16-bit length: the pure path takes it (its header is 4 bytes, not 2)
    assert take(bytearray(b"\x81\x7e\x00\x02hi"), 0, 1000) is None
    assert outcome_of(b"\x81\x7e\x00\x02hi\x81\x00", [], True) == (
        [(OP_TEXT, b"hi"), (OP_TEXT, b"")],
        None,
        0,
    )
    with pytest.raises(TypeError):
        take(b"\x81\x02hi", 0, 1000)  # type: ignore[arg-type]


# -- purity ------------------------------------------------------------------------------

FORBIDDEN = {
    "socket",
    "ssl",
    "select",
    "selectors",
    "threading",
    "queue",
    "websocket",
    "requests",
    "urllib3",
    "aiohttp",
}


def test_the_protocol_package_does_no_io() -> None:
    root = Path(framing.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
