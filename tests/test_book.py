"""BookState: each PROTOCOL.md §4.1 rule, and property tests against a naive reference book."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.errors import ProtocolError
from sixmm.protocol.book import BookState, Outcome
from sixmm.protocol.depth import DepthMsg, parse_depth

D = Decimal
Levels = Sequence[Tuple[str, str]]


def snap(
    end: int, bids: Levels = (), asks: Levels = (), kind: Optional[str] = "snapshot"
) -> DepthMsg:
    return DepthMsg(symbol="X", kind=kind, start=end, end=end, bids=list(bids), asks=list(asks))


def upd(
    start: Optional[int],
    end: int,
    bids: Levels = (),
    asks: Levels = (),
    prev: Optional[int] = None,
    kind: Optional[str] = "update",
) -> DepthMsg:
    return DepthMsg(
        symbol="X", kind=kind, start=start, end=end, prev=prev, bids=list(bids), asks=list(asks)
    )


def synced_book(version: int = 10) -> BookState:
    book = BookState("X")
    assert (
        book.apply(snap(version, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")]))
        is Outcome.SNAPSHOT
    )
    return book


# -- snapshots ----------------------------------------------------------------------------------


def test_new_book_is_unsynced_and_ignores_updates() -> None:
    book = BookState("X")
    assert not book.synced and book.version is None
    assert book.apply(upd(1, 1, [("1", "1")])) is Outcome.IGNORED
    assert book.ignored == 1 and book.levels() == ({}, {})
    assert book.top() == ([], []) and book.best_bid() is None and book.best_ask() is None


def test_snapshot_sets_levels_version_and_sync() -> None:
    book = synced_book(10)
    assert book.synced and book.verified and book.version == 10 and book.snapshots == 1
    assert book.top() == (
        [(D("100"), D("1")), (D("99"), D("2"))],
        [(D("101"), D("1")), (D("102"), D("3"))],
    )
    assert book.best_bid() == (D("100"), D("1")) and book.best_ask() == (D("101"), D("1"))
    assert book.levels() == ({"100": "1", "99": "2"}, {"101": "1", "102": "3"})
    assert book.depth() == (2, 2)


def test_snapshot_replaces_everything_and_skips_zero_levels() -> None:
    book = synced_book()
    assert book.apply(snap(50, [("90", "1"), ("91", "0")], [("95", "2")])) is Outcome.SNAPSHOT
    assert book.levels() == ({"90": "1"}, {"95": "2"}) and book.version == 50


def test_snapshot_may_go_backwards_in_version() -> None:
    book = synced_book(10)
    assert book.apply(snap(3, [("1", "1")])) is Outcome.SNAPSHOT
    assert book.version == 3 and book.synced


def test_top_ordering_and_n() -> None:
    book = BookState("X")
    bids = [("10.5", "1"), ("9", "1"), ("10.25", "2"), ("3", "1")]
    asks = [("12", "1"), ("11", "4"), ("100", "1"), ("11.5", "1")]
    book.apply(snap(1, bids, asks))
    top_bids, top_asks = book.top(3)
    assert [p for p, _ in top_bids] == [D("10.5"), D("10.25"), D("9")]
    assert [p for p, _ in top_asks] == [D("11"), D("11.5"), D("12")]
    assert book.top(0) == ([], [])
    assert len(book.top(100)[0]) == 4
    with pytest.raises(ValueError):
        book.top(-1)


# -- continuity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1, 5, 10, 11])
def test_first_update_after_snapshot_may_overlap(start: int) -> None:
    book = synced_book(10)
    assert book.apply(upd(start, 12, [("100", "5")])) is Outcome.APPLIED
    assert book.version == 12 and book.best_bid() == (D("100"), D("5"))


def test_first_update_after_snapshot_gap() -> None:
    book = synced_book(10)
    assert book.apply(upd(12, 13, [("100", "5")])) is Outcome.GAP
    assert not book.synced and book.gaps == 1 and book.version == 10
    assert book.best_bid() == (D("100"), D("1"))  # nothing of the gapped update applied


def test_later_updates_must_be_contiguous() -> None:
    book = synced_book(10)
    assert book.apply(upd(5, 12)) is Outcome.APPLIED
    assert book.apply(upd(13, 15)) is Outcome.APPLIED
    assert book.apply(upd(15, 16)) is Outcome.GAP  # overlapping is only allowed first
    assert book.version == 15 and not book.synced


def test_later_update_gap_then_ignored_until_snapshot() -> None:
    book = synced_book(10)
    assert book.apply(upd(11, 11)) is Outcome.APPLIED
    assert book.apply(upd(13, 13)) is Outcome.GAP
    assert book.apply(upd(14, 14)) is Outcome.IGNORED
    assert book.apply(upd(12, 12)) is Outcome.IGNORED
    assert (book.gaps, book.ignored, book.applied) == (1, 2, 1)
    assert book.apply(snap(20, [("1", "1")])) is Outcome.SNAPSHOT
    assert book.apply(upd(18, 21)) is Outcome.APPLIED  # first after the new snapshot


@pytest.mark.parametrize("end", [9, 10])
def test_stale_updates_are_dropped_and_counted(end: int) -> None:
    book = synced_book(10)
    assert book.apply(upd(end, end, [("100", "7")])) is Outcome.STALE
    assert book.stale == 1 and book.synced and book.best_bid() == (D("100"), D("1"))


def test_stale_duplicate_after_apply_keeps_first_flag_semantics() -> None:
    book = synced_book(10)
    assert book.apply(upd(8, 9)) is Outcome.STALE  # stale: still the first update to come
    assert book.apply(upd(9, 11)) is Outcome.APPLIED
    assert book.apply(upd(9, 11)) is Outcome.STALE  # duplicate
    assert book.apply(upd(12, 12)) is Outcome.APPLIED


def test_predecessor_variant() -> None:
    book = synced_book(10)
    assert book.apply(upd(None, 12, prev=10, bids=[("100", "2")])) is Outcome.APPLIED
    assert book.apply(upd(None, 13, prev=12)) is Outcome.APPLIED
    assert book.apply(upd(None, 13, prev=12)) is Outcome.STALE
    assert book.verified
    assert book.apply(upd(None, 15, prev=14)) is Outcome.GAP
    assert not book.synced


def test_predecessor_first_update_must_match_exactly() -> None:
    book = synced_book(10)
    assert book.apply(upd(None, 12, prev=9)) is Outcome.GAP


def test_start_version_wins_over_predecessor() -> None:
    book = synced_book(10)
    assert book.apply(upd(11, 12, prev=3)) is Outcome.APPLIED


def test_unverified_variant() -> None:
    book = synced_book(10)
    assert book.apply(upd(None, 50, [("100", "9")])) is Outcome.APPLIED
    assert book.synced and not book.verified and book.unverified_applied == 1 and book.version == 50
    assert book.apply(upd(None, 50)) is Outcome.STALE
    assert book.apply(upd(51, 51)) is Outcome.APPLIED  # continuity fields are checked again
    assert not book.verified  # ... but the book stays unverified until a snapshot
    assert book.apply(snap(60)) is Outcome.SNAPSHOT
    assert book.verified


def test_update_without_end_version_is_a_bug() -> None:
    book = synced_book(10)
    with pytest.raises(ValueError):
        book.apply(DepthMsg(kind="update", start=11))
    with pytest.raises(ValueError):
        book.apply(DepthMsg(kind="snapshot"))


# -- levels -------------------------------------------------------------------------------------


def test_quantity_zero_removes_and_absent_removal_is_harmless() -> None:
    book = synced_book(10)
    assert (
        book.apply(upd(11, 11, [("100", "0"), ("42", "0.000")], [("500", "0")])) is Outcome.APPLIED
    )
    assert book.levels() == ({"99": "2"}, {"101": "1", "102": "3"})
    assert book.depth() == (1, 2)


def test_same_value_different_spelling_is_one_level() -> None:
    book = BookState("X")
    book.apply(snap(1, [("85000.1", "1")], [("85000.2", "1")]))
    assert str(book.top()[0][0][0]) == "85000.1"
    book.apply(upd(2, 2, [("85000.10", "3")], [("85000.200", "0")]))
    assert book.levels() == ({"85000.10": "3"}, {})
    assert book.top() == ([(D("85000.10"), D("3"))], [])
    assert str(book.top()[0][0][0]) == "85000.10"  # the Decimal follows the latest spelling


def test_spellings_inside_one_snapshot() -> None:
    book = BookState("X")
    book.apply(snap(1, [("1", "1"), ("1.0", "2"), ("2", "1"), ("2.00", "0"), ("3", "0")]))
    assert book.levels() == ({"1.0": "2"}, {})
    assert book.depth() == (1, 0)


def test_more_than_15_digits_switches_to_exact_keys() -> None:
    book = BookState("X")
    book.apply(snap(1, [("1", "1"), ("0.5", "1")], [("3", "1")]))
    assert not book.exact_keys
    # 17 significant digits: the same double as "1", yet a different price
    assert book.apply(upd(2, 2, [("1.0000000000000001", "2")])) is Outcome.APPLIED
    assert book.exact_keys
    assert book.levels()[0] == {"1": "1", "0.5": "1", "1.0000000000000001": "2"}
    assert [p for p, _ in book.top()[0]] == [D("1.0000000000000001"), D("1"), D("0.5")]
    book.apply(
        upd(3, 3, [("1.00000000000000010", "0"), ("1.0", "0")], [("2.00000000000000000001", "1")])
    )
    assert book.levels() == ({"0.5": "1"}, {"3": "1", "2.00000000000000000001": "1"})
    assert book.best_ask() == (D("2.00000000000000000001"), D("1"))
    assert book.apply(snap(4, [("1", "1")], [("2", "1")])) is Outcome.SNAPSHOT
    assert not book.exact_keys  # a plain snapshot goes back to float keys


def test_exact_keys_from_a_snapshot() -> None:
    book = BookState("X")
    book.apply(snap(1, [("1.0000000000000001", "1"), ("1", "2")], [("2.0000000000000001", "1")]))
    assert book.exact_keys and book.depth() == (2, 1)
    assert [p for p, _ in book.top()[0]] == [D("1.0000000000000001"), D("1")]


def test_trailing_zeros_do_not_count_as_significant() -> None:
    book = BookState("X")
    book.apply(snap(1, [("85000.100000000000", "1")], [("900000000000000000", "1")]))
    assert not book.exact_keys


def test_top_reuses_decimals_until_the_level_changes() -> None:
    book = synced_book(10)
    first = book.top()[0][0]
    assert book.top()[0][0] is first
    book.apply(upd(11, 11, [("100", "4")]))
    changed = book.top()[0][0]
    assert changed == (D("100"), D("4"))
    assert changed[0] is first[0]  # only the quantity changed: the price Decimal is kept
    assert book.top()[0][0] is changed


# -- crossed books ------------------------------------------------------------------------------


@pytest.mark.parametrize("ask", ["100", "99.5"])
def test_crossed_update_unsyncs(ask: str) -> None:
    book = synced_book(10)
    assert book.apply(upd(11, 11, asks=[(ask, "1")])) is Outcome.CROSSED
    assert not book.synced and book.crossed == 1
    assert book.version == 11  # applied, then detected
    assert book.apply(upd(12, 12)) is Outcome.IGNORED


def test_crossed_snapshot() -> None:
    book = BookState("X")
    assert book.apply(snap(5, [("10", "1")], [("9", "1")])) is Outcome.CROSSED
    assert not book.synced and book.crossed == 1
    assert book.apply(snap(6, [("8", "1")], [("9", "1")])) is Outcome.SNAPSHOT


def test_one_sided_book_is_not_crossed() -> None:
    book = BookState("X")
    assert book.apply(snap(1, [("10", "1")])) is Outcome.SNAPSHOT
    assert book.apply(upd(2, 2, asks=[("10.1", "1")])) is Outcome.APPLIED


# -- the "no type" variant ----------------------------------------------------------------------


def test_untyped_messages_before_the_ack_are_ignored() -> None:
    book = BookState("X")
    assert book.apply(snap(5, [("1", "1")], kind=None)) is Outcome.IGNORED
    book.expect_snapshot()
    assert book.expecting_snapshot
    assert book.apply(snap(7, [("2", "1")], kind=None)) is Outcome.SNAPSHOT
    assert not book.expecting_snapshot
    assert book.levels() == ({"2": "1"}, {}) and book.version == 7
    assert book.apply(upd(8, 8, [("2", "5")], kind=None)) is Outcome.APPLIED  # now an update
    assert book.levels() == ({"2": "5"}, {})


def test_typed_snapshot_disarms() -> None:
    book = BookState("X")
    book.expect_snapshot()
    assert book.apply(snap(3)) is Outcome.SNAPSHOT
    assert book.apply(upd(4, 4, kind=None)) is Outcome.APPLIED


def test_armed_untyped_message_is_the_snapshot_even_when_synced() -> None:
    book = synced_book(10)
    book.expect_snapshot()
    assert book.apply(upd(3, 4, [("7", "1")], kind=None)) is Outcome.SNAPSHOT
    assert book.levels() == ({"7": "1"}, {}) and book.version == 4


def test_invalidate_unsyncs_and_disarms() -> None:
    book = synced_book(10)
    book.expect_snapshot()
    book.invalidate()
    assert not book.synced and not book.expecting_snapshot
    assert book.apply(upd(11, 11, kind=None)) is Outcome.IGNORED
    assert book.apply(upd(11, 11)) is Outcome.IGNORED


def test_gap_disarms() -> None:
    book = synced_book(10)
    book.expect_snapshot()
    book.apply(snap(20, kind=None))
    book.expect_snapshot()
    assert book.apply(upd(25, 25)) is Outcome.GAP
    assert not book.expecting_snapshot


def test_counters_and_repr() -> None:
    book = synced_book(10)
    book.apply(upd(11, 11))
    book.apply(upd(11, 11))
    book.apply(upd(None, 12))
    book.apply(upd(20, 20))
    book.apply(upd(21, 21))
    assert book.counters() == {
        "applied": 2,
        "stale": 1,
        "gaps": 1,
        "crossed": 0,
        "ignored": 1,
        "snapshots": 1,
        "unverified_applied": 1,
    }
    assert repr(book) == "BookState('X', version=12, synced=False, bids=2, asks=2)"


# -- the reference model and the property tests -------------------------------------------------


class RefBook:
    """Naive reference: Decimal-keyed dicts, sorted on every read; the rules as PROTOCOL.md says."""

    def __init__(self) -> None:
        self.bids: Dict[Decimal, Tuple[str, str]] = {}
        self.asks: Dict[Decimal, Tuple[str, str]] = {}
        self.version: Optional[int] = None
        self.synced = False
        self.verified = False
        self.first = False
        self.armed = False
        self.counts = {
            "applied": 0,
            "stale": 0,
            "gaps": 0,
            "crossed": 0,
            "ignored": 0,
            "snapshots": 0,
        }
        self.counts["unverified_applied"] = 0

    def _levels(self, msg: DepthMsg) -> None:
        for side, levels in ((self.bids, msg.bids), (self.asks, msg.asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)

    def _crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def _unsync(self, counter: str, outcome: str) -> str:
        self.counts[counter] += 1
        self.synced = self.armed = self.first = False
        return outcome

    def apply(self, msg: DepthMsg) -> str:
        if msg.kind == "snapshot" or (msg.kind is None and self.armed):
            self.bids, self.asks = {}, {}
            self._levels(msg)
            self.version, self.armed, self.first, self.verified = msg.end, False, True, True
            self.counts["snapshots"] += 1
            if self._crossed():
                return self._unsync("crossed", "crossed")
            self.synced = True
            return "snapshot"
        if not self.synced:
            self.counts["ignored"] += 1
            return "ignored"
        v = self.version
        assert v is not None and msg.end is not None
        if msg.end <= v:
            self.counts["stale"] += 1
            return "stale"
        if msg.start is not None:
            ok = msg.start <= v + 1 <= msg.end if self.first else msg.start == v + 1
        elif msg.prev is not None:
            ok = msg.prev == v
        else:
            ok = True
            self.verified = False
            self.counts["unverified_applied"] += 1
        if not ok:
            return self._unsync("gaps", "gap")
        self._levels(msg)
        self.version, self.first = msg.end, False
        self.counts["applied"] += 1
        if self._crossed():
            return self._unsync("crossed", "crossed")
        return "applied"

    def top(self, n: int) -> Tuple[List[Tuple[Decimal, Decimal]], List[Tuple[Decimal, Decimal]]]:
        bids = [(p, Decimal(self.bids[p][1])) for p in sorted(self.bids, reverse=True)[:n]]
        asks = [(p, Decimal(self.asks[p][1])) for p in sorted(self.asks)[:n]]
        return bids, asks

    def levels(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        return dict(self.bids.values()), dict(self.asks.values())


# Several spellings of the same value, and prices beyond float precision.
BID_PRICES = ["1", "1.0", "1.5", "1.50", "2", "2.25", "3", "3.000", "0.1", "0.10"]
BID_PRICES += ["1.0000000000000001", "1.00000000000000010", "1.0000000000000002", "85000.1"]
ASK_PRICES = ["4", "4.0", "4.5", "5", "5.75", "6", "7.00", "4.00000000000000001", "90000"]
CROSSING_ASKS = ["3", "2.5", "1.5"]
QTYS = ["0", "0.000", "1", "2.5", "3.00", "0.001", "10"]


def check_same(book: BookState, ref: RefBook) -> None:
    assert book.version == ref.version
    assert book.synced == ref.synced
    assert book.verified == ref.verified
    assert book.expecting_snapshot == ref.armed
    assert book.counters() == ref.counts
    assert book.levels() == ref.levels()
    for n in (0, 1, 3, 1000):
        ours = book.top(n)
        assert ours == ref.top(n), n
    bids, asks = ref.top(1)
    assert book.best_bid() == (bids[0] if bids else None)
    assert book.best_ask() == (asks[0] if asks else None)


def draw_levels(draw: Any, prices: List[str], max_size: int = 5) -> List[Tuple[str, str]]:
    levels: List[Tuple[str, str]] = draw(
        st.lists(st.tuples(st.sampled_from(prices), st.sampled_from(QTYS)), max_size=max_size)
    )
    return levels


def draw_message(draw: Any, ref: RefBook) -> Dict[str, Any]:
    """A wire payload whose versions are chosen around the reference's version."""
    v = ref.version if ref.version is not None else 0
    mode = draw(st.sampled_from(["next", "next", "next", "overlap", "stale", "gap", "random"]))
    length = draw(st.integers(0, 3))
    if mode == "next":
        start = v + 1
    elif mode == "overlap":
        start = max(0, v - draw(st.integers(0, 3)))
        length += v + 1 - start
    elif mode == "stale":
        start = max(0, v - draw(st.integers(0, 4)))
        length = max(0, min(length, v - start))
    elif mode == "gap":
        start = v + draw(st.integers(2, 4))
    else:
        start = draw(st.integers(0, v + 5))
    end = start + length
    data: Dict[str, Any] = {"endVersion": end}
    continuity = draw(st.sampled_from(["start", "start", "start", "prev", "last", "none"]))
    if continuity == "start":
        data["startVersion"] = str(start) if draw(st.booleans()) else start
    elif continuity in ("prev", "last") and end > 0:
        prev = draw(st.sampled_from([v, v, max(0, v - 1), v + 1, start - 1]))
        data["prevEndVersion" if continuity == "prev" else "lastEndVersion"] = prev
    crossing = draw(st.integers(0, 9)) == 0
    data["bids"] = draw_levels(draw, BID_PRICES)
    data["asks"] = draw_levels(draw, ASK_PRICES + (CROSSING_ASKS if crossing else []))
    return data


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_book_matches_reference(data: Any) -> None:
    draw = data.draw
    book = BookState("X")
    ref = RefBook()
    for _ in range(draw(st.integers(1, 30))):
        op = draw(st.sampled_from(["update"] * 6 + ["snapshot", "untyped", "arm", "invalidate"]))
        if op == "arm":
            book.expect_snapshot()
            ref.armed = True
        elif op == "invalidate":
            book.invalidate()
            ref.synced = ref.armed = ref.first = False
        else:
            wire = draw_message(draw, ref)
            if op == "snapshot":
                wire["type"] = "snapshot"
                wire["bids"] = draw_levels(draw, BID_PRICES, 12)
            elif op == "update":
                wire["type"] = "update"
            try:
                msg = parse_depth(wire)
            except ProtocolError:
                continue  # e.g. prevEndVersion >= endVersion: never reaches a book
            outcome = book.apply(msg)
            assert outcome.value == ref.apply(msg), (wire, outcome)
        check_same(book, ref)


def _random_stream(rng: random.Random, levels: int, steps: int) -> List[DepthMsg]:
    """A long contiguous stream over a wide price range, with deletions and duplicates."""
    ticks = [f"{85000 + i / 10:.1f}" for i in range(-levels, levels)]
    mid = len(ticks) // 2
    msgs = [
        snap(
            100,
            [(ticks[i], "1") for i in range(mid - levels // 2, mid)],
            [(ticks[i], "1") for i in range(mid, mid + levels // 2)],
        )
    ]
    version = 100
    for _ in range(steps):
        bids = [
            (ticks[rng.randrange(0, mid)], rng.choice(QTYS)) for _ in range(rng.randrange(0, 12))
        ]
        asks = [
            (ticks[rng.randrange(mid, len(ticks))], rng.choice(QTYS))
            for _ in range(rng.randrange(0, 12))
        ]
        if rng.random() < 0.05:  # an alternative spelling of a present price
            bids.append((ticks[rng.randrange(0, mid)] + "0", "2"))
        msgs.append(upd(version + 1, version + 1, bids, asks))
        version += 1
        if rng.random() < 0.05:
            msgs.append(msgs[-1])  # duplicate: stale
    return msgs


@pytest.mark.parametrize("exact", [False, True])
def test_long_random_stream_matches_reference(exact: bool) -> None:
    rng = random.Random(7)
    book = BookState("X")
    ref = RefBook()
    msgs = _random_stream(rng, 400, 3000)
    if exact:  # one deep level beyond float precision: the whole stream runs on Decimal keys
        msgs[0].bids.append(("1.00000000000000001", "5"))
    for i, msg in enumerate(msgs):
        assert book.apply(msg).value == ref.apply(msg)
        if i % 50 == 0 or exact:
            assert book.top(10) == ref.top(10)
    assert book.exact_keys is exact
    check_same(book, ref)
    assert book.applied == 3000 and book.stale > 0 and book.synced


def test_known_prices_follow_the_levels_and_stay_the_same_objects() -> None:
    book = synced_book()
    known = book.known_prices()
    assert set(known[0]) == {"100", "99"} and set(known[1]) == {"101", "102"}
    book.apply(upd(11, 11, [("100", "0"), ("98.50", "1")], [("101.0", "2")]))
    assert known == book.known_prices()  # live: the same containers
    assert set(known[0]) == {"99", "98.50"} and set(known[1]) == {"101.0", "102"}
    assert set(known[0]) == set(book.levels()[0]) and set(known[1]) == set(book.levels()[1])
    book.apply(snap(20, [("5", "1")], [("6", "1")]))
    assert known[0] is book.known_prices()[0] and set(known[0]) == {"5"}
    assert set(known[1]) == {"6"}


@pytest.mark.parametrize("in_snapshot", [True, False])
def test_sixteen_digit_integers_are_not_merged(in_snapshot: bool) -> None:
    # 2**53 + 1 and 2**53 are the same double; 16 characters, no ".", 16 significant digits.
    a, b = "9007199254740993", "9007199254740992"
    book = BookState("X")
    if in_snapshot:
        book.apply(snap(1, [(a, "1"), (b, "2")], [("9007199254740999", "1")]))
    else:
        book.apply(snap(1, [(b, "2")], [("9007199254740999", "1")]))
        assert book.apply(upd(2, 2, [(a, "1")])) is Outcome.APPLIED
    assert book.exact_keys
    assert book.levels()[0] == {a: "1", b: "2"}
    assert book.top()[0] == [(D(a), D("1")), (D(b), D("2"))]


@pytest.mark.parametrize("exact", [False, True])
def test_sorted_keys_stay_exact_near_and_far_from_the_best(exact: bool) -> None:
    # The sorted key lists (insort/del by bisect) against the level dicts after every update,
    # with changes near the best (the end of the lists) and anywhere in a 300-level side.
    rng = random.Random(3)
    book = BookState("X")
    ticks = [f"{85000 + i / 10:.1f}" for i in range(-300, 300)]
    extra = [("1.00000000000000001", "1")] if exact else []
    book.apply(snap(1, [(t, "1") for t in ticks[:300]] + extra, [(t, "1") for t in ticks[300:]]))
    assert book.exact_keys is exact
    for version in range(2, 400):
        near = rng.random() < 0.7
        bids = [
            (ticks[rng.randrange(230 if near else 0, 300)], rng.choice(["0", "2", "0.5"]))
            for _ in range(8)
        ]
        asks = [
            (ticks[rng.randrange(300, 370 if near else 600)], rng.choice(["0", "2", "0.5"]))
            for _ in range(8)
        ]
        book.apply(upd(version, version, bids, asks))
        for side in (book._bids, book._asks):
            assert side.keys == sorted(side.by_key)
            assert len(side.keys) == len(side.by_str)
    bids, asks = book.levels()
    assert book.top(1000)[0] == sorted(
        ((D(p), D(q)) for p, q in bids.items()), key=lambda pq: pq[0], reverse=True
    )
    assert book.top(1000)[1] == sorted(
        ((D(p), D(q)) for p, q in asks.items()), key=lambda pq: pq[0]
    )
