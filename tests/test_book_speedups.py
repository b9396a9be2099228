"""The C order-book hot path (sixmm.protocol._bookside) against the pure-Python reference.

Property tests drive a C-backed and a pure-Python :class:`BookState` with the same messages
and compare everything observable after each step. The existing book suites run on the
default implementation in this process and, in a subprocess, on the other one
(``SIXMM_NO_EXTENSIONS=1`` or not). With ``SIXMM_REQUIRE_SPEEDUPS=1`` (CI) a missing
extension is a failure, not a skip.
"""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.protocol import book as book_module
from sixmm.protocol import models as models_module
from sixmm.protocol.book import SPEEDUPS, BookState, Outcome
from sixmm.protocol.depth import SPEEDUPS as DEPTH_SPEEDUPS
from sixmm.protocol.depth import DepthMsg

ROOT = Path(__file__).resolve().parent.parent
BOOK_SUITES = [
    "tests/test_book.py",
    "tests/test_orderbook.py",
    "tests/test_depth.py",
    "tests/test_hostile_input.py",
    "tests/test_models.py",  # and the trade and frame decoding fast paths (_wirefast)
    "tests/test_frames.py",
]

needs_c = pytest.mark.skipif(not SPEEDUPS, reason="the C extension is not loaded")

Levels = Sequence[Any]


def msg(
    kind: Optional[str],
    end: int,
    bids: Levels = (),
    asks: Levels = (),
    start: Optional[int] = None,
    prev: Optional[int] = None,
) -> DepthMsg:
    return DepthMsg(
        symbol="X", kind=kind, start=start, end=end, prev=prev, bids=list(bids), asks=list(asks)
    )


def attempt(fn: Callable[..., Any], *args: Any) -> Tuple[Any, ...]:
    """``("ok", result)`` or ``("raised", type, message)``: comparable across the two books."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # any exception: it must match the reference's
        return ("raised", type(exc), str(exc))


def side_state(side: Any) -> Tuple[Any, ...]:
    """Everything in one side, with key types (float vs Decimal), checked for consistency."""
    assert side.keys == sorted(side.by_key)
    assert len(side.keys) == len(side.by_key) == len(side.by_str)
    for price, entry in side.by_str.items():
        assert entry[0] == price and side.by_key[entry[3]] is entry
    assert side._fast[1:4] == (side.by_str, side.by_key, side.keys)
    assert side._fast[1] is side.by_str and side._fast[3] is side.keys
    return (
        [(type(k).__name__, k) for k in side.keys],
        sorted((p, e[1], e[2], e[4]) for p, e in side.by_str.items()),
    )


def state(book: BookState) -> Tuple[Any, ...]:
    """What a user (and the next message) can observe; reads the same way on both books."""
    return (
        book.counters(),
        book.levels(),
        book.depth(),
        book.version,
        book.synced,
        book.verified,
        book.exact_keys,
        book.expecting_snapshot,
        side_state(book._bids),
        side_state(book._asks),
    )


def pair() -> Tuple[BookState, BookState]:
    fast = BookState("X", speedups=True)
    pure = BookState("X", speedups=False)
    assert fast.speedups and not pure.speedups
    return fast, pure


# -- strategies -------------------------------------------------------------------------------

TICKS = list(range(995, 1010))  # 99.5 .. 100.9: bids and asks overlap, so books cross


def spellings(tick: int) -> List[str]:
    whole, frac = divmod(tick, 10)
    short = f"{whole}.{frac}"
    out = [short, short + "0", short + "00", "0" + short, short + "0" * 12]  # last: 17 chars
    if frac == 0:
        out += [str(whole), f"{whole}."]
    return out


price_st = st.one_of(
    st.sampled_from(TICKS).flatmap(lambda t: st.sampled_from(spellings(t))),
    # more than 15 significant digits: the book switches to exact Decimal keys
    st.sampled_from(["100.0000000000000001", "99.99999999999999999", "1234567890123456"]),
)
qty_st = st.sampled_from(
    ["0", "0.000", "0.", "000", "", ".", "1", "2.5", "0.001", "10.000", "00.10", "7"]
)
levels_st = st.lists(st.tuples(price_st, qty_st), max_size=12)


@st.composite
def op_st(draw: st.DrawFn) -> Tuple[Any, ...]:
    kind = draw(
        st.sampled_from(
            ["update"] * 8 + ["snapshot", "typeless", "expect", "invalidate", "top", "stale"]
        )
    )
    if kind in ("expect", "invalidate"):
        return (kind,)
    if kind == "top":
        return (kind, draw(st.sampled_from([0, 1, 3, 10, 1000])))
    link = draw(st.sampled_from(["next", "next", "next", "wide", "gap", "prev", "badprev", "none"]))
    return (kind, link, draw(levels_st), draw(levels_st))


def run_op(
    book: BookState, op: Tuple[Any, ...], cur: int, apply: Optional[Callable[..., Any]] = None
) -> Tuple[Any, int]:
    """Apply one op (messages through ``apply(book, msg)``, by default the method); returns
    (what it returned or raised, the new stream version)."""
    kind = op[0]
    if kind == "expect":
        return attempt(book.expect_snapshot), cur
    if kind == "invalidate":
        return attempt(book.invalidate), cur
    if kind == "top":
        return attempt(lambda: (book.top(op[1]), book.best_bid(), book.best_ask())), cur
    _, link, bids, asks = op
    if kind == "snapshot":
        m = msg("snapshot", cur + 1, bids, asks, start=cur + 1)
    elif kind == "typeless":
        m = msg(None, cur + 1, bids, asks, start=cur + 1)
    elif kind == "stale":
        m = msg("update", cur, bids, asks, start=cur)
    elif link == "next":
        m = msg("update", cur + 1, bids, asks, start=cur + 1)
    elif link == "wide":
        m = msg("update", cur + 3, bids, asks, start=cur - 1)
    elif link == "gap":
        m = msg("update", cur + 2, bids, asks, start=cur + 2)
    elif link == "prev":
        m = msg("update", cur + 1, bids, asks, prev=cur)
    elif link == "badprev":
        m = msg("update", cur + 1, bids, asks, prev=cur - 1)
    else:
        m = msg("update", cur + 1, bids, asks)
    if apply is None:
        return attempt(lambda: book.apply(m)), max(cur, m.end or cur)
    return attempt(apply, book, m), max(cur, m.end or cur)


# -- the two implementations agree --------------------------------------------------------------


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.lists(op_st(), min_size=1, max_size=40))
def test_c_and_pure_books_agree_on_random_streams(ops: List[Tuple[Any, ...]]) -> None:
    # fast.apply (the C side updates), fast_apply on a C book (the whole update in C) and on
    # a pure book (the method itself), against the pure reference
    fast, pure = pair()
    whole, pure2 = pair()
    fast_apply = book_module.fast_apply
    assert fast_apply is not BookState.apply
    cur = 0
    for op in ops:
        want, new = run_op(pure, op, cur)
        assert run_op(fast, op, cur)[0] == want, op
        assert run_op(whole, op, cur, fast_apply)[0] == want, op
        assert run_op(pure2, op, cur, fast_apply)[0] == want, op
        cur = new
        assert state(fast) == state(whole) == state(pure2) == state(pure), op
        assert fast.top(1000) == whole.top(1000) == pure2.top(1000) == pure.top(1000)


@needs_c
@settings(max_examples=150, deadline=None)
@given(levels_st, st.lists(st.tuples(levels_st, levels_st), max_size=15))
def test_c_and_pure_books_agree_after_a_synced_snapshot(
    snapshot: List[Tuple[str, str]], updates: List[Tuple[List[Any], List[Any]]]
) -> None:
    # Mostly applied updates (the hot path), with both sides from the same price pool.
    fast, pure = pair()
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, snapshot, snapshot[::-1], start=1))
    for version, (bids, asks) in enumerate(updates, start=2):
        m = msg("update", version, bids, asks, start=version)
        assert attempt(book_module.fast_apply, fast, m) == attempt(pure.apply, m)
        assert state(fast) == state(pure)
        assert fast.top(5) == pure.top(5)


@needs_c
def test_a_deep_book_agrees_level_for_level() -> None:
    # 2,000 levels per side, changes near the top and anywhere: the bisect positions.
    import random

    rng = random.Random(7)
    fast, pure = pair()
    ticks = [f"{85000 + i / 10:.1f}" for i in range(-2000, 2000)]
    snapshot = msg(
        "snapshot", 1, [(t, "1") for t in ticks[:2000]], [(t, "1") for t in ticks[2000:]], start=1
    )
    for book in (fast, pure):
        book.apply(snapshot)
    for version in range(2, 600):
        bids = [(rng.choice(ticks[:2000]), rng.choice(["0", "3", "0.5"])) for _ in range(10)]
        asks = [(rng.choice(ticks[2000:]), rng.choice(["0", "3", "0.5"])) for _ in range(10)]
        m = msg("update", version, bids, asks, start=version)
        assert fast.apply(m) == pure.apply(m)
        assert fast.top(10) == pure.top(10)
    assert state(fast) == state(pure)


@needs_c
@pytest.mark.parametrize(
    "level",
    [
        ["100.1", "2"],  # a list, not a tuple: handled in C
        ("100.1", "2", "3"),  # the pure code's ValueError
        ("100.1",),
        ("100.1", 2),  # not a str: the pure code's AttributeError
        (1001, "2"),
        (None, "0"),
        ("abc", "1"),  # float() raises
        ("abcdefghijklmnopq", "1"),  # long: Decimal() raises
        ("100.1", "abc"),  # a "non-zero" quantity that top() cannot read
        "ab",  # a string of two characters unpacks
        42,  # not iterable
    ],
)
def test_odd_levels_raise_what_the_pure_code_raises(level: Any) -> None:
    fast, pure = pair()
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, [("100.0", "1"), ("100.1", "1")], [("101", "1")], start=1))
    m = msg("update", 2, [("99.9", "4"), level, ("99.8", "5")], start=2)
    got = attempt(lambda: fast.apply(m))
    assert got == attempt(lambda: pure.apply(m))
    assert state(fast) == state(pure)
    assert attempt(lambda: fast.top(10)) == attempt(lambda: pure.top(10))


def _corrupt(book: BookState, how: str) -> None:
    side: Any = book._bids
    entry = side.by_str["100.1"]
    if how == "key missing from keys":
        side.keys.remove(entry[3])
    elif how == "keys cut short":  # its bisect position is past the end
        del side.keys[-2:]
    elif how == "key missing from by_key":
        del side.by_key[entry[3]]
    elif how == "entry is a tuple":
        side.by_str["100.1"] = side.by_key[entry[3]] = tuple(entry)
    elif how == "entry is short":
        side.by_str["100.1"] = side.by_key[entry[3]] = entry[:4]
    elif how == "no _fast":
        side._fast = None
    else:
        raise AssertionError(how)


@needs_c
@pytest.mark.parametrize(
    "how",
    [
        "key missing from keys",
        "keys cut short",
        "key missing from by_key",
        "entry is a tuple",
        "entry is short",
        "no _fast",
    ],
)
@pytest.mark.parametrize("qty", ["0", "5"])
def test_a_corrupted_side_fails_like_the_pure_code(how: str, qty: str) -> None:
    # Not a state the book can reach: the C code must not crash, and must do what the pure
    # code does (it hands such cases to it, or fails the same way).
    fast, pure = pair()
    levels = [("99.9", "1"), ("100.0", "1"), ("100.1", "1"), ("100.2", "1")]
    observed = []
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, levels, [("101", "1")], start=1))
        _corrupt(book, how)
        observed.append(
            (
                attempt(book._update, book._bids, [("99.8", "2"), ("100.1", qty), ("100.0", "3")]),
                attempt(book.top, 10),
                attempt(book.top, 2),
                book.levels(),
                list(book._bids.keys),
            )
        )
    assert observed[0] == observed[1]


@needs_c
@pytest.mark.parametrize("n", [-1, -3, 2.0, True, 10**30, -(10**30), "2"])
def test_best_with_an_odd_n_does_what_the_pure_code_does(n: Any) -> None:
    from sixmm.protocol import _bookside

    book = BookState("X", speedups=False)
    book.apply(msg("snapshot", 1, [("1", "1"), ("2", "2"), ("3", "3")], [("4", "1")], start=1))
    side = book._bids
    assert attempt(_bookside.best, side, n) == attempt(book_module._BookSide.best, side, n)
    with pytest.raises(TypeError):
        _bookside.best(side)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _bookside.update(side, [], [])  # type: ignore[call-arg]


@needs_c
@pytest.mark.parametrize("container", [list, tuple, iter])
@pytest.mark.parametrize("method", ["_set", "_remove_other_spelling"])
def test_an_exception_in_a_python_callback_propagates(
    method: str, container: Callable[[List[Any]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new spelling of a present level goes through _set, a zero for an unseen spelling
    # through _remove_other_spelling: the exception propagates, the levels before it stay
    # applied and the ones after it are not, exactly as in the pure code.
    def boom(self: Any, *args: Any) -> None:
        raise RuntimeError(f"boom {args[0]}")

    fast, pure = pair()
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, [("100.0", "1"), ("100.1", "1")], [("101", "1")], start=1))
    monkeypatch.setattr(book_module._BookSide, method, boom)
    qty = "0" if method == "_remove_other_spelling" else "3"
    levels = [("100.0", "2"), ("100.10", qty), ("100.0", "9")]
    # (DepthMsg holds lists; the C code iterates anything else with the iterator protocol)
    got = attempt(lambda: fast._update(fast._bids, container(levels)))
    assert got == ("raised", RuntimeError, "boom 100.10")
    assert got == attempt(lambda: pure._update(pure._bids, container(levels)))
    assert fast.levels() == pure.levels() == ({"100.0": "2", "100.1": "1"}, {"101": "1"})
    assert state(fast) == state(pure)
    m = msg("update", 2, levels, start=2)
    assert attempt(lambda: fast.apply(m)) == attempt(lambda: pure.apply(m))
    assert fast.version == pure.version == 1 and state(fast) == state(pure)


@needs_c
def test_c_and_pure_updates_mix_on_one_side() -> None:
    # Both work on the same objects: alternate them on one book, compare with a pure book.
    from sixmm.protocol import _bookside

    fast, pure = pair()
    mixed = BookState("X", speedups=False)
    levels = [("100.0", "1"), ("100.5", "2"), ("101.0", "3")]
    for book in (fast, pure, mixed):
        book.apply(msg("snapshot", 1, levels, [], start=1))
    changes = [
        [("100.0", "0"), ("100.2", "4")],
        [("100.50", "5"), ("100.7", "1")],
        [("100.2", "0.000"), ("100.5", "6")],
        [("100.00000000000000001", "1"), ("100.7", "2")],
        [("100.7", "0"), ("99", "1")],
    ]
    for i, change in enumerate(changes):
        side = mixed._bids
        if i % 2:
            _bookside.update(side, change)
        else:
            book_module._BookSide.update(side, change)
        fast._bids.update(change)  # the pure method on the C book's side: same objects
        pure._update(pure._bids, change)
        assert _bookside.best(mixed._bids, 10) == pure.top(10)[0] == fast.top(10)[0]
        assert state(mixed) == state(pure) == state(fast)


# -- reference counting --------------------------------------------------------------------------


@needs_c
def test_no_references_leak_on_the_hot_paths() -> None:
    from sixmm.protocol import _bookside

    book = BookState("X", speedups=True)
    book.apply(msg("snapshot", 1, [("100.0", "1")], [("101.0", "1")], start=1))
    side = book._bids
    price = "".join(["99.", "5"])  # objects only this test holds
    qty = "".join(["1.", "25"])
    level = (price, qty)
    held = [price, qty, level, side, book, side._fast, side.by_str, side.by_key, side.keys]

    def counts() -> List[int]:
        return [sys.getrefcount(obj) for obj in held]

    before = counts()
    for _ in range(100):
        _bookside.update(side, [level])  # a new level
        _bookside.best(side, 5)
        _bookside.update(side, [(price, "2")])  # a known level
        _bookside.best(side, 5)
        _bookside.update(side, [(price, "0")])  # a deletion
        _bookside.update(side, [level, ("99.50", "3"), ("99.5", "0")])  # _set, then delete
        _bookside.update(side, [("99.500", "0")])  # a zero for a level not there: nothing
    assert "99.5" not in side.by_str and len(side.keys) == 1
    assert counts() == before


@needs_c
def test_no_references_leak_in_the_c_apply() -> None:
    fast_apply = book_module.fast_apply
    book = BookState("X", speedups=True)
    book.apply(msg("snapshot", 10**6, [("100.0", "1")], [("101.0", "1")], start=1))
    held = [book, book._bids, book._asks, book._bids._fast, Outcome.APPLIED, Outcome.CROSSED]
    msgs = []
    for i in range(1, 201):
        v = 10**6 + i
        bids = [("99.5", "2"), ("99.5", "0")] if i % 2 else [("99.7", str(i))]
        msgs.append(msg("update", v, bids, [("101.0", str(i))], start=v))
    crossing = msg("update", 10**6 + 201, [("102.0", "1")], [], start=10**6 + 201)
    held += [m.end for m in msgs] + [crossing]

    def counts() -> List[int]:
        return [sys.getrefcount(obj) for obj in held]

    before = counts()
    for m in msgs:
        assert fast_apply(book, m) is Outcome.APPLIED
    assert fast_apply(book, crossing) is Outcome.CROSSED and not book.synced
    assert fast_apply(book, msgs[0]) is Outcome.IGNORED  # the method's answer
    book.version = None  # let go of the last endVersion it took
    assert counts() == before


@needs_c
def test_the_c_apply_leaves_a_subclass_to_the_method() -> None:
    class Traced(BookState):
        __slots__ = ("calls",)

        def apply(self, m: DepthMsg) -> Outcome:
            self.calls = getattr(self, "calls", 0) + 1
            return super().apply(m)

    book = Traced("X", speedups=True)
    book_module.fast_apply(book, msg("snapshot", 1, [("1.0", "1")], [("2.0", "1")], start=1))
    # BookState.apply itself ran (not the override: fast_apply is BookState.apply's twin)
    assert book.synced and not hasattr(book, "calls")
    assert book_module.fast_apply(book, msg("update", 2, [("1.5", "1")], start=2)) is (
        Outcome.APPLIED
    )
    assert book.top(1)[0][0][0] == Decimal("1.5")


@needs_c
def test_memory_stays_flat_over_a_long_churn() -> None:
    # A leaked float, list, tuple or Decimal per level change would grow the heap by
    # megabytes here. New levels go above the best bid: top() builds their Decimal pairs.
    book = BookState("X", speedups=True)
    book.apply(msg("snapshot", 1, [(f"{100 + i / 10:.1f}", "1") for i in range(200)], [], start=1))
    version = [1]

    def churn(rounds: int) -> None:
        for r in range(rounds):
            version[0] += 1
            new = [(f"{130 + i / 100:.2f}", f"{r % 7 + 1}") for i in range(20)]
            book.apply(msg("update", version[0], new, start=version[0]))
            assert len(book.top(25)[0]) == 25
            version[0] += 1
            gone = [(p, "0") for p, _ in new] + [("119.5", f"{r % 5 + 1}.5")]
            book.apply(msg("update", version[0], gone, start=version[0]))
            assert book.top(25)[0][4] == (Decimal("119.5"), Decimal(f"{r % 5 + 1}.5"))

    tracemalloc.start()
    try:
        churn(300)
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        churn(3000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    assert book.synced and book.depth() == (200, 0)
    assert grown < 64 * 1024, f"heap grew by {grown} bytes over 6,000 updates"


# -- which implementation runs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "in_use"),
    [
        ("_bookside", lambda: BookState("X").speedups),
        ("_depthfast", lambda: DEPTH_SPEEDUPS),
        ("_wirefast", lambda: models_module._c_trades is not None),
    ],
)
def test_speedups_loaded_when_required(module: str, in_use: Callable[[], bool]) -> None:
    # CI sets SIXMM_REQUIRE_SPEEDUPS=1: there, the C paths must be the ones under test.
    if os.environ.get("SIXMM_REQUIRE_SPEEDUPS") != "1":
        pytest.skip("SIXMM_REQUIRE_SPEEDUPS=1 is not set")
    try:
        importlib.import_module(f"sixmm.protocol.{module}")
        problem = "SIXMM_NO_EXTENSIONS=1 is set"
    except ImportError as exc:
        problem = f"the extension does not import: {exc}"
    assert in_use(), f"SIXMM_REQUIRE_SPEEDUPS=1 but {module} is not in use ({problem})"


def _child_env(disable: bool) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIXMM_")}
    if disable:
        env["SIXMM_NO_EXTENSIONS"] = "1"
    return env


def _child_speedups(env: Dict[str, str]) -> bool:
    code = "import sixmm.protocol.book as b; print(b.SPEEDUPS, b.BookState('X').speedups)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    fields = out.stdout.split()
    assert fields[0] == fields[1]
    return fields[0] == "True"


def _extension_importable() -> bool:
    try:
        importlib.import_module("sixmm.protocol._bookside")
    except ImportError:
        return False
    return True


def test_the_environment_variable_forces_the_pure_code() -> None:
    assert _child_speedups(_child_env(disable=True)) is False
    assert _child_speedups(_child_env(disable=False)) is _extension_importable()
    assert BookState("X", speedups=False).speedups is False
    assert BookState("X").speedups is SPEEDUPS
    if not SPEEDUPS:
        with pytest.raises(RuntimeError, match="not loaded"):
            BookState("X", speedups=True)


@pytest.fixture
def other_implementation() -> Iterator[Dict[str, str]]:
    """The environment of a child process running the implementation this one does not."""
    if SPEEDUPS:
        env = _child_env(disable=True)
    elif _extension_importable():
        env = _child_env(disable=False)
    else:
        pytest.skip("the C extension is not built: only the pure code can be tested")
    assert _child_speedups(env) is not SPEEDUPS
    yield env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_book_suites_pass_on_the_other_implementation(
    other_implementation: Dict[str, str],
) -> None:
    # This process runs the suites on the default implementation; a child runs them again
    # on the other one (pure Python if the C extension is loaded here, and vice versa).
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BOOK_SUITES],
        env=other_implementation,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout


def test_outcomes_are_the_same_enum() -> None:
    # The C path returns nothing itself: apply() answers with the shared Outcome members.
    fast = BookState("X")
    assert fast.apply(msg("snapshot", 1, [("1", "1")], [("2", "1")], start=1)) is Outcome.SNAPSHOT
    assert fast.top(1) == ([(Decimal("1"), Decimal("1"))], [(Decimal("2"), Decimal("1"))])


# -- the whole-book workload, prefetch and GC tracking (issue 16) --------------------------------


@needs_c
def test_the_whole_book_workload_agrees_with_collections_in_between() -> None:
    # bench/workload.py's load (per side 1 removal, 1 new level, 8 changes, 70% near the top):
    # the C update's prefetch pass and untracked entries give the pure book's results, and a
    # full collection in between frees nothing a book still holds.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # bench/ is not installed: the repository's copy
    from bench.workload import make_whole_book
    from sixmm.protocol.depth import parse_depth

    snapshot, updates = make_whole_book(2000, 400, seed=3)
    fast, pure = pair()
    for book in (fast, pure):
        book.apply(parse_depth(snapshot))
    for i, raw in enumerate(updates):
        m = parse_depth(raw, False, fast.known_prices())
        assert fast.apply(m) == pure.apply(parse_depth(raw)) == Outcome.APPLIED
        if i % 50 == 0:
            gc.collect()
            assert fast.top(20) == pure.top(20)
    assert state(fast) == state(pure)


@needs_c
def test_a_c_book_keeps_its_entries_out_of_the_cyclic_gc() -> None:
    fast, pure = pair()
    levels = [(f"{100 + i}.5", "1") for i in range(50)]
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, levels, [(f"{200 + i}.5", "1") for i in range(50)], start=1))
    side = fast._bids
    assert not any(gc.is_tracked(e) for e in side.by_str.values())
    assert not gc.is_tracked(side.by_str) and not gc.is_tracked(side.by_key)
    assert not gc.is_tracked(side.keys)
    # a new level from the C update: untracked, and the dicts stay untracked
    m = msg("update", 2, [("99.5", "2")], start=2)
    assert fast.apply(m) == pure.apply(m)
    assert not gc.is_tracked(side.by_str["99.5"]) and not gc.is_tracked(side.by_str)
    assert fast.top(60) == pure.top(60)  # Decimal pairs cached in the entries: no cycle either
    # another spelling goes through the Python _set: a tracked entry re-tracks the dict
    m = msg("update", 3, [("99.50", "4")], start=3)
    assert fast.apply(m) == pure.apply(m)
    assert gc.is_tracked(side.by_str)
    gc.collect()
    assert state(fast) == state(pure) and fast.top(100) == pure.top(100)
    # the pure book is never touched
    assert all(gc.is_tracked(e) for e in pure._bids.by_str.values())


@needs_c
def test_untrack_leaves_anything_but_book_entries_tracked() -> None:
    from sixmm.protocol import _bookside  # type: ignore[attr-defined]

    odd = [["1.5", "2", None, 1.5, None], ["2.5", "2", [], 2.5, None], ["x"]]
    d = {"a": odd[0], "b": odd[1], "c": odd[2]}
    _bookside.untrack(d)
    assert not gc.is_tracked(odd[0]) and gc.is_tracked(odd[1]) and gc.is_tracked(odd[2])
    assert gc.is_tracked(d)  # it holds something the GC must see
    keys = [1.0, 2.0, Decimal("3")]
    _bookside.untrack(keys)
    assert not gc.is_tracked(keys)
    mixed = [1.0, []]
    _bookside.untrack(mixed)
    assert gc.is_tracked(mixed)
    with pytest.raises(TypeError):
        _bookside.untrack(())


@needs_c
def test_a_c_snapshot_load_never_tracks_an_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A resync storm loads hundreds of snapshots in a burst: the C load makes its entries
    # untracked from the start (the pure code's are tracked until the side is loaded), with
    # the pure code's result, the odd levels (zero, repeated, other spelling) included.
    from sixmm.protocol.book import _BookSide

    seen: List[Tuple[bool, int]] = []
    original = _BookSide._loaded

    def loaded(side: Any) -> None:  # before the end-of-load untrack
        seen.append((side is fast._bids, sum(gc.is_tracked(e) for e in side.by_str.values())))
        original(side)

    monkeypatch.setattr(_BookSide, "_loaded", loaded)
    levels = [(f"{100 + i}.5", "1") for i in range(3000)]
    odd = [("50.5", "0"), ("99.5", "2"), ("99.5", "3"), ("98.50", "1"), ("98.5", "4")]
    fast, pure = pair()
    for book in (fast, pure):
        book.apply(msg("snapshot", 1, levels + odd, [(f"{9000 + i}.5", "1") for i in range(9)]))
    assert (True, 0) in seen and (False, 3002) in seen  # bids of the C book / the pure one
    assert state(fast) == state(pure) and fast.top(20) == pure.top(20)
    assert not any(gc.is_tracked(e) for e in fast._bids.by_str.values())


@needs_c
def test_the_c_apply_sets_the_end_version_it_read_before_python_code_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another spelling of a present level goes through side._set (Python); a _set that
    # rewrites the message must not change the version set, as in the pure code.
    original = book_module._BookSide._set
    victim: List[DepthMsg] = []

    def meddling_set(self: Any, *args: Any) -> Any:
        if victim:
            victim[0].end = 999
        return original(self, *args)

    monkeypatch.setattr(book_module._BookSide, "_set", meddling_set)
    results = []
    for speedups in (True, False):
        book = BookState("X", speedups=speedups)
        book.apply(msg("snapshot", 1, [("100.0", "1")], [("101.0", "1")], start=1))
        m = msg("update", 2, [("100.00", "2")], start=2)  # another spelling of 100.0
        victim[:] = [m]
        outcome = book_module.fast_apply(book, m)
        results.append((outcome, book.version, book.levels(), book.applied))
    assert results[0] == results[1] == (Outcome.APPLIED, 2, ({"100.00": "2"}, {"101.0": "1"}), 1)
