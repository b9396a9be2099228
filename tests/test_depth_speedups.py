"""The C level fast path (sixmm.protocol._depthfast) against the pure-Python reference.

``_depthfast.levels(raw, known)`` must return exactly the list the pure fast path of
``depth._levels`` returns, or None (then the pure code runs and raises its own errors). The
property tests compare both on arbitrary JSON-like input and on near-valid level lists, and
compare :func:`parse_depth` end to end with and without the C path. The depth suites also run
in a subprocess with ``SIXMM_NO_EXTENSIONS=1`` (tests/test_book_speedups.py runs
tests/test_depth.py and tests/test_hostile_input.py on the other implementation; the switch
covers both extensions). With ``SIXMM_REQUIRE_SPEEDUPS=1`` (CI) a missing extension fails.
"""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Container, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.errors import ProtocolError
from sixmm.protocol import depth as depth_module
from sixmm.protocol.depth import SPEEDUPS, parse_depth

ROOT = Path(__file__).resolve().parent.parent

needs_c = pytest.mark.skipif(not SPEEDUPS, reason="the C extension is not loaded")

CLevels = Callable[[Any, Container[str]], Optional[List[Tuple[str, str]]]]


def c_levels() -> CLevels:
    from sixmm.protocol import _depthfast

    return _depthfast.levels


@pytest.fixture
def pure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the test: depth.py runs its pure code (the C path switched off)."""
    monkeypatch.setattr(depth_module, "_c_levels", None)
    yield


def pure_levels(raw: Any, known: Container[str]) -> Tuple[Any, ...]:
    saved = depth_module._c_levels
    depth_module._c_levels = None
    try:
        return ("ok", depth_module._levels(raw, "bids", known))
    except ProtocolError as exc:
        return ("raised", str(exc))
    finally:
        depth_module._c_levels = saved


def parse_both(data: Any, known: Container[str]) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
    results: List[Tuple[Any, ...]] = []
    saved = depth_module._c_levels
    for fast in (saved, None):
        depth_module._c_levels = fast
        try:
            msg = parse_depth(data, False, (known, known))
            results.append(("ok", msg.bids, msg.asks, msg.end))
        except ProtocolError as exc:
            results.append(("raised", type(exc), str(exc)))
        finally:
            depth_module._c_levels = saved
    return results[0], results[1]


def check(raw: Any, known: Container[str]) -> Optional[List[Tuple[str, str]]]:
    """C vs pure on one input; returns what C returned."""
    got = c_levels()(raw, known)
    reference = pure_levels(raw, known)
    if got is not None:
        assert reference[0] == "ok", (raw, reference)
        want = reference[1]
        assert type(got) is list and got == want
        for mine, theirs in zip(got, want):  # the very same objects, in exact tuples
            assert type(mine) is tuple and len(mine) == 2
            assert mine[0] is theirs[0] and mine[1] is theirs[1]
    c_result, pure_result = parse_both({"endVersion": 5, "bids": raw, "asks": raw}, known)
    assert c_result == pure_result
    return got


# -- strategies ----------------------------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=31)
numeral = st.one_of(digits, st.builds(lambda a, b: f"{a}.{b}", digits, digits))
odd_text = st.sampled_from(
    [
        "",
        ".",
        "..",
        ".5",
        "5.",
        "0",
        "0.0",
        "00.10",
        "0.",
        "1..2",
        "1.2.3",
        "-1",
        "+1",
        "1e5",
        "NaN",
        "inf",
        " 1",
        "1 ",
        "1\n",
        "1\x00",
        "1|2",
        "|",
        "\u0661",
        "1\u0661",
        "\U0001d7d9",
        "\u0663.\u0665",
        "\ud800",
        "1\ud800",
        "0" * 30,
        "1" * 30,
        "1" * 31,
        "1" * 30 + "." + "1" * 30,
        "1" * 30 + "." + "1" * 31,
        "0" * 30 + "." + "0" * 29 + "1",
        "0" * 31 + ".1",
        "1.0",
        "\u2160",
        "\u00b2",
        "0x1",
        "1_000",
    ]
)


class Str(str):
    pass


class WeirdStr(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class Unhashable(list):  # type: ignore[type-arg]
    pass


value = st.one_of(
    numeral,
    odd_text,
    st.text(max_size=8),
    numeral.map(Str),
    numeral.map(WeirdStr),
    st.integers(-5, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
    numeral.map(lambda s: s.encode()),
)

json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6), value),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["price", "quantity", "qty", "x"]), children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=12,
)


@st.composite
def near_valid(draw: st.DrawFn) -> List[Any]:
    """A valid level list with a few entries mutated."""
    pairs = draw(st.lists(st.tuples(numeral, numeral), max_size=8))
    levels: List[Any] = [list(pair) for pair in pairs]
    for _ in range(draw(st.integers(0, 3))):
        if not levels:
            break
        i = draw(st.integers(0, len(levels) - 1))
        how = draw(
            st.sampled_from(
                ["price", "qty", "extra", "short", "tuple", "dict", "sub", "notlist", "empty"]
            )
        )
        p, q = pairs[i]
        if how == "price":
            levels[i] = [draw(value), q]
        elif how == "qty":
            levels[i] = [p, draw(value)]
        elif how == "extra":
            levels[i] = [p, q, draw(value)]
        elif how == "short":
            levels[i] = [p]
        elif how == "tuple":
            levels[i] = (p, q)
        elif how == "dict":
            levels[i] = {"price": p, "quantity": q}
        elif how == "sub":
            levels[i] = Unhashable([p, q])
        elif how == "notlist":
            levels[i] = draw(value)
        else:
            levels[i] = []
    return levels


known_sets = st.one_of(
    st.just(frozenset()),
    st.lists(st.one_of(numeral, odd_text), max_size=4).map(frozenset),
    st.lists(st.one_of(numeral, odd_text), max_size=4).map(lambda xs: dict.fromkeys(xs)),
    st.lists(st.one_of(numeral, odd_text), max_size=4).map(set),
    st.lists(st.one_of(numeral, odd_text), max_size=4),  # a plain container: PySequence_Contains
    st.lists(st.one_of(numeral, odd_text), max_size=4).map(tuple),
)


# -- differential tests --------------------------------------------------------------------------


@needs_c
@settings(max_examples=400, deadline=None)
@given(raw=json_like, known=known_sets)
def test_c_and_pure_agree_on_arbitrary_input(raw: Any, known: Container[str]) -> None:
    check(raw, known)


@needs_c
@settings(max_examples=600, deadline=None)
@given(raw=near_valid(), known=known_sets)
def test_c_and_pure_agree_on_near_valid_levels(raw: List[Any], known: Container[str]) -> None:
    check(raw, known)


@needs_c
@settings(max_examples=200, deadline=None)
@given(raw=st.lists(st.tuples(numeral, numeral).map(list), max_size=30), known=known_sets)
def test_c_takes_every_level_list_the_pure_fast_path_takes(
    raw: List[Any], known: Container[str]
) -> None:
    # Exact str everywhere: C returns None only when the pure code rejects the list too.
    got = check(raw, known)
    if pure_levels(raw, known)[0] == "ok":
        assert got is not None


@needs_c
@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.0",
        "00.10",
        "1" * 30,
        "1" * 31,
        "1." + "0" * 30,
        "1." + "0" * 31,
        ".5",
        "5.",
        "..",
        "\u0661",
        "1\x00",
        "1|2",
        "\ud800",
        "0" * 30 + "." + "0" * 29 + "1",
    ],
)
def test_edge_numerals(text: str) -> None:
    for known in (frozenset(), {text: None}, frozenset([text]), [text]):
        check([[text, "1"]], known)
        check([["1", text]], known)
        check([["1", "1"], [text, text]], known)


@needs_c
def test_known_is_honoured_like_the_pure_code() -> None:
    # A price in ``known`` is taken without the pattern (the book only holds valid prices).
    levels = c_levels()
    assert levels([["abc", "1"]], {"abc": 1}) == [("abc", "1")]
    assert levels([["abc", "1"]], frozenset()) is None
    assert levels([], frozenset()) == []
    assert levels((), frozenset()) is None
    assert levels([["1", "1"]], frozenset()) == [("1", "1")]
    assert levels([[Str("1"), "1"]], frozenset()) is None  # subclasses: the Python code
    assert levels([["1", "1", "2"]], frozenset()) is None  # extra elements: the Python code
    check([["abc", "1"]], {"abc": 1})
    check([[WeirdStr("x"), "1"]], {"abc": 1})


class Raising:
    def __contains__(self, item: object) -> bool:
        raise RuntimeError("boom")


class Mutating:
    def __init__(self, raw: List[Any]) -> None:
        self.raw = raw

    def __contains__(self, item: object) -> bool:
        if len(self.raw) < 5:
            self.raw.append(["2", "2"])
        return False


@needs_c
def test_odd_containers_behave_like_the_pure_code() -> None:
    assert c_levels()([["1", "1"]], Raising()) is None  # the pure code then raises itself
    with pytest.raises(RuntimeError, match="boom"):
        parse_depth({"endVersion": 1, "bids": [["1", "1"]]}, False, (Raising(), frozenset()))
    raw: List[Any] = [["1", "1"]]
    got = c_levels()(raw, Mutating(raw))
    raw2: List[Any] = [["1", "1"]]
    saved = depth_module._c_levels
    depth_module._c_levels = None
    try:
        want = depth_module._levels(raw2, "bids", Mutating(raw2))
    finally:
        depth_module._c_levels = saved
    assert got == want and raw == raw2
    with pytest.raises(TypeError):
        c_levels()([], frozenset(), 1)  # type: ignore[call-arg]


# -- references and memory -----------------------------------------------------------------------


@needs_c
def test_no_references_leak() -> None:
    levels = c_levels()
    price = "".join(["99.", "5"])  # objects only this test holds
    qty = "".join(["1.", "25"])
    bad = "".join(["1.", "2."])
    entry = [price, qty]
    raw = [entry, [price, "0"]]
    known = {price: None}
    held = [price, qty, bad, entry, raw, known]

    def counts() -> List[int]:
        return [sys.getrefcount(obj) for obj in held]

    gc.collect()
    before = counts()
    for _ in range(200):
        out = levels(raw, known)
        assert out == [(price, qty), (price, "0")]
        del out
        assert levels([entry, [price, bad]], known) is None
        assert levels([entry, [bad, qty]], frozenset()) is None
        assert levels([entry, [price]], known) is None
        assert levels([[price, qty]], Raising()) is None
        parse = depth_module._depthfast.parse  # type: ignore[union-attr]
        got = parse(
            {"symbol": price, "endVersion": 7, "bids": raw, "asks": [entry]},
            False,
            known,
            known,
            depth_module.DepthMsg,
        )
        assert got is not None and got.bids == [(price, qty), (price, "0")]
        del got
        assert (
            parse(
                {"endVersion": 7, "bids": raw, "asks": [[bad, qty]]},
                False,
                known,
                known,
                depth_module.DepthMsg,
            )
            is None
        )
        assert (
            parse(
                {"endVersion": 7, "startVersion": 9, "bids": raw},
                False,
                known,
                known,
                depth_module.DepthMsg,
            )
            is None
        )
    assert counts() == before


@needs_c
def test_memory_stays_flat() -> None:
    levels = c_levels()
    raw = [[f"{100 + i}.5", f"{i}.25"] for i in range(20)]
    known = {p: None for p, _ in raw[:10]}
    for _ in range(200):
        levels(raw, known)
    gc.collect()
    tracemalloc.start()
    try:
        warm = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            levels(raw, known)
            levels([*raw, ["x", "1"]], known)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"heap grew by {grown} bytes"


# -- which implementation runs -------------------------------------------------------------------


def _child_speedups(disable: bool) -> bool:
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith("SIXMM_")}
    if disable:
        env["SIXMM_NO_EXTENSIONS"] = "1"
    code = "import sixmm.protocol.depth as d; print(d.SPEEDUPS, d._c_levels is not None)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    fields = out.stdout.split()
    assert fields[0] == fields[1]
    return fields[0] == "True"


def test_the_environment_variable_forces_the_pure_code() -> None:
    try:
        importlib.import_module("sixmm.protocol._depthfast")
        importable = True
    except ImportError:
        importable = False
    assert _child_speedups(disable=True) is False
    assert _child_speedups(disable=False) is importable


def test_the_pure_fixture_switches_the_c_path_off(pure: None) -> None:
    assert depth_module._c_levels is None
    assert parse_depth({"endVersion": 1, "bids": [["1", "1"]]}).bids == [("1", "1")]


@needs_c
def test_the_c_level_pairs_are_not_tracked_by_the_gc() -> None:
    import gc

    got = c_levels()([["1.5", "2"], ["2.5", "0"]], {})
    assert got == [("1.5", "2"), ("2.5", "0")]
    assert not any(gc.is_tracked(pair) for pair in got)
    # a price in a known dict that the pattern refuses is accepted, as by the pure code
    assert check([["1e5", "2"]], {"1e5": None}) == [("1e5", "2")]


@needs_c
def test_the_raw_level_lists_leave_the_cyclic_gc_and_nothing_else_does() -> None:
    # A snapshot's [price, qty] lists hold two str: untracked by the C level check, so the
    # collections that parsing and loading it trigger never walk or promote them (issue 16's
    # resync storm). Anything else keeps its tracking; the result is the pure code's.
    raw = [[f"{100 + i}.5", "1.25"] for i in range(2000)]
    odd: List[Any] = [["1.5", []], ["2.5", "1", "3"]]
    assert all(gc.is_tracked(level) for level in raw)
    copy = [list(level) for level in raw]
    got = c_levels()(raw, frozenset())
    assert not any(gc.is_tracked(level) for level in raw)
    assert got == pure_levels(copy, frozenset())[1]
    assert c_levels()(odd, frozenset()) is None  # the pure code's case, tracking untouched
    assert all(gc.is_tracked(level) for level in odd)
    assert all(gc.is_tracked(level) for level in copy)  # the pure code never untracks


# -- parse: parse_depth's envelope in C ----------------------------------------------------------

versions = st.one_of(
    st.none(),
    st.integers(-3, 12),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), 10**30]),
    st.sampled_from(["5", "x", "", 5.0, True, False, [], {}]),
)


@st.composite
def depth_payload(draw: st.DrawFn) -> Any:
    pairs = st.lists(st.tuples(numeral, numeral).map(list), max_size=4)
    data: Dict[str, Any] = {}
    for key, values in [
        ("symbol", st.one_of(st.none(), st.sampled_from(["X", "", "BTCUSDT"]), value)),
        ("type", st.one_of(st.none(), st.sampled_from(["update", "snapshot", "Update", "x"]))),
        ("startVersion", versions),
        ("endVersion", versions),
        ("prevEndVersion", versions),
        ("lastEndVersion", versions),
        ("bids", st.one_of(st.none(), pairs, near_valid(), value)),
        ("asks", st.one_of(st.none(), pairs, near_valid(), value)),
    ]:
        if draw(st.integers(0, 3)):  # present three times in four
            data[key] = draw(values)
    return data if draw(st.integers(0, 9)) else draw(st.one_of(value, json_like))


def parse_outcome(data: Any, hint: bool, known: Any) -> Tuple[Any, ...]:
    try:
        msg = parse_depth(data, hint, known)
    except ProtocolError as exc:
        return ("raised", str(exc))
    fields = tuple((name, type(getattr(msg, name)), getattr(msg, name)) for name in msg.__slots__)
    return ("ok", type(msg), fields)


@needs_c
@settings(max_examples=600, deadline=None)
@given(data=depth_payload(), hint=st.booleans(), known=st.one_of(st.none(), known_sets))
def test_c_and_pure_parse_depth_agree(data: Any, hint: bool, known: Any) -> None:
    pair = None if known is None else (known, known)
    fast = parse_outcome(data, hint, pair)
    saved = depth_module._c_levels
    depth_module._c_levels = None  # and with it the C parse
    try:
        pure = parse_outcome(data, hint, pair)
    finally:
        depth_module._c_levels = saved
    assert fast == pure


@needs_c
def test_c_parse_takes_the_common_update_and_declines_the_rest() -> None:
    from sixmm.protocol import _depthfast
    from sixmm.protocol.depth import DepthMsg

    c = _depthfast.parse
    none = frozenset()
    update = {"symbol": "X", "type": "update", "startVersion": 3, "endVersion": 4}
    update["bids"] = [["1.5", "2"]]
    msg = c(update, False, none, none, DepthMsg)
    assert type(msg) is DepthMsg and msg == parse_depth(update)
    assert (msg.kind, msg.start, msg.end, msg.prev, msg.asks) == ("update", 3, 4, None, [])
    assert c(
        {"endVersion": 1, "prevEndVersion": 0, "lastEndVersion": 0}, False, none, none, DepthMsg
    )
    for other in [
        {**update, "type": "snapshot"},
        {**update, "startVersion": 5},  # start > end: parse_depth raises
        {**update, "startVersion": "3"},  # a string version: parse_depth converts it
        {"endVersion": 4, "prevEndVersion": 4},
        {"endVersion": 4, "prevEndVersion": 1, "lastEndVersion": 2},
        {**update, "bids": [["1.5", "-2"]]},
        {**update, "asks": (("1", "1"),)},
        {k: v for k, v in update.items() if k != "endVersion"},
        {**update, "symbol": 5},
    ]:
        assert c(other, False, none, none, DepthMsg) is None, other
    assert c(update, True, none, none, DepthMsg) is None  # the envelope said snapshot
    assert c([update], False, none, none, DepthMsg) is None
