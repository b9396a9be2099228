"""parse_depth: every PROTOCOL.md §4.1 variant, every bad input -> ProtocolError (nothing else)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.errors import ProtocolError
from sixmm.protocol.depth import MAX_VERSION, DepthMsg, parse_depth

DOC_EXAMPLE: Dict[str, Any] = {
    "symbol": "BTCUSDT",
    "type": "snapshot",
    "startVersion": 1001,
    "endVersion": 1001,
    "bids": [["85000.1", "0.500"], ["85000.0", "1.2"]],
    "asks": [["85000.2", "0.3"]],
}


def payload(**fields: Any) -> Dict[str, Any]:
    """A minimal valid update, with ``fields`` overriding (``None`` values delete a key)."""
    data: Dict[str, Any] = {
        "symbol": "BTCUSDT",
        "type": "update",
        "startVersion": 5,
        "endVersion": 6,
    }
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


# -- the documented shape and the variants ---------------------------------------------------


def test_documented_example() -> None:
    msg = parse_depth(DOC_EXAMPLE)
    assert msg == DepthMsg(
        symbol="BTCUSDT",
        kind="snapshot",
        start=1001,
        end=1001,
        prev=None,
        bids=[("85000.1", "0.500"), ("85000.0", "1.2")],
        asks=[("85000.2", "0.3")],
    )
    assert "BTCUSDT" in repr(msg) and "bids=2" in repr(msg)


def test_update_keeps_exact_strings_and_zero_quantity() -> None:
    msg = parse_depth(payload(bids=[["85000.10", "0.000"], ["1", "0"]], asks=[["2.5", "10"]]))
    assert msg.kind == "update"
    assert msg.bids == [("85000.10", "0.000"), ("1", "0")]
    assert msg.asks == [("2.5", "10")]


def test_no_type_means_unknown_kind() -> None:
    data = payload(type=None)
    assert "type" not in data
    assert parse_depth(data).kind is None
    data["type"] = None  # JSON null counts as absent
    assert parse_depth(data).kind is None


def test_envelope_snapshot_hint() -> None:
    assert parse_depth(payload(type=None), snapshot_hint=True).kind == "snapshot"
    assert parse_depth(payload(type="snapshot"), snapshot_hint=True).kind == "snapshot"


def test_type_letter_case_is_ignored() -> None:
    assert parse_depth(payload(type="SNAPSHOT")).kind == "snapshot"
    assert parse_depth(payload(type="Update")).kind == "update"


def test_versions_as_strings() -> None:
    msg = parse_depth(payload(startVersion="1001", endVersion=str(MAX_VERSION)))
    assert (msg.start, msg.end) == (1001, MAX_VERSION)


@pytest.mark.parametrize("name", ["prevEndVersion", "lastEndVersion"])
def test_predecessor_variants(name: str) -> None:
    msg = parse_depth(payload(startVersion=None, **{name: "41"}, endVersion=42))
    assert (msg.start, msg.prev, msg.end) == (None, 41, 42)


def test_both_predecessor_spellings_agreeing() -> None:
    msg = parse_depth(
        payload(startVersion=None, prevEndVersion=41, lastEndVersion="41", endVersion=43)
    )
    assert msg.prev == 41


def test_neither_continuity_field() -> None:
    msg = parse_depth(payload(startVersion=None, endVersion=9))
    assert (msg.start, msg.prev, msg.end) == (None, None, 9)


def test_null_versions_count_as_absent() -> None:
    data = payload(endVersion=3)
    data.update(startVersion=None, prevEndVersion=None, lastEndVersion=None)
    msg = parse_depth(data)
    assert msg.start is None and msg.prev is None and msg.end == 3


def test_object_levels() -> None:
    msg = parse_depth(
        payload(
            bids=[{"price": "85000.1", "quantity": "0.5"}, {"price": "85000.0", "qty": "1"}],
            asks=[{"price": "85000.2", "quantity": "0", "orders": 3}],
        )
    )
    assert msg.bids == [("85000.1", "0.5"), ("85000.0", "1")]
    assert msg.asks == [("85000.2", "0")]


def test_list_levels_with_extra_elements_and_tuples() -> None:
    msg = parse_depth(payload(bids=[["85000.1", "0.5", 7]], asks=(("85000.2", "1"),)))
    assert msg.bids == [("85000.1", "0.5")]
    assert msg.asks == [("85000.2", "1")]


def test_mixed_fast_and_slow_levels() -> None:
    msg = parse_depth(payload(bids=[["3", "1"], {"price": "2", "quantity": "1"}, ["1", "1"]]))
    assert msg.bids == [("3", "1"), ("2", "1"), ("1", "1")]


@pytest.mark.parametrize("side", ["bids", "asks"])
def test_missing_or_null_sides_are_empty(side: str) -> None:
    assert getattr(parse_depth(payload()), side) == []
    data = payload()
    data[side] = None
    assert getattr(parse_depth(data), side) == []


def test_json_numbers_are_tolerated() -> None:
    msg = parse_depth(payload(bids=[[85000.1, 1e-05], [85000, 0]], asks=[[1e16, 2.0]]))
    assert msg.bids == [("85000.1", "0.00001"), ("85000", "0")]
    assert msg.asks == [("10000000000000000", "2.0")]


def test_missing_symbol_is_none_and_unknown_fields_ignored() -> None:
    msg = parse_depth(payload(symbol=None, extra={"anything": [1, 2]}, ts=123))
    assert msg.symbol is None


def test_depthmsg_equality_and_defaults() -> None:
    assert DepthMsg(end=1) == DepthMsg(end=1)
    assert DepthMsg(end=1) != DepthMsg(end=2)
    assert DepthMsg(end=1) != object()
    assert DepthMsg().bids == [] and DepthMsg().asks == []


# -- bad input: always ProtocolError, naming the field ---------------------------------------


BAD_NUMERALS = [
    "",
    " 1",
    "1 ",
    "1.",
    ".5",
    "1..2",
    "1.2.3",
    "+1",
    "-1",
    "1e5",
    "1E5",
    "NaN",
    "nan",
    "Infinity",
    "inf",
    "0x10",
    "1_000",
    "\uff11",  # fullwidth digit one
    "\u0663",  # Arabic-Indic digit three
    "1" * 31,
    "1." + "1" * 31,
    "abc",
]


@pytest.mark.parametrize("bad", BAD_NUMERALS)
def test_bad_price(bad: str) -> None:
    with pytest.raises(ProtocolError, match=r"bids\[1\]\.price"):
        parse_depth(payload(bids=[["2", "1"], [bad, "1"]]))


@pytest.mark.parametrize("bad", [*BAD_NUMERALS, "-0", "-0.5"])
def test_bad_quantity(bad: str) -> None:
    with pytest.raises(ProtocolError, match=r"asks\[0\]\.quantity"):
        parse_depth(payload(asks=[["2", bad]]))


@pytest.mark.parametrize("bad", ["0", "0.0", "000.000", 0, 0.0, -1, -0.5])
def test_price_must_be_positive(bad: Any) -> None:
    with pytest.raises(ProtocolError, match=r"bids\[0\]\.price"):
        parse_depth(payload(bids=[[bad, "1"]]))


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}, float("nan"), float("inf"), -1.5, b"1"])
def test_bad_numeral_types(bad: Any) -> None:
    with pytest.raises(ProtocolError, match=r"bids\[0\]\.(price|quantity)"):
        parse_depth(payload(bids=[["1", bad]]))
    with pytest.raises(ProtocolError, match=r"bids\[0\]"):
        parse_depth(payload(bids=[[bad, "1"]]))


@pytest.mark.parametrize(
    "level",
    [["1"], [], "12", 12, None, {"price": "1"}, {"quantity": "1"}, {"1": "2", "3": "4"}],
)
def test_bad_level_shapes(level: Any) -> None:
    with pytest.raises(ProtocolError, match=r"asks\[0\]"):
        parse_depth(payload(asks=[level]))


@pytest.mark.parametrize("side_value", ["x", 5, {"85000": "1"}, True])
def test_bad_side_container(side_value: Any) -> None:
    with pytest.raises(ProtocolError, match="'bids'"):
        parse_depth(payload(bids=side_value))


@pytest.mark.parametrize("name", ["startVersion", "endVersion", "prevEndVersion", "lastEndVersion"])
@pytest.mark.parametrize(
    "bad", [-1, "-1", True, 1.0, "1.0", " 1", "", "abc", 2**63, str(2**63), "1" * 25, [1], {}]
)
def test_bad_versions(name: str, bad: Any) -> None:
    with pytest.raises(ProtocolError, match=name):
        parse_depth(payload(**{name: bad}))


def test_missing_end_version() -> None:
    with pytest.raises(ProtocolError, match="endVersion"):
        parse_depth(payload(endVersion=None))


def test_start_after_end() -> None:
    with pytest.raises(ProtocolError, match="startVersion"):
        parse_depth(payload(startVersion=7, endVersion=6))


@pytest.mark.parametrize("prev", [6, 7])
def test_predecessor_not_below_end(prev: int) -> None:
    with pytest.raises(ProtocolError, match="prevEndVersion"):
        parse_depth(payload(startVersion=None, prevEndVersion=prev, endVersion=6))


def test_predecessor_spellings_disagree() -> None:
    with pytest.raises(ProtocolError, match="disagree"):
        parse_depth(payload(prevEndVersion=3, lastEndVersion=4, endVersion=6))


@pytest.mark.parametrize("bad", ["delta", "", 1, True, ["snapshot"]])
def test_bad_type(bad: Any) -> None:
    with pytest.raises(ProtocolError, match="'type'"):
        parse_depth(payload(type=bad))


def test_update_contradicting_envelope_snapshot() -> None:
    with pytest.raises(ProtocolError, match="envelope"):
        parse_depth(payload(type="update"), snapshot_hint=True)


@pytest.mark.parametrize("data", [None, [], "x", 1, 1.5, True, [DOC_EXAMPLE]])
def test_payload_not_an_object(data: Any) -> None:
    with pytest.raises(ProtocolError, match="object"):
        parse_depth(data)


@pytest.mark.parametrize("symbol", [1, ["BTCUSDT"], True])
def test_bad_symbol(symbol: Any) -> None:
    with pytest.raises(ProtocolError, match="symbol"):
        parse_depth(payload(symbol=symbol))


# -- properties -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
numeral_like = st.one_of(
    st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4})?", fullmatch=True),
    st.text(alphabet="0123456789.-+eE nNaIif_", max_size=8),
    st.integers(),
    st.floats(),
    json_values,
)
level_like = st.one_of(
    st.lists(numeral_like, max_size=3),
    st.fixed_dictionaries(
        {"price": numeral_like}, optional={"quantity": numeral_like, "qty": numeral_like}
    ),
    json_values,
)
version_like = st.one_of(
    st.integers(min_value=-5, max_value=2**64),
    st.integers(min_value=0, max_value=50).map(str),
    json_values,
)
near_valid_payload = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.just("BTCUSDT"), json_values),
        "type": st.one_of(st.sampled_from(["snapshot", "update", "SNAPSHOT", "x"]), json_values),
        "startVersion": version_like,
        "endVersion": version_like,
        "prevEndVersion": version_like,
        "lastEndVersion": version_like,
        "bids": st.one_of(st.lists(level_like, max_size=4), json_values),
        "asks": st.one_of(st.lists(level_like, max_size=4), json_values),
    },
)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(json_values, near_valid_payload), hint=st.booleans())
def test_parse_depth_returns_or_raises_protocol_error(data: Any, hint: bool) -> None:
    try:
        msg = parse_depth(data, snapshot_hint=hint)
    except ProtocolError:
        return
    assert isinstance(msg, DepthMsg)
    assert msg.end is not None and 0 <= msg.end <= MAX_VERSION
    assert msg.kind in ("snapshot", "update", None)
    for price, qty in msg.bids + msg.asks:
        assert isinstance(price, str) and isinstance(qty, str)


price_text = st.from_regex(r"[1-9][0-9]{0,7}(\.[0-9]{1,8})?", fullmatch=True) | st.from_regex(
    r"0\.[0-9]{0,7}[1-9]", fullmatch=True
)
qty_text = st.from_regex(r"[0-9]{1,8}(\.[0-9]{1,8})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    bids=st.lists(st.tuples(price_text, qty_text), max_size=20),
    asks=st.lists(st.tuples(price_text, qty_text), max_size=20),
    start=st.integers(0, MAX_VERSION),
    as_objects=st.booleans(),
)
def test_valid_payloads_round_trip(
    bids: List[Tuple[str, str]], asks: List[Tuple[str, str]], start: int, as_objects: bool
) -> None:
    def wire(levels: List[Tuple[str, str]]) -> List[Any]:
        if as_objects:
            return [{"price": p, "quantity": q} for p, q in levels]
        return [[p, q] for p, q in levels]

    msg = parse_depth(
        {
            "type": "update",
            "startVersion": start,
            "endVersion": str(start),
            "bids": wire(bids),
            "asks": wire(asks),
        }
    )
    assert msg.bids == bids and msg.asks == asks
    assert msg.start == msg.end == start


# -- the batched fast path decides exactly like one fullmatch per numeral ------------------------

_REF_NUM = r"[0-9]{1,30}(?:\.[0-9]{1,30})?"
_REF_PRICE = re.compile(r"(?=[0.]*[1-9])" + _REF_NUM)
_REF_QTY = re.compile(_REF_NUM)

numeral_text = st.one_of(
    st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4})?", fullmatch=True),
    st.text(alphabet="0123456789.|\n -+e٣²", max_size=10),
    st.sampled_from(["0", "1", "1|2", "|", "1|", "|1", "1.", ".5", "1..2", "1.2.3", "0.0", "٣"]),
    st.sampled_from(["9" * 30, "9" * 31, "1." + "0" * 30, "1." + "0" * 31, "9" * 30 + ".5"]),
)


@settings(max_examples=400, deadline=None)
@given(
    levels=st.lists(st.tuples(numeral_text, numeral_text), max_size=12),
    known_share=st.floats(0, 1),
)
def test_fast_path_matches_a_per_level_reference(
    levels: List[Tuple[str, str]], known_share: float
) -> None:
    ok = all(_REF_PRICE.fullmatch(p) and _REF_QTY.fullmatch(q) for p, q in levels)
    valid_prices = [p for p, _ in levels if _REF_PRICE.fullmatch(p)]
    known = set(valid_prices[: int(len(valid_prices) * known_share)])
    for kn in (None, (known, known)):
        data = payload(bids=[[p, q] for p, q in levels], asks=[[q, p] for p, q in levels[:0]])
        if ok:
            assert parse_depth(data, known=kn).bids == levels
        else:
            with pytest.raises(ProtocolError, match=r"bids\[\d+\]"):
                parse_depth(data, known=kn)


@pytest.mark.parametrize(
    "qty", ["1|2", "1||2", "|", "", "1.", ".1", "1.2.3", "9" * 31, "٣", "1\n", "1e3", "-1"]
)
def test_bad_quantity_among_good_ones_is_found(qty: str) -> None:
    good = [["85000.1", "1.5"], ["85000.0", "0"]]
    for index in (0, 1, 2):
        levels = [list(x) for x in good]
        levels.insert(index, ["84999.9", qty])
        with pytest.raises(ProtocolError, match=rf"bids\[{index}\]\.quantity"):
            parse_depth(payload(bids=levels), known=({"85000.1", "85000.0", "84999.9"}, set()))


def test_known_prices_skip_only_the_price_pattern() -> None:
    known = ({"85000.1"}, {"85000.2"})
    msg = parse_depth(payload(bids=[["85000.1", "2"]], asks=[["85000.2", "0"]]), known=known)
    assert msg.bids == [("85000.1", "2")] and msg.asks == [("85000.2", "0")]
    with pytest.raises(ProtocolError, match=r"bids\[0\]\.quantity"):
        parse_depth(payload(bids=[["85000.1", "1.2.3"]]), known=known)
    with pytest.raises(ProtocolError, match=r"asks\[0\]\.price"):
        parse_depth(payload(asks=[["0.0", "1"]]), known=known)
    with pytest.raises(ProtocolError, match=r"bids\[0\]"):  # unhashable price: slow path
        parse_depth(payload(bids=[[["85000.1"], "1"]]), known=known)


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet="0123456789.|x", max_size=80)
    | st.lists(numeral_text, min_size=1, max_size=6).map("|".join)
)
def test_joined_quantity_pattern_matches_the_plain_one(text: str) -> None:
    from sixmm.protocol import depth

    plain = re.compile(_REF_NUM + r"(?:\|" + _REF_NUM + ")*")
    assert bool(depth._QTYS(text)) == bool(plain.fullmatch(text))
