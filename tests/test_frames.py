"""Wire frames (PROTOCOL.md §2, §3, §5, §8): request ids, encoders, decode, and sixmm._json.

Every decode test runs with both JSON backends (orjson and the stdlib fallback).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Dict, Iterator, List, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import _json
from sixmm.protocol import frames
from sixmm.protocol.events import Ack, AuthResult, Malformed, Pong, PrivatePush, Push
from sixmm.protocol.frames import (
    MALFORMED_TEXT_CHARS,
    RequestIds,
    decode,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
)

EVENT_TYPES = (Ack, AuthResult, Malformed, Pong, PrivatePush, Push)
BACKENDS: Dict[str, Callable[[Union[str, bytes]], Any]] = {"stdlib": _json._stdlib_loads}
if _json.BACKEND == "orjson":
    BACKENDS["orjson"] = _json.loads


@pytest.fixture(params=sorted(BACKENDS), autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(frames, "_loads", BACKENDS[request.param])
    yield request.param


def both(text: str) -> List[Any]:
    """Decode ``text`` as str and as UTF-8 bytes; both must agree."""
    as_str = decode(text)
    as_bytes = decode(text.encode("utf-8"))
    assert type(as_str) is type(as_bytes)
    return [as_str, as_bytes]


# --------------------------------------------------------------------------- _json


def test_json_dumps_is_compact_and_keeps_non_ascii() -> None:
    for dumps in (_json.dumps, _json._stdlib_dumps):
        assert dumps({"id": "1", "op": "ping", "args": []}) == '{"id":"1","op":"ping","args":[]}'
        assert dumps({"s": "é"}) == '{"s":"é"}'
        assert isinstance(dumps({}), str)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"p":-Infinity}', "[1e400]", "\ufeff{}"])
def test_json_loads_rejects_non_finite_numbers_and_bom(text: str) -> None:
    for loads in BACKENDS.values():
        with pytest.raises(ValueError):
            loads(text)


def test_json_loads_accepts_bytes_and_rejects_invalid_utf8() -> None:
    for loads in BACKENDS.values():
        assert loads(b'{"a":[1,"x"]}') == {"a": [1, "x"]}
        assert loads('{"a":1.5}') == {"a": 1.5}
        with pytest.raises(ValueError):
            loads(b'{"a":"\xff"}')


def test_json_backend_name() -> None:
    assert _json.BACKEND in ("orjson", "json")


# --------------------------------------------------------------------------- request ids


def test_request_ids_are_unique_increasing_digit_strings() -> None:
    ids = RequestIds(now_ms=1772007814666)
    first = [ids.next() for _ in range(5)]
    assert first[0] == "1772007814666001"
    assert all(i.isdigit() for i in first)
    assert [int(i) for i in first] == sorted(int(i) for i in first)
    assert len(set(first)) == 5
    assert int(first[-1]) < 2**53  # survives a server that echoes it as a JSON number


def test_request_ids_from_the_clock_by_default() -> None:
    a, b = RequestIds(), RequestIds()
    assert a.next() != a.next()
    assert int(b.next()) >= int(a.next()) - 2  # same ms or later
    assert "RequestIds" in repr(a)
    it = iter(a)
    assert next(it) != next(it)


def test_request_ids_are_unique_across_threads() -> None:
    ids = RequestIds(now_ms=0)
    out: List[List[str]] = [[] for _ in range(8)]

    def worker(bucket: List[str]) -> None:
        for _ in range(5000):
            bucket.append(ids.next())

    threads = [
        threading.Thread(target=worker, args=(b,), name=f"test-ids-{i}") for i, b in enumerate(out)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    everything = [i for bucket in out for i in bucket]
    assert len(everything) == 40000
    assert len(set(everything)) == 40000


def test_request_ids_reject_negative_clock() -> None:
    with pytest.raises(ValueError):
        RequestIds(now_ms=-1)


# --------------------------------------------------------------------------- encoders


def test_encoders_match_the_documented_frames() -> None:
    assert (
        encode_subscribe("1772007814666", ["market.depth.BTCUSDT"])
        == '{"id":"1772007814666","op":"subscribe","args":["market.depth.BTCUSDT"]}'
    )
    assert (
        encode_unsubscribe("1772007814667", ["market.depth.BTCUSDT"])
        == '{"id":"1772007814667","op":"unsubscribe","args":["market.depth.BTCUSDT"]}'
    )
    assert encode_ping("1772007814668") == '{"id":"1772007814668","op":"ping","args":[]}'


def test_encoders_take_several_topics_or_one_string() -> None:
    assert json.loads(encode_subscribe("1", ("a.b", "c.d")))["args"] == ["a.b", "c.d"]
    assert json.loads(encode_subscribe("1", "market.tickers"))["args"] == ["market.tickers"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_subscribe("", ["market.tickers"]),
        lambda: encode_subscribe(5, ["market.tickers"]),  # type: ignore[arg-type]
        lambda: encode_subscribe("1", [""]),
        lambda: encode_subscribe("1", [None]),  # type: ignore[list-item]
        lambda: encode_ping(None),  # type: ignore[arg-type]
    ],
)
def test_encoders_reject_bad_arguments(call: Callable[[], str]) -> None:
    with pytest.raises(ValueError):
        call()


TOPIC_LISTS = st.lists(st.text(min_size=1, max_size=40), max_size=5)


@settings(max_examples=150, deadline=None)
@given(TOPIC_LISTS, st.sampled_from(["subscribe", "unsubscribe"]), st.booleans())
def test_encode_then_ack_round_trip(topics: List[str], op: str, numeric_id: bool) -> None:
    ids = RequestIds(now_ms=1772007814666)
    req_id = ids.next()
    encode = encode_subscribe if op == "subscribe" else encode_unsubscribe
    sent = json.loads(encode(req_id, topics))
    assert sent == {"id": req_id, "op": op, "args": topics}
    echo_id: Union[str, int] = int(req_id) if numeric_id else req_id
    reply = _json.dumps({"id": echo_id, "event": op, "success": True, "data": topics})
    ack = decode(reply)
    assert ack == Ack(req_id, op, True, tuple(topics), None, {})


# --------------------------------------------------------------------------- decode: pushes


def test_public_push_documented_envelope() -> None:
    text = '{"topic":"market.depth.BTCUSDT","event":"data","ts":1772007815000,"data":{"a":1}}'
    for push in both(text):
        assert push == Push("market.depth.BTCUSDT", 1772007815000, {"a": 1}, False)
        assert push.raw["topic"] == "market.depth.BTCUSDT"


def test_push_with_snapshot_event_and_without_event() -> None:
    snap = decode('{"topic":"market.depth.BTCUSDT","event":"snapshot","ts":1,"data":{}}')
    assert isinstance(snap, Push) and snap.snapshot is True
    plain = decode('{"topic":"market.trade.BTCUSDT","ts":1,"data":[]}')
    assert isinstance(plain, Push) and plain.snapshot is False and plain.data == []


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ('"1772007815000"', 1772007815000),
        ("1772007815000.0", 1772007815000),
        ('"soon"', None),
        ("null", None),
        ("true", None),
        ("1.5", None),
        ("[1]", None),
        ('"-5"', None),
    ],
)
def test_push_ts_is_int_or_none(ts: str, expected: Any) -> None:
    push = decode('{"topic":"market.trade.X1","event":"data","ts":' + ts + ',"data":{}}')
    assert isinstance(push, Push)
    assert push.ts == expected


def test_push_without_ts_or_data() -> None:
    push = decode('{"topic":"market.trade.X1","event":"data","data":{}}')
    assert isinstance(push, Push) and push.ts is None
    for text in [
        '{"topic":"market.trade.X1","event":"data"}',
        '{"topic":"market.trade.X1","data":null}',
    ]:
        bad = decode(text)
        assert isinstance(bad, Malformed) and "without data" in bad.reason


@pytest.mark.parametrize("topic", ["5", "null", "[]", '{"a":1}', "true"])
def test_non_string_topic_is_malformed(topic: str) -> None:
    for event in ('"event":"data",', '"event":"snapshot",', ""):
        bad = decode('{"topic":' + topic + "," + event + '"ts":1,"data":{}}')
        assert isinstance(bad, Malformed), bad
    assert "not a string" in decode('{"topic":5,"event":"data","data":{}}').reason  # type: ignore[union-attr]


def test_private_push_documented_shape_without_event() -> None:
    text = (
        '{"topic":"user.5794","ts":1771047000000,"data":{"eventType":"ORDER_TRADE_UPDATE","x":1}}'
    )
    for push in both(text):
        assert isinstance(push, PrivatePush)
        assert push.topic == "user.5794"
        assert push.ts == 1771047000000
        assert push.event_type == "ORDER_TRADE_UPDATE"
        assert push.data == {"eventType": "ORDER_TRADE_UPDATE", "x": 1}


def test_private_push_variants() -> None:
    with_event = decode(
        '{"topic":"user.1","event":"data","ts":1,"data":{"eventType":"ACCOUNT_UPDATE"}}'
    )
    assert isinstance(with_event, PrivatePush) and with_event.event_type == "ACCOUNT_UPDATE"
    no_type = decode('{"topic":"user.1","data":{"foo":1}}')
    assert isinstance(no_type, PrivatePush) and no_type.event_type is None
    other_topic = decode('{"topic":"private.x","data":{"eventType":"ACCOUNT_UPDATE"}}')
    assert isinstance(other_topic, PrivatePush) and other_topic.topic == "private.x"
    no_topic = decode('{"ts":"5","data":{"eventType":"ORDER_TRADE_UPDATE"}}')
    assert isinstance(no_topic, PrivatePush) and no_topic.topic is None and no_topic.ts == 5
    bare = decode('{"eventType":"ACCOUNT_UPDATE","eventTime":7,"balances":[]}')
    assert isinstance(bare, PrivatePush) and bare.ts == 7 and bare.data["balances"] == []
    # a public topic whose data merely has an eventType, with "event":"data", stays public
    public = decode('{"topic":"market.trade.X1","event":"data","data":{"eventType":"x"}}')
    assert isinstance(public, Push)


# --------------------------------------------------------------------------- decode: acks


def test_subscribe_ack_documented() -> None:
    text = (
        '{"id":"1772007814666","event":"subscribe","success":true,"data":["market.depth.BTCUSDT"]}'
    )
    for ack in both(text):
        assert ack == Ack("1772007814666", "subscribe", True, ("market.depth.BTCUSDT",), None, {})


def test_numeric_ack_id_compares_as_string() -> None:
    ack = decode(
        '{"id":1772007814666,"event":"subscribe","success":true,"data":["market.tickers"]}'
    )
    assert isinstance(ack, Ack) and ack.id == "1772007814666"
    float_id = decode('{"id":1772007814666.0,"event":"unsubscribe","success":true}')
    assert (
        isinstance(float_id, Ack)
        and float_id.id == "1772007814666"
        and float_id.op == "unsubscribe"
    )


@pytest.mark.parametrize("key", ["message", "msg", "error", "reason"])
def test_failure_ack_reason_from_any_message_key(key: str) -> None:
    ack = decode('{"id":"9","event":"subscribe","success":false,"' + key + '":"bad topic"}')
    assert ack == Ack("9", "subscribe", False, (), "bad topic", {})


def test_failure_ack_message_precedence_and_shapes() -> None:
    both_keys = decode('{"id":"9","event":"subscribe","success":false,"msg":"b","message":"a"}')
    assert isinstance(both_keys, Ack) and both_keys.message == "a"
    nested = decode(
        '{"id":"9","event":"subscribe","success":false,"error":{"code":3,"message":"no"}}'
    )
    assert isinstance(nested, Ack) and nested.message == "no"
    code = decode('{"id":"9","event":"subscribe","success":false,"message":42}')
    assert isinstance(code, Ack) and code.message == "42"
    silent = decode('{"id":"9","event":"subscribe","success":false}')
    assert isinstance(silent, Ack) and silent.message is None and silent.topics == ()


@pytest.mark.parametrize(
    ("data", "topics"),
    [
        ('["a.b","c.d"]', ("a.b", "c.d")),
        ('"market.tickers"', ("market.tickers",)),
        ("null", ()),
        ("[]", ()),
        ('["a.b",5,null]', ("a.b",)),
        ('{"topics":["a.b"]}', ("a.b",)),
        ('{"topic":"a.b"}', ("a.b",)),
        ("7", ()),
    ],
)
def test_ack_topics_shapes(data: str, topics: Any) -> None:
    ack = decode('{"id":"1","event":"subscribe","success":false,"data":' + data + "}")
    assert isinstance(ack, Ack) and ack.topics == topics


def test_ack_topics_from_args_or_topic_when_data_absent() -> None:
    args = decode('{"id":"1","event":"subscribe","success":true,"args":["x.y"]}')
    assert isinstance(args, Ack) and args.topics == ("x.y",)
    topic = decode('{"id":"1","event":"subscribe","success":true,"topic":"x.y"}')
    assert isinstance(topic, Ack) and topic.topics == ("x.y",)


@pytest.mark.parametrize(
    ("extra", "success"),
    [
        ('"success":"true"', True),
        ('"success":"false"', False),
        ('"success":1', True),
        ('"success":0', False),
        ('"code":0', True),
        ('"code":"0"', True),
        ('"code":2002', False),
        ("", True),
    ],
)
def test_ack_success_variants(extra: str, success: bool) -> None:
    sep = "," if extra else ""
    ack = decode('{"id":"1","event":"subscribe"' + sep + extra + "}")
    assert isinstance(ack, Ack) and ack.success is success


@pytest.mark.parametrize("bad", ['"success":"maybe"', '"success":[]', '"success":2'])
def test_ack_with_unusable_success_is_malformed(bad: str) -> None:
    assert isinstance(decode('{"id":"1","event":"subscribe",' + bad + "}"), Malformed)


@pytest.mark.parametrize("bad_id", ["[1]", "{}", "true", "1.5"])
def test_ack_with_unusable_id_is_malformed(bad_id: str) -> None:
    bad = decode('{"id":' + bad_id + ',"event":"subscribe","success":true}')
    assert isinstance(bad, Malformed) and "id" in bad.reason


def test_ack_without_id_has_none() -> None:
    ack = decode('{"event":"subscribe","success":true,"data":["a.b"]}')
    assert isinstance(ack, Ack) and ack.id is None


def test_ack_without_event() -> None:
    ack = decode('{"id":"3","success":false,"msg":"nope","op":"unsubscribe"}')
    assert ack == Ack("3", "unsubscribe", False, (), "nope", {})


def test_error_event_with_id_is_a_failed_ack() -> None:
    ack = decode('{"id":"77","event":"error","message":"invalid topic","data":["market.bad.X"]}')
    assert ack == Ack("77", "subscribe", False, ("market.bad.X",), "invalid topic", {})
    unsub = decode('{"id":77,"event":"error","op":"unsubscribe","success":true,"msg":"x"}')
    assert unsub == Ack("77", "unsubscribe", False, (), "x", {})


def test_error_event_without_id_is_malformed_with_server_message() -> None:
    bad = decode('{"event":"error","message":"rate limited"}')
    assert isinstance(bad, Malformed) and "rate limited" in bad.reason
    silent = decode('{"event":"error"}')
    assert isinstance(silent, Malformed) and "server error" in silent.reason


# --------------------------------------------------------------------------- decode: pong, auth


@pytest.mark.parametrize(
    ("text", "pong_id"),
    [
        ('{"id":"5","event":"pong"}', "5"),
        ('{"event":"pong"}', None),
        ('{"id":5,"event":"pong","ts":1}', "5"),
        ('{"id":[5],"event":"pong"}', None),
        ('{"op":"pong"}', None),
        ('{"id":"6","op":"ping","success":true}', "6"),
        ('{"pong":1772007815000}', None),
        ("pong", None),
        (" pong\n", None),
        ('"pong"', None),
        ('{"event":"ping"}', None),  # a server-initiated ping: proof of life
        ('{"id":"9","event":"ping"}', "9"),
    ],
)
def test_pong_shapes(text: str, pong_id: Any) -> None:
    for pong in both(text):
        assert isinstance(pong, Pong)
        assert pong.id == pong_id


def test_auth_success_and_failure() -> None:
    ok = decode('{"event":"auth","success":true,"data":"1188041528"}')
    assert ok == AuthResult(True, "1188041528", None, {})
    numeric = decode('{"event":"auth","success":true,"data":1188041528}')
    assert isinstance(numeric, AuthResult) and numeric.user_id == "1188041528"
    nested = decode('{"event":"auth","success":true,"data":{"userId":42}}')
    assert isinstance(nested, AuthResult) and nested.user_id == "42"
    for key in ("message", "msg"):
        failed = decode('{"event":"auth","success":false,"' + key + '":"listenKey expired"}')
        assert failed == AuthResult(False, None, "listenKey expired", {})
    assert isinstance(decode('{"event":"auth","success":"perhaps"}'), Malformed)


# --------------------------------------------------------------------------- decode: malformed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ("[1,2]", "not an object"),
        ("42", "not an object"),
        ("null", "not an object"),
        ('"hello"', "not an object"),
        ('{"topic":"market.trade.X1","event":"data","ts":1,"data":{"p":NaN}}', "invalid JSON"),
        ('{"topic":"market.trade.X1","event":"data","ts":1,"data":{"p":Infinity}}', "invalid JSON"),
        (
            '{"topic":"market.trade.X1","event":"data","ts":1,"data":{"p":-Infinity}}',
            "invalid JSON",
        ),
        ('{"topic":"market.trade.X1","event":"data","ts":1,"data":{"p":1e999}}', "invalid JSON"),
        ('{"a":1}', "unrecognised"),
        ("{}", "unrecognised"),
        ('{"event":"data","data":{}}', "without topic"),
        ('{"event":"whatever","topic":"market.tickers","data":[]}', "unknown event"),
        ('{"event":5}', "not a string"),
    ],
)
def test_malformed_frames(text: str, reason: str) -> None:
    for bad in both(text):
        assert isinstance(bad, Malformed)
        assert reason in bad.reason, bad.reason
        assert bad.text == text


def test_invalid_utf8_bytes_are_malformed() -> None:
    for raw in (b"\xff\xfe", b'{"topic":"\xc3\x28"}', b"\xed\xa0\x80", b'{"a":"\x80"}'):
        bad = decode(raw)
        assert isinstance(bad, Malformed)
        assert isinstance(bad.text, str)


def test_bytes_like_and_non_text_inputs() -> None:
    text = b'{"topic":"market.tickers","event":"data","data":[]}'
    assert isinstance(decode(bytearray(text)), Push)  # type: ignore[arg-type]
    assert isinstance(decode(memoryview(text)), Push)  # type: ignore[arg-type]
    for junk in (None, 5, ["x"], object()):
        bad = decode(junk)  # type: ignore[arg-type]
        assert isinstance(bad, Malformed) and "not text" in bad.reason


def test_lone_surrogates_never_raise() -> None:
    for text in (
        "\ud800",
        '{"topic":"market.trade.X1","event":"data","data":"\udfff"}',
        '"\\ud800"',
    ):
        assert isinstance(decode(text), EVENT_TYPES)


def test_oversize_frames_are_malformed() -> None:
    text = '{"topic":"market.trade.X1","event":"data","ts":1,"data":"%s"}' % ("x" * 100)
    assert isinstance(decode(text, max_bytes=len(text)), Push)
    bad = decode(text, max_bytes=len(text) - 1)
    assert isinstance(bad, Malformed) and "too large" in bad.reason
    assert isinstance(decode(text.encode(), max_bytes=len(text) - 1), Malformed)
    # characters vs bytes: 40 "é" are 80 UTF-8 bytes
    wide = '{"topic":"market.trade.X1","event":"data","data":"%s"}' % ("é" * 40)
    assert isinstance(decode(wide, max_bytes=len(wide.encode()) - 1), Malformed)
    assert isinstance(decode(wide, max_bytes=len(wide.encode())), Push)


def test_malformed_text_is_truncated() -> None:
    text = "{" + "x" * 5000
    for bad in both(text):
        assert isinstance(bad, Malformed)
        assert bad.text.startswith("{xxx")
        assert len(bad.text) <= MALFORMED_TEXT_CHARS + 3


def _nested(depth: int) -> str:
    value = "1"
    for i in range(depth - 1):
        value = "[" + value + "]" if i % 2 else '{"k":' + value + "}"
    return '{"topic":"market.tickers","event":"data","data":' + value + "}"


def test_depth_limit() -> None:
    assert isinstance(decode(_nested(32)), Push)  # envelope + 31 levels = 32
    deep = decode(_nested(33))
    assert isinstance(deep, Malformed) and "deeper than 32" in deep.reason
    assert isinstance(decode(_nested(5), max_depth=4), Malformed)
    assert isinstance(decode(_nested(4), max_depth=4), Push)
    assert isinstance(decode("[]", max_depth=0), Malformed)


def test_absurd_nesting_is_malformed_not_a_crash() -> None:
    for text in ("[" * 100000 + "]" * 100000, "[" * 100000, '{"a":' * 50000 + "1" + "}" * 50000):
        bad = decode(text)
        assert isinstance(bad, Malformed)


def test_wide_but_shallow_payloads_pass_the_depth_check() -> None:
    levels = ",".join(f'["{100 + i}.5","1"]' for i in range(2000))
    head = '{"topic":"market.depth.BTCUSDT","event":"data","ts":1,"data":{"bids":['
    text = head + levels + '],"asks":[]}}'
    push = decode(text)
    assert isinstance(push, Push) and len(push.data["bids"]) == 2000


def test_decoder_bug_becomes_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_text: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(frames, "_loads", broken)
    bad = decode("{}")
    assert isinstance(bad, Malformed) and "decoder error" in bad.reason


# --------------------------------------------------------------------------- properties


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "id",
        "event",
        "op",
        "topic",
        "ts",
        "data",
        "success",
        "message",
        "msg",
        "code",
        "eventType",
        "pong",
    ]
)
KEY_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [
            "data",
            "snapshot",
            "subscribe",
            "unsubscribe",
            "pong",
            "auth",
            "error",
            "ping",
            "user.1",
            "market.trade.X1",
        ]
    ),
)
FRAME_LIKE = st.dictionaries(KEYS, KEY_VALUES, max_size=7)


def _check(event: Any) -> None:
    assert isinstance(event, EVENT_TYPES)
    if isinstance(event, Malformed):
        assert isinstance(event.reason, str) and event.reason
        assert isinstance(event.text, str) and len(event.text) <= MALFORMED_TEXT_CHARS + 3


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_decode_never_raises_on_text(text: str) -> None:
    _check(decode(text))


@settings(max_examples=150, deadline=None)
@given(st.binary())
def test_decode_never_raises_on_bytes(data: bytes) -> None:
    _check(decode(data))


@settings(max_examples=150, deadline=None)
@given(JSON_VALUES)
def test_decode_never_raises_on_json_values(value: Any) -> None:
    text = json.dumps(value)
    _check(decode(text))
    _check(decode(text.encode("utf-8")))


@settings(max_examples=300, deadline=None)
@given(FRAME_LIKE, st.integers(min_value=0, max_value=40))
def test_decode_never_raises_on_frame_like_objects(obj: Any, max_depth: int) -> None:
    text = json.dumps(obj)
    event = decode(text, max_depth=max_depth)
    _check(event)
    if isinstance(event, (Push, PrivatePush)):
        assert event.data is not None
        assert event.ts is None or type(event.ts) is int
    if isinstance(event, Ack):
        assert event.id is None or type(event.id) is str
        assert all(type(t) is str for t in event.topics)
        assert event.op in ("subscribe", "unsubscribe")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_decode_truncates_any_text_for_logs(text: str) -> None:
    event = decode("{" + text)
    _check(event)


def test_acked_topics_named_or_the_whole_outstanding_request() -> None:
    from sixmm.protocol.frames import acked_topics

    named = decode('{"id":"1","event":"subscribe","success":false,"data":["market.trade.X1"]}')
    bare = decode('{"id":"1","event":"subscribe","success":false,"message":"nope"}')
    assert isinstance(named, Ack) and isinstance(bare, Ack)
    outstanding = {"market.trade.X1", "market.trade.X2"}
    assert acked_topics(named, outstanding) == ["market.trade.X1"]
    assert acked_topics(bare, outstanding) == ["market.trade.X1", "market.trade.X2"]
