"""Live order books against the sandbox's ground truth: steady state, gaps, drops, crossing."""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

from sixmm import Backoff, OrderBook, StreamManager
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 1.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}


def assert_equals_truth(sb: Sandbox, book: OrderBook, timeout: float = 5.0) -> None:
    """With the market paused, the local book reaches the truth's version and equals it."""
    version, bids, asks = sb.book_truth(book.symbol)
    wait_until(lambda: book.synced and book.version == version, timeout=timeout)
    assert book.levels() == (bids, asks)


def resubscribes(sb: Sandbox, topic: str) -> int:
    return sum(1 for op in sb.ops if op["op"] == "unsubscribe" and topic in op["args"])


def test_book_equals_ground_truth_after_many_updates(sandbox: Sandbox) -> None:
    updates = Recorder()
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        book = streams.order_book("BTCUSDT", on_update=updates)
        assert book.wait_synced(5)
        wait_until(lambda: len(updates) >= 30)
        sandbox.pause_market()
        assert_equals_truth(sandbox, book)
        sandbox.step(200)
        assert_equals_truth(sandbox, book)
        assert book.stats()["gaps"] == 0 and book.stats()["resyncs"] == 0
        bids, asks = book.top(10)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert bids[0][0] < asks[0][0]
        assert book.best_bid() == bids[0] and book.best_ask() == asks[0]
    assert updates.snapshot()[0] is book


def test_gap_unsyncs_then_resyncs_only_that_symbol(sandbox: Sandbox) -> None:
    seen_unsynced = threading.Event()

    def watch(book: OrderBook) -> None:
        if not book.synced:
            seen_unsynced.set()

    with StreamManager(sandbox.ws_url, **FAST) as streams:
        btc = streams.order_book("BTCUSDT")
        eth = streams.order_book("ETHUSDT")
        sol = streams.order_book("SOLUSDT")
        for book in (btc, eth, sol):
            assert book.wait_synced(5)
        sandbox.pause_market()
        sandbox.skip_versions("ETHUSDT", 3)
        sandbox.step(1)
        wait_until(lambda: eth.stats()["gaps"] == 1)
        assert eth.wait_synced(5)
        sandbox.step(20)
        for book in (btc, eth, sol):
            assert_equals_truth(sandbox, book)
        assert eth.stats()["resyncs"] == 1
        assert btc.stats()["resyncs"] == 0 and sol.stats()["resyncs"] == 0
    assert resubscribes(sandbox, "market.depth.ETHUSDT") == 1
    assert resubscribes(sandbox, "market.depth.BTCUSDT") == 0


def test_gapped_update_is_never_shown_and_book_resyncs(sandbox: Sandbox) -> None:
    states: List[bool] = []
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        book = streams.order_book("BTCUSDT", on_update=lambda b: states.append(b.synced))
        assert book.wait_synced(5)
        sandbox.pause_market()
        sandbox.skip_versions("BTCUSDT", 1)
        sandbox.step(1)
        wait_until(lambda: book.stats()["gaps"] == 1)
        # the gapped update was not applied: version unchanged until the new snapshot
        assert book.wait_synced(5)
        assert_equals_truth(sandbox, book)
    # on_update only ever announced synced books
    assert all(states)


def test_dropped_connection_resyncs_every_book(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        btc = streams.order_book("BTCUSDT")
        eth = streams.order_book("ETHUSDT")
        assert btc.wait_synced(5) and eth.wait_synced(5)
        sandbox.drop_all()
        wait_until(lambda: btc.stats()["resyncs"] >= 1 and eth.stats()["resyncs"] >= 1)
        assert btc.wait_synced(5) and eth.wait_synced(5)
        sandbox.pause_market()
        assert_equals_truth(sandbox, btc)
        assert_equals_truth(sandbox, eth)


def test_crossed_book_is_treated_as_corruption(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        book = streams.order_book("SOLUSDT")
        assert book.wait_synced(5)
        sandbox.pause_market()
        sandbox.cross_book("SOLUSDT")
        wait_until(lambda: book.stats()["crossed"] == 1)
        assert book.wait_synced(5)
        assert_equals_truth(sandbox, book)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and bid[0] < ask[0]


@pytest.mark.parametrize(
    "style",
    [
        "no_type",
        "string_versions",
        "object_levels",
        "prev_field",
        "envelope_snapshot",
        "unverified",
    ],
)
def test_every_depth_variant_rebuilds_the_truth(style: str) -> None:
    with Sandbox(port=0, seed=1, depth_style=style) as sb, StreamManager(sb.ws_url, **FAST) as s:
        book = s.order_book("BTCUSDT")
        assert book.wait_synced(5)
        wait_until(lambda: book.stats()["applied"] >= 10)
        sb.pause_market()
        assert_equals_truth(sb, book)
        assert book.verified is (style != "unverified")


def test_variant_gap_is_detected_with_predecessor_field() -> None:
    with (
        Sandbox(port=0, seed=2, depth_style="prev_field") as sb,
        StreamManager(sb.ws_url, **FAST) as streams,
    ):
        book = streams.order_book("BTCUSDT")
        assert book.wait_synced(5)
        sb.pause_market()
        sb.skip_versions("BTCUSDT", 2)
        sb.step(1)
        wait_until(lambda: book.stats()["gaps"] == 1)
        assert book.wait_synced(5)
        assert_equals_truth(sb, book)


def test_book_added_after_depth_subscription_gets_a_fresh_snapshot(sandbox: Sandbox) -> None:
    raw = Recorder()
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        assert streams.depth("BTCUSDT", raw).wait_ready(5)
        wait_until(lambda: len(raw) >= 5)
        book = streams.order_book("BTCUSDT")
        assert book.wait_synced(5)
        sandbox.pause_market()
        assert_equals_truth(sandbox, book)
    assert raw.snapshot()[0].kind == "snapshot"


def test_reads_from_another_thread_are_consistent(sandbox: Sandbox) -> None:
    problems: List[str] = []
    stop = threading.Event()

    def reader(book: OrderBook) -> None:
        while not stop.is_set():
            bids, asks = book.top(20)
            if [p for p, _ in bids] != sorted((p for p, _ in bids), reverse=True):
                problems.append("bids not sorted")
            if [p for p, _ in asks] != sorted(p for p, _ in asks):
                problems.append("asks not sorted")
            if bids and asks and bids[0][0] >= asks[0][0] and book.synced:
                problems.append("crossed read")

    with StreamManager(sandbox.ws_url, **FAST) as streams:
        book = streams.order_book("BTCUSDT")
        assert book.wait_synced(5)
        threads = [threading.Thread(target=reader, args=(book,)) for _ in range(2)]
        for t in threads:
            t.start()
        start = book.stats()["applied"]
        wait_until(lambda: book.stats()["applied"] >= start + 50)
        stop.set()
        for t in threads:
            t.join(5)
    assert problems == []


def test_malformed_depth_payload_resyncs_the_book(sandbox: Sandbox) -> None:
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        book = streams.order_book("BTCUSDT")
        assert book.wait_synced(5)
        sandbox.pause_market()
        sandbox.send_malformed(
            '{"topic":"market.depth.BTCUSDT","event":"data","ts":1,'
            '"data":{"type":"update","startVersion":"x","endVersion":1,"bids":[],"asks":[]}}'
        )
        wait_until(lambda: book.stats()["resyncs"] == 1)
        assert book.wait_synced(5)
        assert_equals_truth(sandbox, book)
    assert any("market.depth.BTCUSDT" in str(e) for e in errors.snapshot())


def test_depth_payload_for_another_symbol_is_rejected(sandbox: Sandbox) -> None:
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        book = streams.order_book("BTCUSDT")
        assert book.wait_synced(5)
        sandbox.pause_market()
        version = book.version
        assert version is not None
        sandbox.send_malformed(
            '{"topic":"market.depth.BTCUSDT","event":"data","ts":1,"data":{"symbol":"ETHUSDT",'
            f'"type":"update","startVersion":{version + 1},"endVersion":{version + 1},'
            '"bids":[["1","1"]],"asks":[]}}'
        )
        wait_until(lambda: any("ETHUSDT" in str(e) for e in errors.snapshot()))
        assert book.wait_synced(5)
        assert_equals_truth(sandbox, book)


@pytest.mark.parametrize("how", ["nan", "truncate"])
def test_unparseable_depth_update_unsyncs_and_resyncs_its_book(sandbox: Sandbox, how: str) -> None:
    """The sandbox applies an update to its truth but sends it unparseable (a raw NaN, or cut
    short): the book it was for must not stay 'synced' one update behind."""
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        btc = streams.order_book("BTCUSDT")
        eth = streams.order_book("ETHUSDT")
        assert btc.wait_synced(5) and eth.wait_synced(5)
        sandbox.pause_market()
        assert_equals_truth(sandbox, btc)
        assert_equals_truth(sandbox, eth)
        before = btc.stats()["resyncs"], eth.stats()["resyncs"]
        sandbox.corrupt_next_depth("BTCUSDT", how)
        sandbox.step(1)  # BTC's update arrives unparseable; ETH's arrives fine
        wait_until(lambda: btc.stats()["resyncs"] == before[0] + 1)
        wait_until(lambda: resubscribes(sandbox, "market.depth.BTCUSDT") == 1)
        assert btc.wait_synced(5)
        assert_equals_truth(sandbox, btc)  # the fresh snapshot carries the lost update
        assert_equals_truth(sandbox, eth)
        assert eth.stats()["resyncs"] == before[1]  # its topic was named: only BTC's book
        assert resubscribes(sandbox, "market.depth.ETHUSDT") == 0
        conn = streams.stats()["connections"]["public-0"]
        assert conn["reconnects"] == 0 and conn["unparsed_resyncs"] == 1
    assert any("malformed frame" in str(e) for e in errors.snapshot())


def test_unparseable_frame_naming_no_topic_resyncs_every_book(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        btc = streams.order_book("BTCUSDT")
        eth = streams.order_book("ETHUSDT")
        assert btc.wait_synced(5) and eth.wait_synced(5)
        sandbox.pause_market()
        before = btc.stats()["resyncs"], eth.stats()["resyncs"]
        sandbox.corrupt_next_depth("BTCUSDT", "headless")
        sandbox.step(1)
        wait_until(lambda: btc.stats()["resyncs"] == before[0] + 1)
        wait_until(lambda: eth.stats()["resyncs"] == before[1] + 1)
        assert_equals_truth(sandbox, btc)
        assert_equals_truth(sandbox, eth)


def test_wellformed_garbage_about_no_book_leaves_books_alone(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        btc = streams.order_book("BTCUSDT")
        assert btc.wait_synced(5)
        sandbox.pause_market()
        before = btc.stats()["resyncs"]
        sandbox.send_malformed('["a", "list"]')
        sandbox.send_malformed('{"topic":"market.trade.BTCUSDT","event":"data"}')
        wait_until(lambda: streams.stats()["connections"]["public-0"]["malformed"] >= 2)
        sandbox.send_malformed("{not json")  # fails to parse: could have been the book's
        wait_until(lambda: btc.stats()["resyncs"] == before + 1)
        assert_equals_truth(sandbox, btc)
