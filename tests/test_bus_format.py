"""The bus entry format, shard selection and stream continuity (pure, no Redis)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixmm.bus import Bridge
from sixmm.bus.bridge import default_group, select_topics
from sixmm.bus.cursor import Cursor, Verdict
from sixmm.bus.format import (
    FORMAT_VERSION,
    check_public,
    decode_entry,
    encode_entry,
    max_trade_id,
    parse_shard,
    previous_id,
    shard_of,
    snapshot_data,
)
from sixmm.errors import ProtocolError


def test_entry_round_trip_keeps_prices_as_strings() -> None:
    data = {"price": "85000.10", "quantity": "0.00100000", "tradeId": "17"}
    fields = encode_entry(
        "data", "market.trade.BTCUSDT", "s1", 3, 1700, ts=1699, data=data, tid="17"
    )
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["v"] == str(FORMAT_VERSION) == "1"
    entry = decode_entry({k.encode(): v.encode() for k, v in fields.items()})  # as Redis returns
    assert (entry.kind, entry.topic, entry.session, entry.seq, entry.rx, entry.ts, entry.tid) == (
        "data", "market.trade.BTCUSDT", "s1", 3, 1700, 1699, "17"
    )  # fmt: skip
    assert entry.data == data  # the exact strings, not numbers


def test_json_fractions_decode_to_decimal_never_float() -> None:
    fields = encode_entry("data", "x", "s", 1, 1)
    fields["data"] = '{"p": 0.1}'
    assert decode_entry(fields).data == {"p": Decimal("0.1")}


def test_decimal_values_encode_as_strings() -> None:
    fields = encode_entry("data", "x", "s", 1, 1, data={"p": Decimal("1.50")})
    assert fields["data"] == '{"p":"1.50"}'


@pytest.mark.parametrize(
    "change",
    [
        {"v": "2"},
        {"v": ""},
        {"type": "bogus"},
        {"seq": "x"},
        {"rx": ""},
        {"data": "{not json"},
        {"gap_start_is": "x", "start": "soon"},
    ],
)
def test_malformed_entries_raise_protocol_error(change: dict) -> None:
    fields = encode_entry("data", "x", "s", 1, 1, data={})
    fields.update(change)
    with pytest.raises(ProtocolError):
        decode_entry(fields)
    with pytest.raises(ProtocolError):
        decode_entry({k.encode(): v.encode() for k, v in fields.items()})


@given(
    kind=st.sampled_from(["data", "update", "snapshot", "gap", "unsynced", "heartbeat"]),
    seq=st.integers(1, 2**62),
    rx=st.integers(0, 2**50),
    version=st.one_of(st.none(), st.integers(0, 2**62)),
    text=st.text(max_size=20),
)
def test_any_entry_round_trips(kind: str, seq: int, rx: int, version: int, text: str) -> None:
    fields = encode_entry(
        kind, "t", "sess", seq, rx, data={"k": text}, version=version, reason=text
    )
    entry = decode_entry(fields)
    as_redis = decode_entry({k.encode(): v.encode() for k, v in fields.items()})  # fast path
    assert as_redis == entry
    assert (entry.kind, entry.seq, entry.rx, entry.version, entry.data) == (
        kind, seq, rx, version, {"k": text}
    )  # fmt: skip
    assert entry.reason == text


def test_snapshot_data_is_best_first() -> None:
    data = snapshot_data(7, {"99.5": "1", "100": "2", "9.75": "3"}, {"101": "1", "100.5": "2"})
    assert data == {
        "endVersion": 7,
        "bids": [["100", "2"], ["99.5", "1"], ["9.75", "3"]],
        "asks": [["100.5", "2"], ["101", "1"]],
    }


def test_shard_of_is_stable_across_processes() -> None:
    topics = [f"market.trade.SYM{i}" for i in range(20)]
    here = [shard_of(t, 3) for t in topics]
    code = (
        "import sys; from sixmm.bus.format import shard_of;"
        f"print([shard_of(t, 3) for t in {topics!r}])"
    )
    for seed in ("1", "2"):  # Python's hash() would differ between these
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": sys.path[0] or "."},
        ).stdout
        assert out.strip() == str(here)
    import zlib

    assert shard_of("market.trade.BTCUSDT", 4) == zlib.crc32(b"market.trade.BTCUSDT") % 4
    assert set(here) == {0, 1, 2}


def test_shards_partition_the_topics() -> None:
    topics = [f"market.depth.S{i}" for i in range(30)]
    parts = [select_topics(topics, (i, 3)) for i in range(3)]
    assert sorted(t for part in parts for t in part) == sorted(topics)
    assert all(parts)
    assert default_group(topics, (0, 3)) != default_group(topics, (1, 3))
    assert default_group(topics, (0, 3)) == default_group(list(reversed(topics)), (0, 3))


@pytest.mark.parametrize("text,expected", [("1/2", (0, 2)), ("2/2", (1, 2)), ("1/1", (0, 1))])
def test_parse_shard(text: str, expected: tuple) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(text)


@pytest.mark.parametrize("topic", ["user.123", "user", "user.abc.listenKey"])
def test_private_topics_are_never_published(topic: str) -> None:
    with pytest.raises(ValueError, match="private user stream"):
        check_public(topic)
    with pytest.raises(ValueError, match="private user stream"):
        Bridge([topic], "redis://127.0.0.1:1/0")


def test_previous_id() -> None:
    assert previous_id("5-3") == "5-2"
    assert previous_id("5-0") == "4-18446744073709551615"
    assert previous_id("0-0") == "0-0"


def test_max_trade_id() -> None:
    assert max_trade_id([{"tradeId": "9"}, {"tradeId": "12"}, {"id": 3}]) == "12"
    assert max_trade_id([{"tradeId": "abc"}]) is None


def test_cursor_verdicts() -> None:
    c = Cursor()
    assert c.check("a", 5) is Verdict.FIRST
    assert c.check("a", 6) is Verdict.NEXT
    assert c.check("a", 6) is Verdict.DUPLICATE
    assert c.check("a", 4) is Verdict.DUPLICATE
    assert c.check("a", 10) is Verdict.HOLE
    assert c.lost == 3
    assert c.check("b", 1) is Verdict.NEW_SESSION
    assert c.check("b", 2) is Verdict.NEXT


@given(st.lists(st.integers(1, 50), min_size=1, max_size=60))
def test_cursor_against_a_naive_model(seqs: list) -> None:
    c = Cursor()
    last = None
    for s in seqs:
        v = c.check("x", s)
        if last is None:
            assert v is Verdict.FIRST
        elif s <= last:
            assert v is Verdict.DUPLICATE
            continue
        elif s == last + 1:
            assert v is Verdict.NEXT
        else:
            assert v is Verdict.HOLE and c.lost == s - last - 1
        last = s


def test_redis_passwords_never_show() -> None:
    from sixmm.bus.redisio import display_url
    from sixmm.protocol import redact

    shown = display_url("redis://user:s3cret-pw@127.0.0.1:6379/0")
    assert "s3cret-pw" not in shown and "127.0.0.1:6379" in shown
    assert "s3cret-pw" not in redact.scrub("connect failed for s3cret-pw")
    with pytest.raises(ValueError) as info:
        display_url("http://user:s3cret-pw@host/")
    assert "s3cret-pw" not in str(info.value)
