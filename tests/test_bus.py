"""The Redis bus end to end: sandbox -> Bridge -> a real redis-server -> consumers."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, List

import pytest

from sixmm import StreamManager
from sixmm.bus import Bridge, decode_entry
from sixmm.bus.format import stream_key
from sixmm.sandbox import DEPTH_STYLES, Sandbox
from tests.helpers import Recorder, wait_until
from tests.redisserver import RedisServer, redis_server_fixture  # noqa: F401

TRADE = "market.trade.BTCUSDT"
DEPTH = "market.depth.BTCUSDT"


def ready(bridge: Bridge) -> bool:
    topics = bridge.manager.stats()["topics"]
    return bridge.active and all(topics[t]["ready"] for t in bridge.topics)


def truth_matches(sandbox: Any, book: Any) -> bool:
    version, bids, asks = sandbox.book_truth("BTCUSDT")
    return book.synced and book.version == version and book.levels() == (bids, asks)


def entries(server: RedisServer, topic: str) -> List[Any]:
    rows = server.client().xrange(stream_key("sixmm", topic))
    return [decode_entry(fields) for _id, fields in rows]


def test_trades_reach_two_consumers_exactly_once_and_in_order(sandbox, redis_server) -> None:
    sandbox.pause_market()
    direct, a, b = Recorder(), Recorder(), Recorder()
    bridge = Bridge([TRADE], redis_server.url, url=sandbox.ws_url)
    with bridge, StreamManager(sandbox.ws_url) as streams:
        assert streams.trades("BTCUSDT", direct).wait_ready(15)
        wait_until(lambda: ready(bridge), 20)
        ca = StreamManager.from_redis(redis_server.url)
        cb = StreamManager.from_redis(redis_server.url)
        with ca, cb:
            assert ca.trades("BTCUSDT", a).wait_ready(15)
            assert cb.trades("BTCUSDT", b).wait_ready(15)
            sandbox.burst("BTCUSDT", 300)
            sandbox.step(20)  # ticks: trades pushed as lists, one entry per trade

            def caught_up() -> bool:
                d, x, y = direct.snapshot(), a.snapshot(), b.snapshot()
                return len(d) >= 300 and bool(x and y) and d[-1] == x[-1] == y[-1]

            wait_until(caught_up, 30)  # the same last trade everywhere (ids are unique)
            want = [t.trade_id for t in direct.snapshot()]
            assert [t.trade_id for t in a.snapshot()] == want
            assert [t.trade_id for t in b.snapshot()] == want
            assert len(set(want)) == len(want)
            first = a.snapshot()[0]
            assert first == direct.snapshot()[0]  # the same model, equal field by field
            assert isinstance(first.price, Decimal)
            assert ca.stats()["bus"]["topics"][TRADE]["lag_p99_ms"] is not None
    seqs = [e.seq for e in entries(redis_server, TRADE)]
    assert seqs == list(range(1, len(seqs) + 1))  # one session, no hole


def test_books_equal_the_truth_also_for_a_late_consumer(sandbox, redis_server) -> None:
    with Bridge([DEPTH], redis_server.url, url=sandbox.ws_url, snapshot_interval=1.0) as bridge:
        wait_until(lambda: ready(bridge), 20)
        early = StreamManager.from_redis(redis_server.url)
        updates = Recorder()
        book = early.order_book("BTCUSDT", on_update=updates)
        with early:
            assert book.wait_synced(15)
            wait_until(lambda: len(updates) > 50, 20)  # the market moves for a while
            sandbox.pause_market()
            wait_until(lambda: truth_matches(sandbox, book), 20)
            sandbox.step(30)
            wait_until(lambda: truth_matches(sandbox, book), 20)
            assert book.stats()["gaps"] == 0
            late = StreamManager.from_redis(redis_server.url)
            with late:
                late_book = late.order_book("BTCUSDT")
                assert late_book.wait_synced(15)
                wait_until(lambda: truth_matches(sandbox, late_book), 20)
                sandbox.resume_market()
                wait_until(lambda: late_book.version > book.version - 1000 and updates, 5)
                sandbox.pause_market()
                wait_until(lambda: truth_matches(sandbox, late_book), 20)
                wait_until(lambda: truth_matches(sandbox, book), 20)
    kinds = {e.kind for e in entries(redis_server, DEPTH)}
    assert {"snapshot", "update"} <= kinds


def test_a_consumer_behind_past_the_trim_gets_a_gap_then_resyncs(sandbox, redis_server) -> None:
    sandbox.pause_market()
    gate = threading.Event()
    blocked = threading.Event()
    gaps = Recorder()

    def slow(trade: Any) -> None:  # inline dispatcher: stalls the consumer's reader
        blocked.set()
        gate.wait(60)

    with Bridge(
        [DEPTH, TRADE], redis_server.url, url=sandbox.ws_url, maxlen=50, snapshot_interval=1.0
    ) as bridge:
        wait_until(lambda: ready(bridge), 20)
        consumer = StreamManager.from_redis(redis_server.url, on_gap=gaps, count=5, idle_after=120)
        with consumer:
            book = consumer.order_book("BTCUSDT")
            assert book.wait_synced(15)
            assert consumer.trades("BTCUSDT", slow).wait_ready(15)
            sandbox.burst("BTCUSDT", 3)
            wait_until(blocked.is_set, 20)
            published = bridge.stats()["bus"]["seq"][DEPTH]
            sandbox.step(400)  # far more than MAXLEN ~ 50 keeps
            client = redis_server.client()
            wait_until(lambda: bridge.stats()["bus"]["seq"][DEPTH] > published + 400, 30)
            assert client.xlen(stream_key("sixmm", DEPTH)) < 400
            gate.set()
            wait_until(lambda: any(g.topic == DEPTH for g in gaps.snapshot()), 30)
            assert consumer.stats()["bus"]["topics"][DEPTH]["holes"] >= 1
            wait_until(lambda: truth_matches(sandbox, book), 30)  # the next snapshot
            assert book.stats()["snapshots"] >= 2


def test_redis_restart_under_a_running_bridge(sandbox, redis_server) -> None:
    errors = Recorder()
    with Bridge(
        [DEPTH, TRADE], redis_server.url, url=sandbox.ws_url, on_error=errors, snapshot_interval=2
    ) as bridge:
        wait_until(lambda: ready(bridge), 20)
        gaps = Recorder()
        consumer = StreamManager.from_redis(redis_server.url, on_gap=gaps)
        with consumer:
            book = consumer.order_book("BTCUSDT")
            assert book.wait_synced(15)
            redis_server.stop()
            wait_until(lambda: bridge.stats()["bus"]["redis_errors"] > 0, 20)
            wait_until(lambda: not book.synced, 20)
            redis_server.start()
            wait_until(lambda: bridge.stats()["bus"]["reconnects"] >= 1, 30)
            wait_until(lambda: bridge.active, 20)

            def said() -> list:
                return [str(e) for e in errors.snapshot()]

            # the reports reach on_error through the dispatcher, after the counters move
            wait_until(lambda: any("reconnected to Redis" in s and "lost" in s for s in said()), 20)
            wait_until(lambda: any("Redis lost the stream(s)" in s for s in said()), 20)
            assert book.wait_synced(30)
            sandbox.pause_market()
            wait_until(lambda: truth_matches(sandbox, book), 20)
            assert consumer.stats()["bus"]["reconnects"] >= 1
    gap_entries = [e for e in entries(redis_server, DEPTH) if e.kind == "gap"]
    assert gap_entries and "Redis" in gap_entries[0].reason


def test_a_fenced_bridge_stops_publishing_and_comes_back(sandbox, redis_server) -> None:
    roles = Recorder()
    with Bridge(
        [TRADE], redis_server.url, url=sandbox.ws_url, lease_ttl=1.0, on_role=lambda *a: roles(a)
    ) as bridge:
        wait_until(lambda: ready(bridge), 20)
        client = redis_server.client()
        key = stream_key("sixmm", TRADE)
        wait_until(lambda: client.xlen(key) > 0, 20)  # heartbeats at least
        client.set(f"sixmm:lease:{bridge.group}", "intruder", px=3000)  # another holder
        wait_until(lambda: bridge.role == "standby", 10)
        last = client.xrevrange(key, "+", "-", count=1)[0][0]
        # the intruder's lease expires (the bridge may take the key at once: never None long)
        wait_until(lambda: client.get(f"sixmm:lease:{bridge.group}") != b"intruder", 10)
        wait_until(lambda: bridge.active, 10)  # took over again: a new takeover
        after = client.xrange(key, min=f"({last.decode()}")
        assert any(decode_entry(f).kind == "gap" for _i, f in after)
    assert [r[0] for r in roles.snapshot()][:3] == ["active", "standby", "active"]


def test_the_user_stream_is_refused_by_a_consumer(redis_server) -> None:
    consumer = StreamManager.from_redis(redis_server.url)
    with pytest.raises(ValueError, match="never published"):
        consumer.user(on_order=print)
    with pytest.raises(ValueError):
        consumer.subscribe("user.123", print)
    consumer.stop()


def test_memory_stays_flat_with_maxlen(sandbox, redis_server) -> None:
    run_memory_check(sandbox, redis_server, seconds=6.0)


@pytest.mark.soak
@pytest.mark.timeout(400)
def test_memory_stays_flat_with_maxlen_soak(sandbox, redis_server) -> None:
    run_memory_check(sandbox, redis_server, seconds=120.0)


def run_memory_check(sandbox: Any, server: RedisServer, seconds: float) -> None:
    import time

    client = server.client()
    topics = [DEPTH, TRADE, "market.depth.ETHUSDT", "market.trade.ETHUSDT"]
    with Bridge(topics, server.url, url=sandbox.ws_url, maxlen=300) as bridge:
        wait_until(lambda: ready(bridge), 20)
        keys = [stream_key("sixmm", t) for t in topics]
        wait_until(lambda: all(client.xlen(k) >= 300 for k in keys[:2]), 60)
        start_mem = server.used_memory()
        deadline = time.monotonic() + seconds
        peak = start_mem
        while time.monotonic() < deadline:
            sandbox.burst("BTCUSDT", 200)
            time.sleep(0.2)
            peak = max(peak, server.used_memory())
            assert all(client.xlen(k) <= 300 + 200 for k in keys)  # ~: whole nodes of 100
        published = bridge.stats()["bus"]["published"]
    assert published > 3000
    assert peak < start_mem * 1.5 + 256 * 1024, (start_mem, peak)


def test_shards_split_topics_and_publish_side_by_side(sandbox, redis_server) -> None:
    topics = [f"market.trade.{s}" for s in sandbox.symbols] + [
        f"market.depth.{s}" for s in sandbox.symbols
    ]
    one = Bridge(topics, redis_server.url, url=sandbox.ws_url, shard=(0, 2))
    two = Bridge(topics, redis_server.url, url=sandbox.ws_url, shard=(1, 2))
    assert sorted(one.topics + two.topics) == sorted(topics)
    assert not set(one.topics) & set(two.topics)
    assert one.group != two.group  # two leases: both publish
    with one, two:
        wait_until(lambda: one.active and two.active, 20)
        client = redis_server.client()
        wait_until(lambda: all(client.xlen(stream_key("sixmm", t)) for t in topics), 20)
        for bridge in (one, two):
            for topic in bridge.topics:
                sessions = {e.session for e in entries(redis_server, topic)}
                assert sessions == {bridge.session}


@pytest.mark.parametrize("style", DEPTH_STYLES)
def test_consumer_books_follow_every_depth_style(style: str, redis_server) -> None:
    with Sandbox(port=0, seed=1, depth_style=style) as sb:
        bridge = Bridge([DEPTH], redis_server.url, url=sb.ws_url, snapshot_interval=1.0)
        consumer = StreamManager.from_redis(redis_server.url)
        with bridge, consumer:
            wait_until(lambda: ready(bridge), 20)
            book = consumer.order_book("BTCUSDT")
            assert book.wait_synced(20)
            wait_until(lambda: book.stats()["applied"] > 20, 20)
            sb.pause_market()
            wait_until(lambda: truth_matches(sb, book), 20)
            assert book.stats()["gaps"] == 0
            assert book.verified == bridge.manager.order_book("BTCUSDT").verified


def test_a_full_bridge_queue_drops_counts_and_reports(sandbox, redis_server) -> None:
    sandbox.pause_market()
    errors = Recorder()
    bridge = Bridge([TRADE], redis_server.url, url=sandbox.ws_url, queue_size=20, on_error=errors)
    with bridge:
        wait_until(lambda: ready(bridge), 20)
        redis_server.stop()  # the writer cannot write: the queue fills
        wait_until(lambda: bridge.stats()["bus"]["redis_errors"] > 0, 20)
        sandbox.burst("BTCUSDT", 200)
        wait_until(lambda: bridge.stats()["bus"]["dropped"] >= 150, 20)
        redis_server.start()
        wait_until(lambda: bridge.stats()["bus"]["reconnects"] >= 1, 30)
        wait_until(lambda: any("queue full" in str(e) for e in errors.snapshot()), 20)

        def drop_gaps() -> list:
            return [e for e in entries(redis_server, TRADE) if "queue full" in e.reason]

        wait_until(drop_gaps, 20)
        assert sum(e.lost for e in drop_gaps()) == bridge.stats()["bus"]["dropped"]
        assert all(e.kind == "gap" for e in drop_gaps())
