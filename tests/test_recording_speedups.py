"""The recording writer's C twin (``_recfast``) writes exactly what the pure path writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import recording
from sixmm.protocol import redact

pytestmark = pytest.mark.skipif(not recording.SPEEDUPS, reason="_recfast not built")


def _both(tmp_path: Path, payloads: List[bytes], conns: List[str]) -> List[str]:
    out = []
    rec = recording.Recorder(str(tmp_path / "x.jsonl"))
    run = [("recv", c, p, rec._mono0 + i * 0.001) for i, (p, c) in enumerate(zip(payloads, conns))]
    chunks: List[bytes] = []
    rec._recv_lines_c(run, chunks)
    out.append(b"".join(chunks).decode("utf-8"))
    lines: List[str] = []
    rec._recv_lines_py(run, lines)
    out.append("".join(lines))
    return out


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60).map(
    lambda s: s.encode("utf-8")
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(texts, st.binary(max_size=40)), min_size=1, max_size=8),
    st.lists(st.sampled_from(["public-0", "public-1", "user"]), min_size=8, max_size=8),
)
def test_c_and_pure_agree(
    tmp_path_factory: pytest.TempPathFactory, payloads: List[bytes], conns: List[str]
) -> None:
    c, py = _both(tmp_path_factory.mktemp("r"), payloads, conns[: len(payloads)])
    assert c == py
    for line, payload in zip(c.split("\n"), payloads):
        ev = json.loads(line)
        if "text" in ev:
            assert ev["text"] == redact.scrub(payload.decode("utf-8"))
        else:
            assert "b64" in ev


def test_credentials_take_the_scrubbing_path(tmp_path: Path) -> None:
    redact.remember("s3cr3t-value-xyz")
    payloads = [
        b'{"listenKey":"abcdefgh1234"}',
        b'{"msg":"Bearer abcdefghijk"}',
        b'{"echo":"s3cr3t-value-xyz"}',
        b'{"TOKEN=zzzzzzzz"}',
        b'{"plain":"\\u0001\x01\n"}',
    ]
    c, py = _both(tmp_path, payloads, ["user"] * len(payloads))
    assert c == py
    assert "abcdefgh1234" not in c and "s3cr3t-value-xyz" not in c and "zzzzzzzz" not in c
    assert "abcdefghijk" not in c
    redact.forget("s3cr3t-value-xyz")


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6))
def test_parse_recv_inverts_the_writer(payloads: List[bytes]) -> None:
    from sixmm.replay import _fast_recv, _recfast

    rec = recording.Recorder("/dev/null")
    run = [("recv", "public-0", p, rec._mono0 + i * 0.25) for i, p in enumerate(payloads)]
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
