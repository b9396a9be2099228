"""The live OrderBook: sync transitions, wait_synced, stats, and consistent reads under threads."""

from __future__ import annotations

import random
import sys
import threading
from decimal import Decimal
from typing import Iterator, List, Optional, Sequence, Tuple

import pytest

from sixmm.orderbook import OrderBook
from sixmm.protocol.book import Outcome
from sixmm.protocol.depth import DepthMsg

from .helpers import wait_until

D = Decimal
Levels = Sequence[Tuple[str, str]]


def snap(
    end: int,
    bids: List[Tuple[str, str]],
    asks: List[Tuple[str, str]],
    kind: Optional[str] = "snapshot",
) -> DepthMsg:
    return DepthMsg(symbol="BTCUSDT", kind=kind, start=end, end=end, bids=bids, asks=asks)


def upd(start: int, end: int, bids: Levels = (), asks: Levels = ()) -> DepthMsg:
    return DepthMsg(
        symbol="BTCUSDT", kind="update", start=start, end=end, bids=list(bids), asks=list(asks)
    )


@pytest.fixture
def book() -> OrderBook:
    return OrderBook("BTCUSDT")


def synced(book: OrderBook, version: int = 10) -> OrderBook:
    assert (
        book._feed(snap(version, [("100", "1"), ("99", "2")], [("101", "1")])) is Outcome.SNAPSHOT
    )
    return book


class Threads:
    """Named sixmm-test threads that are always joined."""

    def __init__(self) -> None:
        self.threads: List[threading.Thread] = []

    def start(self, target: object, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"sixmm-test-{name}", daemon=True)  # type: ignore[arg-type]
        self.threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float = 10.0) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name} did not finish"


@pytest.fixture
def threads() -> Iterator[Threads]:
    owner = Threads()
    try:
        yield owner
    finally:
        owner.join()


# -- state and reads ----------------------------------------------------------------------------


def test_new_book(book: OrderBook) -> None:
    assert book.symbol == "BTCUSDT"
    assert book.version is None and not book.synced and not book.verified
    assert book.best_bid() is None and book.best_ask() is None
    assert book.top() == ([], []) and book.levels() == ({}, {})
    assert repr(book) == "<OrderBook BTCUSDT version=None synced=False>"


def test_reads_after_snapshot_and_update(book: OrderBook) -> None:
    synced(book)
    assert (
        book._feed(upd(11, 11, [("100.5", "3")], [("101", "0"), ("102", "4")])) is Outcome.APPLIED
    )
    assert book.version == 11 and book.synced and book.verified
    assert book.best_bid() == (D("100.5"), D("3")) and book.best_ask() == (D("102"), D("4"))
    assert book.top(2) == ([(D("100.5"), D("3")), (D("100"), D("1"))], [(D("102"), D("4"))])
    assert book.levels() == ({"100.5": "3", "100": "1", "99": "2"}, {"102": "4"})
    view = book.view(1)
    assert view == {
        "version": 11,
        "synced": True,
        "verified": True,
        "bids": [(D("100.5"), D("3"))],
        "asks": [(D("102"), D("4"))],
    }
    assert "version=11 synced=True" in repr(book)


def test_stats(book: OrderBook) -> None:
    synced(book)
    book._feed(upd(11, 11))
    book._feed(upd(11, 11))  # stale
    book._feed(upd(13, 13))  # gap
    book._feed(upd(14, 14))  # ignored
    book._begin_resync("gap")
    stats = book.stats()
    assert stats == {
        "version": 11,
        "synced": False,
        "verified": True,
        "resyncs": 1,
        "stale_drops": 1,
        "gaps": 1,
        "crossed": 0,
        "applied": 1,
        "ignored": 1,
        "snapshots": 1,
        "unverified_applied": 0,
        "bid_levels": 2,
        "ask_levels": 1,
    }


# -- synced transitions -------------------------------------------------------------------------


def test_gap_unsyncs_until_the_next_snapshot(
    book: OrderBook, caplog: pytest.LogCaptureFixture
) -> None:
    synced(book)
    with caplog.at_level("INFO", logger="sixmm.orderbook"):
        assert book._feed(upd(12, 12)) is Outcome.GAP
    assert not book.synced
    assert "gap (book at 10, update start=12 prev=None end=12)" in caplog.text
    assert "BTCUSDT" in caplog.text
    assert book._feed(upd(13, 13)) is Outcome.IGNORED
    synced(book, 20)
    assert book.synced and book.version == 20


def test_crossed_unsyncs(book: OrderBook, caplog: pytest.LogCaptureFixture) -> None:
    synced(book)
    with caplog.at_level("INFO", logger="sixmm.orderbook"):
        assert book._feed(upd(11, 11, asks=[("99.5", "1")])) is Outcome.CROSSED
    assert not book.synced and book.stats()["crossed"] == 1
    assert "crossed" in caplog.text


def test_invalidate_and_begin_resync(book: OrderBook) -> None:
    synced(book)
    book._invalidate("connection lost")
    assert not book.synced and book.stats()["resyncs"] == 0
    assert book._feed(upd(11, 11)) is Outcome.IGNORED
    book._begin_resync("reconnect")
    assert book.stats()["resyncs"] == 1
    synced(book, 30)
    assert book.synced


def test_expect_snapshot_for_untyped_streams(book: OrderBook) -> None:
    untyped = snap(5, [("1", "1")], [("2", "1")], kind=None)
    assert book._feed(untyped) is Outcome.IGNORED  # before the ack
    book._expect_snapshot()
    assert book._feed(untyped) is Outcome.SNAPSHOT
    assert book.synced and book.version == 5
    book._begin_resync("gap")
    assert book._feed(snap(9, [], [], kind=None)) is Outcome.IGNORED  # the resync disarmed it
    assert not book.synced


def test_bad_payload_while_synced_asks_for_a_resync(book: OrderBook) -> None:
    synced(book)
    assert book._bad_payload("bad price") is True
    assert not book.synced and book.stats()["resyncs"] == 0
    assert book._feed(upd(11, 11)) is Outcome.IGNORED


def test_bad_payload_while_awaiting_an_untyped_snapshot(book: OrderBook) -> None:
    book._expect_snapshot()
    assert book._bad_payload("the snapshot was malformed") is True
    # the next untyped message is an update, not the snapshot: it must not sync the book
    assert book._feed(snap(12, [("1", "1")], [], kind=None)) is Outcome.IGNORED
    assert not book.synced


def test_bad_payload_while_unsynced_and_unarmed(book: OrderBook) -> None:
    assert book._bad_payload("noise") is False


# -- wait_synced --------------------------------------------------------------------------------


def test_wait_synced_times_out_when_unsynced(book: OrderBook) -> None:
    assert book.wait_synced(timeout=0.05) is False
    assert book.wait_synced(timeout=0) is False


def test_wait_synced_returns_at_once_when_synced(book: OrderBook) -> None:
    synced(book)
    assert book.wait_synced(timeout=0) is True
    assert book.wait_synced() is True


def test_wait_synced_wakes_on_snapshot_from_another_thread(
    book: OrderBook, threads: Threads
) -> None:
    results: List[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        results.append(book.wait_synced(timeout=10))

    for i in range(3):
        threads.start(waiter, f"waiter-{i}")
    assert started.wait(5)
    book._feed(upd(1, 1))  # an ignored update does not wake them up for good
    synced(book)
    threads.join()
    assert results == [True, True, True]


def test_wait_synced_after_resync(book: OrderBook, threads: Threads) -> None:
    synced(book)
    book._begin_resync("gap")
    results: List[bool] = []
    threads.start(lambda: results.append(book.wait_synced(timeout=10)), "resync-waiter")
    synced(book, 40)
    threads.join()
    assert results == [True]


# -- consistency under concurrent readers ------------------------------------------------------

STEPS = 10_000
TOTAL = 1_000  # the writer keeps the sum of bid quantities (and of ask quantities) at TOTAL


def conserving_updates(rng: random.Random, steps: int, start_version: int) -> List[DepthMsg]:
    """Updates that each move quantity between levels (and delete/insert levels), so every
    complete state has bid and ask quantities summing to TOTAL: a torn read would not."""
    bids = {f"{1000 - i}.5": TOTAL // 10 for i in range(10)}
    asks = {f"{1001 + i}.25": TOTAL // 10 for i in range(10)}
    msgs = []
    version = start_version
    for _ in range(steps):
        changes: List[List[Tuple[str, str]]] = []
        for side, base, sign in ((bids, 1000, -1), (asks, 1001, 1)):
            out: List[Tuple[str, str]] = []
            donor = rng.choice(sorted(side))
            amount = rng.randint(1, side[donor])
            if rng.random() < 0.3:  # move it to a level that may not exist yet
                taker = f"{base + sign * rng.randrange(0, 30)}.{'5' if sign < 0 else '25'}"
            else:
                taker = rng.choice(sorted(side))
            side[donor] -= amount
            side[taker] = side.get(taker, 0) + amount
            for price in {donor, taker}:
                out.append((price, str(side[price])))
                if side[price] == 0:
                    del side[price]
            rng.shuffle(out)
            changes.append(out)
        version += 1
        msgs.append(upd(version, version, changes[0], changes[1]))
    return msgs


def initial_snapshot(version: int) -> DepthMsg:
    bids = [(f"{1000 - i}.5", str(TOTAL // 10)) for i in range(10)]
    asks = [(f"{1001 + i}.25", str(TOTAL // 10)) for i in range(10)]
    return snap(version, bids, asks)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads as often as possible, so torn reads would show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_conserving_updates_keep_the_invariant() -> None:
    """The test's own premise: every complete state sums to TOTAL on both sides."""
    book = OrderBook("BTCUSDT")
    book._feed(initial_snapshot(1))
    for msg in conserving_updates(random.Random(3), 500, 1):
        assert book._feed(msg) is Outcome.APPLIED
        bids, asks = book.top(1000)
        assert sum(q for _, q in bids) == TOTAL and sum(q for _, q in asks) == TOTAL


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_readers_never_see_half_an_update(threads: Threads) -> None:
    book = OrderBook("BTCUSDT")
    book._feed(initial_snapshot(1))
    updates = conserving_updates(random.Random(11), STEPS, 1)
    done = threading.Event()
    reads = [0, 0]
    errors: List[str] = []

    def read_once(slot: int) -> int:
        if slot == 0:
            bids, asks = book.top(1000)
            version = book.version or 0
        else:
            view = book.view(1000)
            bids, asks, version = view["bids"], view["asks"], view["version"]
            if not view["synced"]:
                errors.append("unsynced view")
        bid_sum = sum(q for _, q in bids)
        ask_sum = sum(q for _, q in asks)
        if bid_sum != TOTAL or ask_sum != TOTAL:
            errors.append(f"torn read: bids sum {bid_sum}, asks sum {ask_sum}")
        if [p for p, _ in bids] != sorted((p for p, _ in bids), reverse=True):
            errors.append("bids out of order")
        return version

    def reader(slot: int) -> None:
        last_version = 0
        try:
            while not done.is_set() and not errors:
                version = read_once(slot)
                if version < last_version:
                    errors.append(f"version went back from {last_version} to {version}")
                last_version = version
                reads[slot] += 1
        except Exception as exc:  # a read must never fail either
            errors.append(repr(exc))

    def writer() -> None:
        try:
            for msg in updates:
                outcome = book._feed(msg)
                if outcome is not Outcome.APPLIED:
                    errors.append(f"writer got {outcome}")
                    return
        finally:
            done.set()

    threads.start(lambda: reader(0), "reader-top")
    threads.start(lambda: reader(1), "reader-view")
    wait_until(lambda: reads[0] > 0 and reads[1] > 0, timeout=10)
    threads.start(writer, "writer")
    assert done.wait(30)
    threads.join()
    assert errors == []
    assert book.version == STEPS + 1 and book.synced
    assert reads[0] > 10 and reads[1] > 10
