"""The C fast paths of decoding (sixmm.protocol._wirefast) against the pure-Python reference.

``_wirefast.trades(Trade, data)`` must return exactly the list of trades the pure
``Trade.from_wire`` builds for the same push, or None (then the pure code runs and raises its
own errors); ``_wirefast.opens(data)`` must count what ``data.count(b"{") +
data.count(b"[")`` counts. Property tests compare both on arbitrary and near-valid input;
tests/test_book_speedups.py also runs tests/test_models.py and tests/test_frames.py in a
subprocess on the other implementation (``SIXMM_NO_EXTENSIONS=1`` covers every extension).
"""

from __future__ import annotations

import gc
import tracemalloc
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import _json
from sixmm.errors import ProtocolError
from sixmm.protocol import frames as frames_module
from sixmm.protocol import models as models_module
from sixmm.protocol._speedups import load as load_extension
from sixmm.protocol.events import Malformed, Push
from sixmm.protocol.frames import decode
from sixmm.protocol.models import Trade, convert
from tests.test_frames import FRAME_LIKE, JSON_VALUES

_wirefast = load_extension("_wirefast")
needs_c = pytest.mark.skipif(_wirefast is None, reason="the C extension is not loaded")

FIELDS = [f.name for f in attrs.fields(Trade)]


def pure_trades(data: Any, symbol: Optional[str] = "BTCUSDT") -> Tuple[Any, ...]:
    """``("ok", [Trade...])`` or ``("raised", message)`` from the pure reference."""
    saved = models_module._c_trades
    models_module._c_trades = None
    try:
        return ("ok", convert("trade", Push(f"market.trade.{symbol}", 1, data)))
    except ProtocolError as exc:
        return ("raised", str(exc))
    finally:
        models_module._c_trades = saved


def same_trade(mine: Any, theirs: Any) -> None:
    assert type(mine) is Trade and type(theirs) is Trade
    for name in FIELDS:
        a, b = getattr(mine, name), getattr(theirs, name)
        assert type(a) is type(b) and a == b, (name, a, b)
    assert mine.raw is theirs.raw  # the wire dict itself, not a copy
    assert mine == theirs and hash(mine) == hash(theirs) and repr(mine) == repr(theirs)


def check(data: Any) -> Optional[List[Trade]]:
    """C vs pure on one push's data; returns what C returned."""
    assert _wirefast is not None
    got: Optional[List[Trade]] = _wirefast.trades(Trade, data)
    reference = pure_trades(data)
    if got is not None:
        assert reference[0] == "ok", (data, reference)
        assert type(got) is list and len(got) == len(reference[1])
        for mine, theirs in zip(got, reference[1]):
            same_trade(mine, theirs)
    # and through convert(), where the C path is switched on
    try:
        through: Tuple[Any, ...] = ("ok", convert("trade", Push("market.trade.BTCUSDT", 1, data)))
    except ProtocolError as exc:
        through = ("raised", str(exc))
    assert through[0] == reference[0]
    if through[0] == "ok":
        for mine, theirs in zip(through[1], reference[1]):
            same_trade(mine, theirs)
    else:
        assert through == reference
    return got


# -- strategies ----------------------------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=31)
numeral = st.one_of(digits, st.builds(lambda a, b: f"{a}.{b}", digits, digits))
digits30 = st.text("0123456789", min_size=1, max_size=30)  # what _numeral.h takes
numeral30 = st.one_of(digits30, st.builds(lambda a, b: f"{a}.{b}", digits30, digits30))
odd_text = st.sampled_from(
    [
        *["", ".", "5.", ".5", "-1", "+1", "1e5", "1E-3", "NaN", "inf", " 1", "1 ", "0x1"],
        *["1_000", "\u0661", "1\u0661", "\ud800", "1" * 31, "1" * 30 + "." + "1" * 30, "9" * 101],
    ]
)


class Str(str):
    pass


class Int(int):
    pass


sides = st.one_of(
    st.sampled_from(["BUY", "SELL", "buy", "Sell", "", "b\u00fcy", "\u00df", "x1"]),
    st.text(max_size=4),
    st.none(),
    st.integers(),
    st.just("BUY").map(Str),
)
value = st.one_of(
    numeral,
    odd_text,
    st.text(max_size=6),
    numeral.map(Str),
    st.integers(-5, 10**20),
    st.integers(0, 10**6).map(Int),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
    numeral.map(lambda s: s.encode()),
)
KEYS = ["symbol", "s", "price", "p", "quantity", "qty", "q", "side", "tradeId", "id", "t"]
KEYS += ["time", "ts", "timestamp", "T", "extra"]


@st.composite
def valid_trade(draw: st.DrawFn) -> Dict[str, Any]:
    """The common shape: every canonical field present, of the usual type."""
    trade: Dict[str, Any] = {
        "symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "x", "\u00e9"])),
        "tradeId": draw(st.one_of(st.just(""), st.integers(0, 10**12).map(str))),
        "price": draw(numeral30),
        "quantity": draw(numeral30),
        "side": draw(st.sampled_from(["BUY", "SELL", "buy", "sell", None, "b\u00fcy"])),
        "time": draw(st.integers(-(2**70), 2**70)),
    }
    if draw(st.booleans()):
        del trade["side"]
    if draw(st.booleans()):
        trade["sent"] = "0" * 20
    return trade


@st.composite
def near_valid_trade(draw: st.DrawFn) -> Any:
    trade: Dict[str, Any] = draw(valid_trade())
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        how = draw(st.sampled_from(["set", "delete", "side"]))
        if how == "delete":
            trade.pop(key, None)
        elif how == "side":
            trade["side"] = draw(sides)
        else:
            trade[key] = draw(value)
    return trade


pushes = st.one_of(
    valid_trade(),
    near_valid_trade(),
    st.lists(st.one_of(valid_trade(), near_valid_trade()), max_size=4),
    st.lists(valid_trade(), max_size=4),
    value,
    st.dictionaries(st.sampled_from(KEYS), value, max_size=6),
)


# -- differential tests --------------------------------------------------------------------------


@needs_c
@settings(max_examples=600, deadline=None)
@given(data=pushes)
def test_c_and_pure_trades_agree(data: Any) -> None:
    check(data)


@needs_c
@settings(max_examples=300, deadline=None)
@given(data=st.one_of(valid_trade(), st.lists(valid_trade(), max_size=5)))
def test_c_takes_every_common_trade_push(data: Any) -> None:
    assert check(data) is not None  # the fast path is not quietly declining everything


@needs_c
@pytest.mark.parametrize(
    "change",
    [
        {"symbol": ""},  # the topic's symbol is used: the pure code decides
        {"symbol": None},
        {"price": "1e5"},
        {"price": "-1"},  # a negative price is accepted by the pure code
        {"price": 85000},  # a JSON number
        {"quantity": "-1"},  # rejected by the pure code
        {"tradeId": None},  # the aliases are looked at
        {"tradeId": 42},
        {"time": None},
        {"time": "1771047000000"},
        {"time": True},
        {"side": 1},
        {"side": Str("BUY")},
    ],
)
def test_c_declines_what_only_the_pure_code_knows(change: Dict[str, Any]) -> None:
    trade = {"symbol": "BTCUSDT", "tradeId": "7", "price": "1.5", "quantity": "2", "time": 1}
    trade.update(change)
    assert check(trade) is None
    assert check([{**trade, **{"tradeId": "8"}}, trade]) is None
    assert _wirefast is not None and _wirefast.trades(Trade, Str("x")) is None


@needs_c
def test_the_side_is_upper_cased_like_str_upper() -> None:
    base = {"symbol": "X", "tradeId": "1", "price": "1", "quantity": "1", "time": 0}
    for side in ["buy", "Sell", "BUY", "b\u00fcy", "\u00df", "", "1a"]:
        got = check({**base, "side": side})
        assert got is not None and got[0].side == side.upper()


# -- the bound class is filled like attrs' __init__ fills it -------------------------------------


@needs_c
def test_bound_trades_are_the_same_objects_attrs_would_make() -> None:
    assert _wirefast is not None
    data: Dict[str, Any] = {"symbol": "X", "tradeId": "1", "price": "1.50", "quantity": "0"}
    data["side"] = "buy"
    data["time"] = 5
    (made,) = _wirefast.trades(Trade, data) or [None]
    want = Trade("X", Decimal("1.50"), Decimal("0"), "BUY", "1", 5, data)
    same_trade(made, want)
    assert gc.is_tracked(made)
    assert gc.get_referents(made) == gc.get_referents(want)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.price = Decimal(1)
    assert attrs.evolve(made, price=Decimal(2)).price == Decimal(2)
    # a subclass is not bound: it is called, so its own __init__ runs
    calls: List[Any] = []

    @attrs.frozen(slots=True)
    class Mine(Trade):
        def __attrs_post_init__(self) -> None:
            calls.append(self)

    (sub,) = _wirefast.trades(Mine, data) or [None]
    assert type(sub) is Mine and calls == [sub] and sub.side == "BUY"


@needs_c
def test_bind_refuses_a_layout_it_cannot_fill() -> None:
    assert _wirefast is not None
    names = tuple(FIELDS)

    class Plain:
        pass

    @attrs.define(slots=False)
    class WithDict:
        a: int

    with pytest.raises(TypeError, match="7 slot names expected"):
        _wirefast.bind("trade", Trade, names[:6])
    with pytest.raises(TypeError, match="not a plain slotted class"):
        _wirefast.bind("trade", Plain, names)
    with pytest.raises(TypeError, match="not a plain slotted class"):
        _wirefast.bind("trade", WithDict, names)
    with pytest.raises(TypeError, match="not a slot"):
        _wirefast.bind("trade", Trade, (*names[:6], "nope"))
    # nothing was unbound: trades are still built (and equal the pure ones)
    check({"symbol": "X", "tradeId": "1", "price": "1", "quantity": "1", "time": 0})


def test_only_plain_attrs_classes_are_filled_directly() -> None:
    assert models_module._plain_attrs(Trade)

    @attrs.frozen(slots=True)
    class Hooked:
        a: int

        def __attrs_post_init__(self) -> None:
            pass

    @attrs.frozen(slots=True)
    class Validated:
        a: int = attrs.field(validator=attrs.validators.instance_of(int))

    @attrs.frozen(slots=True)
    class Converted:
        a: int = attrs.field(converter=int)

    @attrs.frozen(slots=True)
    class NotInit:
        a: int = attrs.field(init=False, default=0)

    assert not any(map(models_module._plain_attrs, [Hooked, Validated, Converted, NotInit]))


@needs_c
def test_the_c_paths_leak_nothing() -> None:
    assert _wirefast is not None
    good: Dict[str, Any] = {
        "symbol": "X",
        "tradeId": "1",
        "price": "85000.5",
        "quantity": "1",
        "side": "sell",
    }
    good["time"] = 1
    pushes: List[Any] = [good, [good, good], [good, {**good, "price": "1e5"}]]
    pushes.append({**good, "time": None})

    frames = [
        b'{"topic":"market.trade.X","event":"data","ts":5,"data":{"a":[1,"x"]}}',
        b'{"topic":"user.1","event":"data","data":{}}',
        b'{"topic":"t","event":"data","data":1,"ts":"17"}',
        b"{bad",
        b"[[[[1]]]]",
    ]

    def churn(n: int) -> None:
        for _ in range(n):
            for data in pushes:
                _wirefast.trades(Trade, data)
            for frame in frames:
                _wirefast.decode_push(frame, _json.loads, 1000, 3, Push)

    tracemalloc.start()
    try:
        churn(300)
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        churn(5000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"heap grew by {grown} bytes"


# -- opens ---------------------------------------------------------------------------------------


@needs_c
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text('{[]}a"\\', max_size=300).map(str.encode))
def test_opens_counts_what_bytes_count_counts(data: bytes) -> None:
    assert _wirefast is not None
    assert _wirefast.opens(data) == data.count(b"{") + data.count(b"[")


@needs_c
def test_opens_declines_anything_but_exact_bytes() -> None:
    assert _wirefast is not None

    class Bytes(bytes):
        pass

    for other in [bytearray(b"{"), memoryview(b"{"), "{", Bytes(b"{"), None]:
        assert _wirefast.opens(other) == -1


@pytest.fixture(params=["c", "pure"])
def counting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "pure":
        monkeypatch.setattr(frames_module, "_opens", None)
    elif frames_module._opens is None:
        pytest.skip("the C extension is not loaded")
    yield request.param


@pytest.mark.parametrize("depth", [1, 2, 32, 33, 200])
def test_the_nesting_limit_holds_with_either_count(counting: str, depth: int) -> None:
    inner = "[" * (depth - 1) + "1" + "]" * (depth - 1)
    frame = ('{"topic":"market.trade.X","event":"data","data":' + inner + "}").encode()
    event = decode(frame, max_depth=32)
    if depth <= 32:  # the envelope is the first level
        assert type(event) is Push
    else:
        assert type(event) is Malformed and "nested deeper than 32" in event.reason
    # brackets inside strings are counted too: only the real depth decides
    quoted = ('{"topic":"market.trade.X","event":"data","data":"' + "[" * 100 + '"}').encode()
    assert type(decode(quoted, max_depth=32)) is Push


# -- decode_push ---------------------------------------------------------------------------------

LOADS = {"orjson-or-default": _json.loads, "stdlib": _json._stdlib_loads}


def event_fields(event: Any) -> Tuple[Any, ...]:
    """Everything observable of an event, with the types of the values that matter."""
    if type(event) is Push:
        return (Push, event.topic, type(event.ts), event.ts, event.data, event.snapshot, event.raw)
    if type(event) is Malformed:
        return (Malformed, event.reason, event.text)
    return (type(event), attrs.astuple(event, recurse=False))


def decode_both(text: bytes, **limits: int) -> Tuple[Any, Any]:
    """(decode with the C common case, decode in pure Python)."""
    fast = decode(text, **limits)
    saved = frames_module._c_decode
    frames_module._c_decode = None
    try:
        return fast, decode(text, **limits)
    finally:
        frames_module._c_decode = saved


def json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":")).encode()


push_like = st.fixed_dictionaries(
    {
        "topic": st.one_of(
            st.sampled_from(["market.trade.X", "user.1", "market.depth.X", "", "user"]),
            JSON_VALUES,
        ),
        "event": st.one_of(st.sampled_from(["data", "snapshot", "Data", "data "]), JSON_VALUES),
        "data": JSON_VALUES,
    },
    optional={"ts": st.one_of(st.integers(-(2**70), 2**70), JSON_VALUES, st.just("17"))},
)


@needs_c
@pytest.mark.parametrize("backend", sorted(LOADS))
@settings(max_examples=300, deadline=None)
@given(value=st.one_of(push_like, FRAME_LIKE, JSON_VALUES))
def test_c_and_pure_decode_agree(backend: str, value: Any) -> None:
    saved = frames_module._loads
    frames_module._loads = LOADS[backend]
    try:
        text = json_bytes(value)
        for limits in ({}, {"max_depth": 3}, {"max_bytes": 40}):
            fast, pure = decode_both(text, **limits)
            assert event_fields(fast) == event_fields(pure), (text, limits)
    finally:
        frames_module._loads = saved


@needs_c
def test_decode_push_takes_the_common_push_and_leaves_the_rest() -> None:
    assert _wirefast is not None
    c = _wirefast.decode_push
    loads = _json.loads
    common = b'{"topic":"market.trade.X","event":"data","ts":5,"data":{"a":1}}'
    got = c(common, loads, 1000, 32, Push)
    assert type(got) is Push and (got.topic, got.ts, got.data, got.snapshot) == (
        "market.trade.X",
        5,
        {"a": 1},
        False,
    )
    assert got.raw == loads(common) and got.raw["data"] is got.data
    assert repr(got) == repr(Push("market.trade.X", 5, {"a": 1}, False, got.raw))
    assert gc.is_tracked(got)
    no_ts = c(b'{"topic":"t","event":"data","data":1}', loads, 1000, 32, Push)
    assert type(no_ts) is Push and no_ts.ts is None
    for other in [
        b'{"topic":"user.5","event":"data","data":{}}',  # private
        b'{"topic":"t","event":"snapshot","data":{}}',
        b'{"topic":"t","data":{}}',
        b'{"topic":"t","event":"data","data":null}',  # Malformed, said by the pure code
        b'{"topic":"t","event":"data","data":1,"ts":"17"}',  # a digit string: _opt_int
        b'{"topic":5,"event":"data","data":1}',
        b'{"id":"1","event":"subscribe","success":true}',
        b"[1]",
        b'"pong"',
    ]:
        assert type(c(other, loads, 1000, 32, Push)) is tuple, other
    for unparsed in [b"{bad", b"pong", b""]:  # not parsed: decode starts over
        assert c(unparsed, loads, 1000, 32, Push) is None
    assert c(common, loads, len(common) - 1, 32, Push) is None  # too large
    assert c(common, loads, 1000, 1, Push) is None  # two opening brackets, limit 1
    assert c(bytearray(common), loads, 1000, 32, Push) is None
    assert c("{}", loads, 1000, 32, Push) is None


@needs_c
def test_decode_push_lets_what_is_not_an_exception_through() -> None:
    assert _wirefast is not None

    class Stop(BaseException):
        pass

    def stopping(_text: Any) -> Any:
        raise Stop

    with pytest.raises(Stop):
        _wirefast.decode_push(b"{}", stopping, 1000, 32, Push)
    calls: List[Any] = []

    def broken(text: Any) -> Any:
        calls.append(text)
        raise KeyError("boom")

    assert _wirefast.decode_push(b"{}", broken, 1000, 32, Push) is None
    assert calls == [b"{}"]


def test_push_is_filled_in_its_init_order() -> None:
    # frames.py binds Push's slots in __init__'s order: keep the two in step
    import inspect

    params = list(inspect.signature(Push.__init__).parameters)[1:]
    assert params == ["topic", "ts", "data", "snapshot", "raw"]
    assert sorted(Push.__slots__) == sorted(params)
