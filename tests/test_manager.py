"""StreamManager over real sockets against the sandbox exchange."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

import sixmm
from sixmm import (
    Backoff,
    CallbackError,
    ProtocolError,
    QueueDispatcher,
    StreamManager,
    StreamState,
    SubscriptionError,
    WorkerDispatcher,
)
from sixmm.sandbox import Sandbox

from .helpers import Recorder, refused_port, wait_until

FAST = {"ping_interval": 0.2, "stale_after": 1.0, "backoff": Backoff(initial=0.05, maximum=0.2)}


def subscribed_topics(sb: Sandbox) -> List[str]:
    topics: List[str] = []
    for conn in sb.connections:
        topics.extend(conn.get("topics", []))
    return sorted(topics)


def test_trades_are_typed_and_registered_topics_batched(sandbox: Sandbox) -> None:
    trades = Recorder()
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        pass  # an empty manager starts and stops cleanly
    streams = StreamManager(sandbox.ws_url, **FAST)
    sub = streams.trades("BTCUSDT", trades)
    streams.ticker("ETHUSDT", lambda t: None)
    with streams:
        assert sub.wait_ready(5)
        wait_until(lambda: len(trades) >= 3)
    first = trades.snapshot()[0]
    assert isinstance(first, sixmm.Trade)
    assert first.symbol == "BTCUSDT" and first.side in ("BUY", "SELL")
    assert first.price > 0 and isinstance(first.time, int)
    subs = [op for op in sandbox.ops if op["op"] == "subscribe"]
    # both topics registered before start() went out in ONE request
    assert sorted(subs[0]["args"]) == ["market.ticker.ETHUSDT", "market.trade.BTCUSDT"]


def test_several_callbacks_per_topic_and_raw_topic_gets_envelope(sandbox: Sandbox) -> None:
    a, b, raw = Recorder(), Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        streams.trades("BTCUSDT", a)
        streams.trades("BTCUSDT", b)
        streams.subscribe("market.tickers", raw)
        wait_until(lambda: len(a) >= 2 and len(b) >= 2 and len(raw) >= 1)
    # tickers is a known channel: the callback gets the list of Ticker of one push
    assert isinstance(raw.snapshot()[0], list)
    assert isinstance(raw.snapshot()[0][0], sixmm.Ticker)
    assert a.snapshot()[:2] == b.snapshot()[:2]


def test_drop_reconnects_and_resubscribes_without_user_action(sandbox: Sandbox) -> None:
    states, gaps, trades = Recorder(), Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_state=states, on_gap=gaps, **FAST) as streams:
        streams.trades("BTCUSDT", trades)
        book = streams.order_book("ETHUSDT")
        assert book.wait_synced(5)
        assert sandbox.drop_all() >= 1
        wait_until(lambda: any(s.state is StreamState.SUSPENDED for s in states.snapshot()))
        assert not book.synced or book.wait_synced(0)  # may already be back
        wait_until(lambda: states.snapshot()[-1].state is StreamState.CONNECTED)
        count = len(trades)
        wait_until(lambda: len(trades) > count + 2)
        assert book.wait_synced(5)
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 1
        wait_until(lambda: {g.topic for g in gaps.snapshot()} >= {"market.trade.BTCUSDT"})
    wait_until(lambda: subscribed_topics(sandbox) == [])  # the server saw our close
    gap = next(g for g in gaps.snapshot() if g.topic == "market.trade.BTCUSDT")
    assert gap.start <= gap.end
    resubs = [op for op in sandbox.ops if op["op"] == "subscribe"]
    assert len(resubs) >= 2
    assert sorted(resubs[-1]["args"]) == ["market.depth.ETHUSDT", "market.trade.BTCUSDT"]


def test_silent_server_is_detected_within_stale_after(sandbox: Sandbox) -> None:
    states = Recorder()
    # ack_timeout: a reconnect that lands while the server is still silent loses its
    # subscribe; it is re-sent after ack_timeout (see the test below)
    with StreamManager(sandbox.ws_url, on_state=states, ack_timeout=1.0, **FAST) as streams:
        streams.trades("BTCUSDT", lambda t: None).wait_ready(5)
        wait_until(lambda: streams.state is StreamState.CONNECTED)
        sandbox.go_silent()
        started = time.monotonic()
        try:
            wait_until(lambda: any("stale" in s.reason for s in states.snapshot()), timeout=10)
        except AssertionError:
            raise AssertionError(
                f"no stale state: {states.snapshot()} {streams.stats()['connections']}"
            ) from None
        # The bound IS the behaviour (detection within stale_after): stale_after (1 s) + one
        # read timeout (0.25 s) + heartbeat tick, with 5 s of slack for a loaded 2-core box;
        # a client that never noticed would fail the wait above (10 s) instead.
        assert time.monotonic() - started < 1.0 + 5.0
        sandbox.resume()
        try:
            wait_until(lambda: states.snapshot()[-1].state is StreamState.CONNECTED, timeout=10)
        except AssertionError:
            raise AssertionError(
                f"not back: {states.snapshot()} {streams.stats()['connections']} {sandbox.ops[-6:]}"
            ) from None


def test_unanswered_subscribe_is_resent_after_ack_timeout(sandbox: Sandbox) -> None:
    errors, trades = Recorder(), Recorder()
    sandbox.go_silent()  # the server takes the socket but ignores the subscribe
    # stale_after far above ack_timeout: on a loaded machine the silent spell before
    # resume() may exceed 1 s, and a stale reconnect would resubscribe (and get acked)
    # without the ack-timeout path ever running
    opts = {**FAST, "stale_after": 30.0}
    with StreamManager(sandbox.ws_url, on_error=errors, ack_timeout=1.0, **opts) as streams:
        sub = streams.trades("BTCUSDT", trades)
        wait_until(lambda: any(o["op"] == "subscribe" for o in sandbox.ops))
        sandbox.resume()  # pongs flow again: the socket is alive, the subscribe is lost
        assert sub.wait_ready(10)
        wait_until(lambda: len(trades) >= 1)
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0
    subs = [o for o in sandbox.ops if o["op"] == "subscribe"]
    assert len(subs) >= 2 and subs[-1]["args"] == ["market.trade.BTCUSDT"]
    assert any("no ack within" in str(e) for e in errors.snapshot())


def test_heartbeat_sends_ping_ops(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        streams.trades("BTCUSDT", lambda t: None).wait_ready(5)
        wait_until(lambda: any(op["op"] == "ping" for op in sandbox.ops), timeout=10)
        # the heartbeat counts a ping after sending it: the sandbox may record it first
        wait_until(lambda: streams.stats()["heartbeat"]["pings_sent"] >= 1, timeout=5)


def test_malformed_frames_are_reported_and_the_stream_goes_on(sandbox: Sandbox) -> None:
    errors, trades = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        streams.trades("BTCUSDT", trades).wait_ready(5)
        sandbox.send_malformed("{not json", count=1)
        sandbox.send_malformed('["a", "list"]', count=1)
        wait_until(lambda: len(errors) >= 2)
        count = len(trades)
        wait_until(lambda: len(trades) > count + 2)
        stats = streams.stats()["connections"]["public-0"]
    assert all(isinstance(e, ProtocolError) for e in errors.snapshot())
    assert stats["malformed"] >= 2
    assert stats["reconnects"] == 0


def test_push_for_unknown_topic_is_counted_and_not_dispatched(sandbox: Sandbox) -> None:
    errors, seen = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        streams.trades("BTCUSDT", seen).wait_ready(5)
        sandbox.send_malformed(
            '{"topic":"market.trade.ETHUSDT","event":"data","ts":1,'
            '"data":[{"symbol":"ETHUSDT","tradeId":"1","price":"1","quantity":"1",'
            '"side":"BUY","time":1}]}'
        )
        wait_until(lambda: len(errors) >= 1)
        assert streams.stats()["connections"]["public-0"]["unknown_topic"] == 1
    assert "not subscribed" in str(errors.snapshot()[0])
    assert all(t.symbol == "BTCUSDT" for t in seen.snapshot())


def test_raising_callback_is_isolated(sandbox: Sandbox) -> None:
    errors, good = Recorder(), Recorder()
    calls: List[int] = []

    def bad(trade: Any) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        streams.trades("BTCUSDT", bad)
        streams.trades("BTCUSDT", good)
        wait_until(lambda: len(calls) >= 3 and len(good) >= 3)
        # `calls` grows when the callback starts; its error is counted after it raised
        topic = "market.trade.BTCUSDT"
        wait_until(lambda: streams.stats()["topics"][topic]["errors"] >= 3, timeout=5)
        wait_until(lambda: len(errors) >= 3, timeout=5)
        stats = streams.stats()["topics"][topic]
    err = errors.snapshot()[0]
    assert isinstance(err, CallbackError)
    assert err.topic == "market.trade.BTCUSDT"
    assert isinstance(err.__cause__, RuntimeError)
    assert stats["errors"] >= 3


def test_failed_subscribe_raises_and_is_not_retried(sandbox: Sandbox) -> None:
    errors = Recorder()
    sandbox.reject_next_subscribe("market.trade.SOLUSDT", message="not allowed")
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        ok = streams.trades("BTCUSDT", lambda t: None)
        assert ok.wait_ready(5)
        bad = streams.trades("SOLUSDT", lambda t: None)
        with pytest.raises(SubscriptionError) as info:
            bad.wait_ready(5)
        assert info.value.topic == "market.trade.SOLUSDT"
        assert "not allowed" in str(info.value)
        wait_until(lambda: any(isinstance(e, SubscriptionError) for e in errors.snapshot()))
        sandbox.drop_all()
        wait_until(lambda: len([o for o in sandbox.ops if o["op"] == "subscribe"]) >= 3)
        last = [o for o in sandbox.ops if o["op"] == "subscribe"][-1]
        assert last["args"] == ["market.trade.BTCUSDT"]
        # checked only now: an unsubscribe sent after the refusal would have reached the
        # server before the resubscribe above (one socket, or the old one before the drop)
        assert not [o for o in sandbox.ops if o["op"] == "unsubscribe"]


def test_refused_subscribe_reaches_on_error_past_the_report_pacing(sandbox: Sandbox) -> None:
    """Malformed frames fill the per-second report budget; the refusal is still reported."""
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        assert streams.trades("BTCUSDT", lambda t: None).wait_ready(5)
        sandbox.reject_next_subscribe("market.trade.ETHUSDT", message="not allowed")
        sandbox.send_malformed(count=8)
        wait_until(lambda: sum(isinstance(e, ProtocolError) for e in errors.snapshot()) >= 5)
        bad = streams.trades("ETHUSDT", lambda t: None)
        with pytest.raises(SubscriptionError):
            bad.wait_ready(5)
        wait_until(lambda: any(isinstance(e, SubscriptionError) for e in errors.snapshot()))


def test_unknown_symbol_is_refused_by_server(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        sub = streams.trades("NOPEUSDT", lambda t: None)
        with pytest.raises(SubscriptionError):
            sub.wait_ready(5)


def test_bad_topics_are_rejected_locally() -> None:
    streams = StreamManager("ws://127.0.0.1:1/ws")
    with pytest.raises(ValueError):
        streams.klines("BTCUSDT", "7m", print)
    with pytest.raises(ValueError):
        streams.trades("btc usdt", print)
    with pytest.raises(ValueError):
        streams.subscribe("user.123", print)
    with pytest.raises(ValueError):
        StreamManager("ws://example.com/ws")  # plain ws:// only to loopback
    StreamManager("ws://example.com/ws", allow_insecure=True)
    with pytest.raises(ValueError):
        StreamManager("http://127.0.0.1/ws")
    for bad_port in ("ws://127.0.0.1:<object at 0x1>/ws", "ws://127.0.0.1:99999/ws"):
        with pytest.raises(ValueError, match="bad port"):
            StreamManager(bad_port)


def test_unsubscribe_stops_delivery(sandbox: Sandbox) -> None:
    trades, other = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        sub = streams.trades("BTCUSDT", trades)
        streams.trades("ETHUSDT", other).wait_ready(5)
        assert sub.wait_ready(5)
        wait_until(lambda: len(trades) >= 1)
        sub.unsubscribe()
        sub.unsubscribe()  # idempotent
        wait_until(lambda: any(o["op"] == "unsubscribe" for o in sandbox.ops))
        # a BTC push read just before unsubscribe() may still be in its callback: count only
        # once the reader has delivered an ETH trade after that
        seen = len(other)
        wait_until(lambda: len(other) > seen)
        count = len(trades)
        seen = len(other)
        sandbox.burst("BTCUSDT", 50)
        sandbox.burst("ETHUSDT", 50)
        wait_until(lambda: len(other) >= seen + 50)  # the reader got past the whole burst
        assert len(trades) == count
        assert "market.trade.BTCUSDT" not in subscribed_topics(sandbox)
        # its callback statistics went with it (a program cycling through symbols keeps none)
        assert "market.trade.BTCUSDT" not in streams._invoker.stats()
        assert "market.trade.ETHUSDT" in streams._invoker.stats()


def test_subscribe_from_inside_a_callback(sandbox: Sandbox) -> None:
    eth = Recorder()
    done = threading.Event()

    with StreamManager(sandbox.ws_url, **FAST) as streams:

        def on_btc(trade: Any) -> None:
            if not done.is_set():
                done.set()
                streams.trades("ETHUSDT", eth)

        streams.trades("BTCUSDT", on_btc)
        wait_until(lambda: len(eth) >= 1)


def test_queue_dispatcher_runs_callbacks_only_on_the_draining_thread(sandbox: Sandbox) -> None:
    inbox = QueueDispatcher(conflate=True)
    trades, tickers = Recorder(), Recorder()
    with StreamManager(sandbox.ws_url, dispatcher=inbox, **FAST) as streams:
        streams.trades("BTCUSDT", trades)
        streams.ticker("BTCUSDT", tickers)
        wait_until(lambda: inbox.stats()["depth"] >= 3)
        assert len(trades) == 0  # nothing runs until the owner drains
        deadline = time.monotonic() + 15  # tickers come every 0.5 s; generous for a loaded box
        while (len(trades) < 3 or len(tickers) < 1) and time.monotonic() < deadline:
            inbox.drain()
            time.sleep(0.01)
    assert len(trades) >= 3 and len(tickers) >= 1
    me = threading.current_thread().name
    assert set(trades.threads) == {me} and set(tickers.threads) == {me}


def test_worker_dispatcher_keeps_reader_free_of_user_code(sandbox: Sandbox) -> None:
    trades = Recorder()
    with StreamManager(sandbox.ws_url, dispatcher=WorkerDispatcher(), **FAST) as streams:
        streams.trades("BTCUSDT", trades)
        wait_until(lambda: len(trades) >= 5)
    assert all(name.startswith("sixmm-worker") for name in trades.threads)
    ids = [int(t.trade_id) for t in trades.snapshot()]
    assert ids == sorted(ids)  # order per connection kept


def test_topics_are_sharded_across_connections(sandbox: Sandbox) -> None:
    got = Recorder()
    with StreamManager(sandbox.ws_url, max_topics_per_connection=2, **FAST) as streams:
        for interval in ("1m", "5m", "15m", "30m", "1h"):
            streams.klines("BTCUSDT", interval, got)
        wait_until(lambda: len(sandbox.connections) == 3)
        wait_until(lambda: {k.interval for k in got.snapshot()} >= {"1m", "5m", "15m", "30m", "1h"})
        assert sorted(streams.stats()["connections"]) == ["public-0", "public-1", "public-2"]
        assert all(len(c["topics"]) <= 2 for c in sandbox.connections)


def test_many_threads_subscribing_and_unsubscribing_while_streaming(sandbox: Sandbox) -> None:
    errors = Recorder()
    topics = [f"market.kline.{s}.{i}" for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "5m", "1h")]
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:
        keep = streams.trades("BTCUSDT", lambda t: None)
        assert keep.wait_ready(5)

        def churn(seed: int) -> None:
            for n in range(30):
                sub = streams.subscribe(topics[(seed + n) % len(topics)], lambda k: None)
                if n % 3:
                    sub.unsubscribe()

        threads = [threading.Thread(target=churn, args=(i,), name=f"churn-{i}") for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        desired = sorted(streams.stats()["topics"])
        wait_until(lambda: subscribed_topics(sandbox) == desired, timeout=10)
    assert not [e for e in errors.snapshot() if not isinstance(e, ProtocolError)]


@pytest.mark.parametrize("dispatcher", [None, "worker", "queue"])
def test_stop_is_idempotent_and_safe_from_a_callback(sandbox: Sandbox, dispatcher: Any) -> None:
    stopped = threading.Event()
    inbox = QueueDispatcher() if dispatcher == "queue" else None
    chosen = WorkerDispatcher() if dispatcher == "worker" else inbox
    streams = StreamManager(sandbox.ws_url, dispatcher=chosen, **FAST)

    def on_trade(trade: Any) -> None:
        streams.stop()
        stopped.set()

    streams.trades("BTCUSDT", on_trade)
    streams.start()
    deadline = time.monotonic() + 15
    while inbox is not None and not stopped.is_set() and time.monotonic() < deadline:
        inbox.drain()  # the queue's callbacks run here, on this thread
        time.sleep(0.01)
    assert stopped.wait(10)
    assert streams.wait(5)
    streams.stop()
    streams.stop()
    with pytest.raises(RuntimeError):
        streams.start()


def test_max_attempts_exhausted_means_lost() -> None:
    states, errors = Recorder(), Recorder()
    backoff = Backoff(initial=0.01, maximum=0.02, max_attempts=2)
    with refused_port() as port:
        streams = StreamManager(
            f"ws://127.0.0.1:{port}/ws", backoff=backoff, on_state=states, on_error=errors
        )
        streams.trades("BTCUSDT", lambda t: None)
        with streams:
            assert streams.wait(5)  # returns once every connection is lost for good
    assert states.snapshot()[-1].state is StreamState.LOST
    assert "gave up" in states.snapshot()[-1].reason
    retries = [s for s in states.snapshot() if s.state is StreamState.SUSPENDED]
    assert len(retries) == 2  # each failed attempt reported, with its reason
    assert all("connect failed" in s.reason and "retry in" in s.reason for s in retries)
    assert any(isinstance(e, sixmm.ConnectionLost) for e in errors.snapshot())


def test_slow_callback_is_reported(sandbox: Sandbox) -> None:
    def slow(trade: Any) -> None:
        time.sleep(0.06)

    with StreamManager(sandbox.ws_url, slow_callback=0.05, **FAST) as streams:
        streams.trades("BTCUSDT", slow)
        wait_until(lambda: streams.stats()["topics"]["market.trade.BTCUSDT"].get("slow", 0) >= 1)


def test_long_inline_callback_is_not_mistaken_for_a_silent_server(sandbox: Sandbox) -> None:
    states = Recorder()
    blocked = threading.Event()

    def sleepy(trade: Any) -> None:
        if not blocked.is_set():
            blocked.set()
            time.sleep(2.0)  # twice stale_after, while the server keeps talking

    with StreamManager(sandbox.ws_url, on_state=states, **FAST) as streams:
        streams.trades("BTCUSDT", sleepy)
        assert blocked.wait(5)
        wait_until(lambda: streams.stats()["topics"]["market.trade.BTCUSDT"]["calls"] >= 5)
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0
    assert not any("stale" in s.reason for s in states.snapshot())


def test_stats_shape(sandbox: Sandbox) -> None:
    with StreamManager(sandbox.ws_url, **FAST) as streams:
        trades = Recorder()
        streams.trades("BTCUSDT", trades)
        streams.order_book("BTCUSDT").wait_synced(5)
        wait_until(lambda: len(trades) >= 1)
        stats = streams.stats()
    conn = stats["connections"]["public-0"]
    for key in ("state", "messages", "bytes", "reconnects", "last_frame_age"):
        assert key in conn
    topic = stats["topics"]["market.trade.BTCUSDT"]
    for key in ("messages", "errors", "p50_ms", "p99_ms"):
        assert key in topic
    assert topic["messages"] >= 1 and topic["lag_ms"] is not None
    assert -1000 < topic["lag_ms"] < 5000  # sandbox and client share the clock
    assert stats["books"]["BTCUSDT"]["synced"] is True
    assert "depth" in stats["dispatcher"]


def test_a_subscribe_never_waits_for_a_busy_inline_callback(sandbox: Sandbox) -> None:
    """The reader holds its session's lock while an inline callback runs; a subscribe from
    another thread on the same connection returns at once (queued), and goes out as soon as
    the callback returns -- no deadlock, no waiting on the lock."""
    entered, release = threading.Event(), threading.Event()
    returned: List[bool] = []

    def slow(trade: Any) -> None:
        entered.set()
        release.wait(10)

    with StreamManager(sandbox.ws_url, **{**FAST, "stale_after": 30.0}) as streams:
        try:
            streams.trades("BTCUSDT", slow)
            assert entered.wait(10)
            subs: List[Any] = []

            def other() -> None:
                subs.append(streams.trades("ETHUSDT", lambda t: None))
                returned.append(not release.is_set())  # returned while the callback blocks

            worker = threading.Thread(target=other)
            worker.start()
            worker.join(5)
            assert returned == [True]
            assert not subs[0].ready  # queued behind the busy reader, not yet acknowledged
        finally:
            release.set()
        assert subs[0].wait_ready(10)
        assert "market.trade.ETHUSDT" in subscribed_topics(sandbox)
        assert len(streams.stats()["connections"]) == 1  # both on the same connection


def test_a_callback_blocking_one_connection_does_not_stall_another(sandbox: Sandbox) -> None:
    # The readers of one manager take turns feeding their sessions (connection.py): a turn
    # waited for is bounded, so an inline callback that blocks on one connection leaves the
    # other streaming.
    release = threading.Event()
    blocked = threading.Event()
    other = Recorder()

    def stuck(trade: Any) -> None:
        blocked.set()
        release.wait(15)

    with StreamManager(sandbox.ws_url, max_topics_per_connection=1) as streams:
        try:
            streams.trades("BTCUSDT", stuck)
            streams.trades("ETHUSDT", other)
            assert blocked.wait(10)
            before = len(other)
            wait_until(lambda: len(other) >= before + 5, timeout=10)
            assert not release.is_set()  # the first connection's callback is still blocked
            names = {c.name: c for c in streams._connections()}
            assert len(names) == 2
            assert len({id(c._turn) for c in names.values()} - {id(None)}) == 1
        finally:
            release.set()


def test_a_large_frame_is_fed_with_the_collector_paused(sandbox: Sandbox) -> None:
    # A snapshot decodes into thousands of small lists: a collection in the middle would
    # promote them and start full collections (a GUI's missed ticks in a resync storm). An
    # inline callback runs inside the feeding, so it sees the collector's state there.
    import gc

    from sixmm.connection import QUIET_GC_BYTES

    topic = "market.funding.BTCUSDT"
    seen: List[Any] = []
    with StreamManager(sandbox.ws_url) as streams:
        sub = streams.subscribe(
            topic, lambda p: seen.append((p["data"].get("pad"), gc.isenabled()))
        )
        assert sub.wait_ready(10)
        pad = "x" * QUIET_GC_BYTES
        assert sandbox.publish(topic, {"symbol": "BTCUSDT", "pad": "small"}) == 1
        assert sandbox.publish(topic, {"symbol": "BTCUSDT", "pad": pad}) == 1
        wait_until(lambda: any(p == pad for p, _ in seen))
    assert ("small", True) in seen and (pad, False) in seen
    assert gc.isenabled()

    # the edge cases, on the session itself
    streams = StreamManager("ws://127.0.0.1:9/ws")
    streams.trades("BTCUSDT", lambda t: None)
    session, conn = streams._public[0]
    big = b'{"topic":"market.depth.BTCUSDT","data":"' + b"x" * QUIET_GC_BYTES + b'"}'
    session.engine.receive = lambda payload, now: seen.append((len(payload), gc.isenabled()))
    gc.disable()  # an application that runs without the collector keeps it off
    try:
        session.on_message(conn, big)
        assert seen[-1] == (len(big), False) and not gc.isenabled()
    finally:
        gc.enable()

    def boom(payload: bytes, now: float) -> None:
        raise RuntimeError("engine bug")

    session.engine.receive = boom
    with pytest.raises(RuntimeError):
        session.on_message(conn, big)
    assert gc.isenabled()  # restored even when feeding fails


def test_a_reader_busy_with_large_frames_lets_other_threads_run(sandbox: Sandbox) -> None:
    # In a storm of snapshots the reader gives the GIL up at every socket read but takes it
    # back before a waiting thread wakes, which restarts that thread's 5 ms switch interval:
    # a GUI's main thread starved for 40 ms and more. The reader pauses (sleeps, the GIL
    # released) once it has been busy with large frames for YIELD_AFTER, and no more often.
    from sixmm.connection import QUIET_GC_BYTES, YIELD_AFTER

    topic = "market.funding.BTCUSDT"
    pad = "x" * QUIET_GC_BYTES
    frames = 40
    seen: List[float] = []

    def busy(p: Any) -> None:  # ~1 ms of Python per frame: the reader is never idle long
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        seen.append(time.monotonic())

    t0 = time.monotonic()
    with StreamManager(sandbox.ws_url) as streams:
        sub = streams.subscribe(topic, busy)
        assert sub.wait_ready(10)
        for i in range(frames):
            assert sandbox.publish(topic, {"symbol": "BTCUSDT", "i": i, "pad": pad}) == 1
        wait_until(lambda: len(seen) == frames, timeout=20)
        (conn,) = streams.stats()["connections"].values()
        span = seen[-1] - t0
    # frames at least 1 ms apart: a pause at least every YIELD_AFTER + 1 ms of them ...
    assert conn["yields"] >= (frames - 1) // (int(YIELD_AFTER * 1e3) + 2)
    # ... and never more than one per YIELD_AFTER (a pause per frame would cost throughput)
    assert conn["yields"] <= span / YIELD_AFTER + 1
