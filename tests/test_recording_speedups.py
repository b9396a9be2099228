"""The recording's C buffer (``_recfast.Lines``) writes exactly what the pure path writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import recording
from sixmm.errors import ProtocolError
from sixmm.protocol import redact
from sixmm.transport import ConnectionClosed

pytestmark = pytest.mark.skipif(not recording.SPEEDUPS, reason="_recfast not built")


def _lines(rec: recording.Recorder) -> Any:
    return recording._recfast.Lines(
        rec._epoch0_ms - rec._mono0 * 1000.0, rec._mono0, recording._CREDENTIAL_WORDS, 0
    )


def _check(rec: recording.Recorder, lines: Any, payload: bytes, conn: str, m: float) -> str:
    """Append one frame to the C buffer; take() must write exactly the pure path's line, or
    decline exactly the frames the pure path scrubs (or encodes as base64)."""
    lines.append(payload, conn, m)  # type: ignore[attr-defined]
    data, _end, frames, _starts, declined = lines.take(redact._secrets)  # type: ignore[attr-defined]
    assert frames == 1
    accepted = not declined
    count = frames - len(declined)
    if declined:
        assert declined == [(0, conn, payload, m)]
    py: List[str] = []
    rec._recv_lines_py([("recv", conn, payload, m, 0)], py)
    try:
        payload.decode("utf-8")
        plain = not rec._suspect(payload)
    except UnicodeDecodeError:
        plain = False
    assert accepted == plain, payload
    if accepted:
        assert count == 1 and data.decode("utf-8") == "".join(py)
    else:
        assert count == 0 and data == b""
    return "".join(py)


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60).map(
    lambda s: s.encode("utf-8")
)
words = st.sampled_from(["key", "Token", "SIGNATURE", "secret", "bEaReR", "ke", "tok"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(texts, st.binary(max_size=40)), min_size=1, max_size=8),
    st.sampled_from(["public-0", "public-1", "user", 'odd"name\\n\u00e9']),
)
def test_c_and_pure_agree(
    tmp_path_factory: pytest.TempPathFactory, payloads: List[bytes], conn: str
) -> None:
    rec = recording.Recorder(str(tmp_path_factory.mktemp("r") / "x.jsonl"))
    lines = _lines(rec)
    for i, payload in enumerate(payloads):
        line = _check(rec, lines, payload, conn, rec._mono0 + i * 0.001)
        ev = json.loads(line)
        assert ev["conn"] == conn
        if "text" in ev:
            assert ev["text"] == redact.scrub(payload.decode("utf-8"))
        else:
            assert "b64" in ev


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='"\\/\n\t\x01\x1faZ0 \u00e9\u20ac\U0001f600', max_size=90))
def test_escapes_across_the_sixteen_byte_windows(text: str) -> None:
    # quotes, backslashes, control characters and multi-byte characters at every offset of the
    # SSE2 windows (and in the scalar tail)
    rec = recording.Recorder("/dev/null")
    _check(rec, _lines(rec), text.encode("utf-8"), "public-0", rec._mono0)


@settings(max_examples=200, deadline=None)
@given(texts, words, texts)
def test_a_credential_word_anywhere_takes_the_scrubbing_path(
    before: bytes, word: str, after: bytes
) -> None:
    rec = recording.Recorder("/dev/null")
    payload = before + word.encode("ascii") + after
    _check(rec, _lines(rec), payload, "user", rec._mono0)


word_sets = st.lists(
    st.text(alphabet="abkstxyz", min_size=3, max_size=6), min_size=1, max_size=8, unique=True
)


@settings(max_examples=300, deadline=None)
@given(word_sets, st.binary(max_size=80), st.data())
def test_the_word_scan_finds_exactly_the_words_of_any_set(
    words: List[str], filler: bytes, data: Any
) -> None:
    # sets with at most four distinct first and second letters take the union scan, larger
    # ones the word-by-word one: both must find a word at any offset, in any case, and only then
    lines = recording._recfast.Lines(0.0, 0.0, tuple(w.encode("ascii") for w in words), 0)
    cut = data.draw(st.integers(0, len(filler)))
    word = data.draw(st.sampled_from(words)).encode("ascii")
    for payload in (filler, filler[:cut] + word.upper() + filler[cut:]):
        folded = bytes(c | 0x20 if 0x41 <= c <= 0x5A else c for c in payload)
        expected = any(w.encode("ascii") in folded for w in words)
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            expected = True  # declined as not UTF-8
        lines.append(payload, "c", 0.0)  # type: ignore[attr-defined]
        declined = lines.take(())[4]  # type: ignore[attr-defined]
        assert bool(declined) == expected, (words, payload)


def test_credentials_take_the_scrubbing_path(tmp_path: Path) -> None:
    redact.remember("s3cr3t-value-xyz")
    payloads = [
        b'{"listenKey":"abcdefgh1234"}',
        b'{"msg":"Bearer abcdefghijk"}',
        b'{"echo":"s3cr3t-value-xyz"}',
        b'{"TOKEN=zzzzzzzz"}',
        b'{"plain":"\\u0001\x01\n"}',
        b'{"tail":"..s3cr3t-value-xy"}',
    ]
    rec = recording.Recorder(str(tmp_path / "x.jsonl"))
    lines = _lines(rec)
    out = "".join(_check(rec, lines, p, "user", rec._mono0) for p in payloads)
    assert "abcdefgh1234" not in out and "s3cr3t-value-xyz" not in out and "zzzzzzzz" not in out
    assert "abcdefghijk" not in out
    redact.forget("s3cr3t-value-xyz")
    # a secret forgotten is a new tuple: the buffer sees the change on its next take
    lines.append(b'{"echo":"s3cr3t-value-xyz"}', "user", 1.0)
    assert lines.take(redact._secrets)[4] == []


def test_the_buffer_drops_and_counts_at_its_limit_and_keeps_offsets() -> None:
    lines = recording._recfast.Lines(0.0, 0.0, recording._CREDENTIAL_WORDS, 4096)
    frame = b'{"p":"' + b"x" * 100 + b'"}'
    for _ in range(100):
        lines.append(frame, "public-0", 1.0)
    assert 0 < lines.pending < 100 and lines.dropped == 100 - lines.pending
    data, end, count, starts, declined = lines.take(())
    assert declined == []
    assert count == data.count(b"\n") == lines.total == end  # offsets count frames
    # where each line starts, for the writer to place queued events between them
    begins = [0] + [i + 1 for i in range(len(data) - 1) if data[i : i + 1] == b"\n"]
    assert memoryview(starts).cast("q").tolist() == begins
    assert lines.pending == 0
    lines.append(frame, "public-0", 1.0)
    data2, end2, count2, _, _ = lines.take(())
    assert end2 == end + 1 and count2 == 1 and data2.count(b"\n") == 1
    lines.close()
    lines.append(frame, "public-0", 1.0)
    assert lines.take(())[2] == 0


def test_take_reports_the_offset_of_what_it_took_while_readers_append_meanwhile() -> None:
    # take() formats with the GIL released, so frames arrive during it: its end must be the
    # offset just past the frames it took (an event queued meanwhile goes after them), not
    # the buffer's total by the time it returns
    import threading

    lines = recording._recfast.Lines(0.0, 0.0, recording._CREDENTIAL_WORDS, 0)
    frame = b'{"topic":"market.trade.X","data":{"p":"' + b"1" * 150 + b'"}}'
    stop = threading.Event()

    def reader() -> None:
        for _ in range(300_000):
            if stop.is_set():
                return
            lines.append(frame, "public-0", 1.0)

    t = threading.Thread(target=reader)
    t.start()
    end_before, takes, took = 0, 0, 0
    try:
        while t.is_alive() or lines.pending:
            data, end, count, _starts, _declined = lines.take(())
            assert end == end_before + count and data.count(b"\n") == count
            end_before, takes, took = end, takes + 1, took + count
    finally:
        stop.set()
        t.join(30)
    assert took == lines.total and takes > 1


def test_a_recording_interleaves_buffered_lines_and_queued_events_in_order(
    tmp_path: Path,
) -> None:
    rec = recording.Recorder(str(tmp_path / "r.jsonl"))
    rec.start()
    rec.opened("public-0", "wss://x/ws")
    rec.received("public-0", b'{"n":1}')
    rec.sent("public-0", '{"op":"ping"}')
    rec.received("public-0", b'{"n":2,"apiKey":"zzzzzzzzzz"}')  # declined: queued, scrubbed
    rec.received("public-0", b'{"n":3}')
    rec.closed("public-0", "bye")
    rec.stop()
    events = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()[1:]]
    assert [e["ev"] for e in events] == ["open", "recv", "sent", "recv", "recv", "close"]
    assert [json.loads(e["text"]).get("n") for e in events if e["ev"] == "recv"] == [1, 2, 3]
    assert "zzzzzzzzzz" not in (tmp_path / "r.jsonl").read_text()
    assert rec.stats()["written"] == 6


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6))
def test_parse_recv_inverts_the_writer(payloads: List[bytes]) -> None:
    from sixmm.replay import _fast_recv, _recfast

    rec = recording.Recorder("/dev/null")
    run = [("recv", "public-0", p, rec._mono0 + i * 0.25, 0) for i, p in enumerate(payloads)]
    lines: List[str] = []
    rec._recv_lines_py(run, lines)
    for line, payload in zip("".join(lines).split("\n"), payloads):
        raw = (line + "\n").encode("utf-8")
        parsed = _recfast.parse_recv(raw)
        if redact.scrub(payload.decode("utf-8")) != payload.decode("utf-8"):
            continue  # scrubbed on the way in: not the original any more
        assert parsed is not None and parsed[3] == payload
        t, us, name, text = _fast_recv(line + "\n")  # type: ignore[misc]
        assert (t, us, name, text.encode("utf-8")) == parsed
        assert json.loads(line)["text"].encode("utf-8") == payload


def test_parse_recv_declines_other_lines() -> None:
    from sixmm.replay import _recfast

    for line in (
        b'{"t":1,"us":2,"conn":"user","ev":"sent","text":"x"}\n',
        b'{"us":2,"t":1,"conn":"user","ev":"recv","text":"x"}\n',
        b'{"t":1,"us":2,"conn":"u\\"x","ev":"recv","text":"x"}\n',
        b'{"t":1,"us":2,"conn":"user","ev":"recv","text":"x\\q"}\n',
        b'{"t":1,"us":2,"conn":"user","ev":"recv","text":"x"},"ev":"stop"}\n',
        b'{"t":1,"us":2,"conn":"user","ev":"recv","text":"\\ud800"}\n',
    ):
        assert _recfast.parse_recv(line) is None, line
    assert _recfast.parse_recv(b'{"t":-1,"us":2,"conn":"c","ev":"recv","text":"\\u00e9\\n"}\n') == (
        -1,
        2,
        "c",
        "\u00e9\n".encode("utf-8"),
    )


class _Conn:
    def __init__(self, open_now: bool = True, failed: Any = None) -> None:
        self._open_now = open_now
        self._failed = failed
        self.messages = 0
        self._bytes_closed = 0
        self.reported: List[BaseException] = []

    def _report(self, exc: BaseException) -> None:
        self.reported.append(exc)


class _Clock:
    _mono = 0.0
    _t_ms = 0


def _recv(conn: str, text: str, t: int = 5, us: int = 2_500_000) -> bytes:
    body = json.dumps({"t": t, "us": us, "conn": conn, "ev": "recv", "text": text})
    return body.replace(", ", ",").replace(": ", ":").encode() + b"\n"


class _Session:
    """What feed_recv calls: the engine's receive for a small frame (then apply when the engine
    has actions), on_message for a large one, as Connection._read_frames does."""

    def __init__(self, clock: _Clock, fed: List[Any]) -> None:
        self.clock, self.fed, self.actions, self.applied = clock, fed, [], []  # type: ignore[var-annotated]

    def receive(self, payload: bytes, now: float) -> None:
        assert now == self.clock._mono
        self.fed.append(("receive", payload, now, self.clock._t_ms))
        if payload == b'{"topic":"boom"}':
            raise ProtocolError("bad frame")
        if payload == b'{"topic":"bye"}':
            raise ConnectionClosed("closed")
        if b"act" in payload:
            self.actions.append(payload)

    def apply(self, conn: Any) -> None:
        self.applied.append((conn, self.actions[:]))
        self.actions.clear()

    def on_message(self, conn: Any, payload: bytes) -> None:
        self.fed.append(("on_message", len(payload), self.clock._mono, self.clock._t_ms))

    def handler(self, conn: Any) -> Any:
        return (conn, self.on_message, self.receive, self, self.apply)


def test_feed_recv_feeds_frames_and_stops_before_what_it_leaves_to_python() -> None:
    from sixmm.replay import _recfast

    fed: List[Any] = []
    a, closed, failed = _Conn(), _Conn(open_now=False), _Conn(failed=RuntimeError("x"))
    clock = _Clock()
    ses = _Session(clock, fed)
    handlers = {
        name: ses.handler(c) for name, c in [("a", a), ("closed", closed), ("failed", failed)]
    }
    big = '{"topic":"x","pad":"' + "y" * 20_000 + '"}'
    lines = [
        _recv("a", '{"topic":"x","n":1}', t=7, us=1_500_000),
        _recv("nobody", '{"topic":"x"}'),  # not registered: skipped, still counted
        _recv("closed", '{"topic":"x"}'),
        _recv("failed", '{"topic":"x"}'),
        _recv("a", '{"topic":"boom"}'),  # a protocol error is reported, not raised
        _recv("a", '{"topic":"bye"}'),  # a closed connection is not an error here
        _recv("a", '{"topic":"act"}', t=8, us=1_750_000),  # the engine has actions: applied
        _recv("a", big, t=9, us=2_000_000),  # a large frame: on_message (the collector paused)
        _recv("a", '{"id":"3","event":"subscribe"}'),  # an ack: left to Python
        _recv("a", '{"topic":"x","n":2}'),
        b'{"t":9,"us":1,"conn":"a","ev":"close","reason":"x"}\n',  # an event: Python's
        _recv("a", '{"topic":"x","n":3}', t=11, us=4_000_000),
    ]
    block = b"".join(lines)
    at = [sum(len(x) for x in lines[:k]) for k in range(len(lines) + 1)]
    args = (handlers, clock, ConnectionClosed, ProtocolError, 16384)
    assert _recfast.feed_recv(block, 0, *args) == (at[8], 8)
    assert fed == [
        ("receive", b'{"topic":"x","n":1}', 1.5, 7),
        ("receive", b'{"topic":"boom"}', 2.5, 5),
        ("receive", b'{"topic":"bye"}', 2.5, 5),
        ("receive", b'{"topic":"act"}', 1.75, 8),
        ("on_message", len(big), 2.0, 9),
    ]
    assert ses.applied == [(a, [b'{"topic":"act"}'])]  # once, after the frame that queued it
    payloads = [b'{"topic":"x","n":1}', b'{"topic":"boom"}', b'{"topic":"bye"}']
    sizes = sum(map(len, payloads)) + len(b'{"topic":"act"}') + len(big)
    assert (a.messages, a._bytes_closed) == (5, sizes)
    assert closed.messages == failed.messages == 0
    assert [str(e) for e in a.reported] == ["bad frame"]
    assert a.reported[0].__traceback__ is not None  # reported as raised
    assert _recfast.feed_recv(block, at[9], *args) == (at[10], 1)
    assert _recfast.feed_recv(block, at[11], *args) == (at[12], 1)
    assert (clock._mono, clock._t_ms) == (4.0, 11) and a.messages == 7
    assert _recfast.feed_recv(block[: at[2] - 1], 0, *args) == (at[2] - 1, 2)  # no last newline

    def broken(payload: bytes, now: float) -> None:
        raise KeyError("a bug in a callback path")

    bad = {"a": (a, ses.on_message, broken, ses, ses.apply)}
    with pytest.raises(KeyError):
        _recfast.feed_recv(block, 0, bad, clock, ConnectionClosed, ProtocolError, 16384)
    with pytest.raises(TypeError, match="handlers values"):
        _recfast.feed_recv(block, 0, {"a": (a, ses.on_message)}, *args[1:])
    with pytest.raises(TypeError, match="data: bytes"):
        _recfast.feed_recv(lines, 0, *args)  # type: ignore[arg-type]


def test_received_is_the_recorders_tap_in_one_call(tmp_path: Path) -> None:
    import gc
    import weakref

    rec = recording.Recorder(str(tmp_path / "x.jsonl"))
    ticks = iter([5.0, 6.0, 7.0, 8.0])
    by_append, by_received = _lines(rec), _lines(rec)
    with pytest.raises(RuntimeError, match="before bind_tap"):
        by_received.received("public-0", b"{}")
    by_received.bind_tap(lambda: next(ticks))
    frames = [b'{"a":"x\\"y"}', b'{"listenKey":"abc"}', "\u00e9".encode(), b"\xff"]
    for m, frame in zip([5.0, 6.0, 7.0, 8.0], frames):
        assert by_received.received("public-0", frame) is None
        by_append.append(frame, "public-0", m)
    # the same lines, and the same frames declined (a credential word, not UTF-8)
    got, want = by_received.take(redact._secrets), by_append.take(redact._secrets)
    assert got[:3] == want[:3] and bytes(got[3]) == bytes(want[3]) and got[4] == want[4]
    assert [d[0] for d in got[4]] == [1, 3] and got[4][0] == (1, "public-0", frames[1], 6.0)
    # after close(): nothing, and nothing of the recorder is held any more
    by_received.close()
    assert by_received.received("public-0", b"{}") is None
    assert by_received.take(())[2] == 0

    rec.start()
    assert rec.received == rec._lines.received  # the C method is the tap
    rec.received("public-0", b'{"topic":"t","token":"s3cr3t"}')  # declined by take(): scrubbed
    rec.received("public-0", b'{"topic":"t"}')
    rec.stop()
    text = (tmp_path / "x.jsonl").read_text()
    assert '"topic\\":\\"t\\"}"' in text and "token" in text
    ref = weakref.ref(rec)
    del rec
    gc.collect()
    assert ref() is None  # close() broke the recorder -> Lines -> recorder cycle


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(-1e6, 1e6), st.integers(-(10**6), 10**6).map(float)))
def test_times_are_written_as_the_pure_path_writes_them(tmp_path_factory: Any, dt: float) -> None:
    # every digit count of both numbers, and a time before the recording began (negative us)
    rec = recording.Recorder(str(tmp_path_factory.mktemp("r") / "x.jsonl"))
    lines = _lines(rec)
    for m in (rec._mono0 + dt, rec._mono0 + dt / 1e6, rec._mono0 - abs(dt) / 1e3):
        _check(rec, lines, b'{"a":1}', "public-0", m)
