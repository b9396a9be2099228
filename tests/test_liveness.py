"""Per-topic liveness: the pure policy and watch (fake clock), then over real sockets against
the sandbox: one silenced topic among live ones is found and healed alone."""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import (
    DEFAULT_LIVENESS,
    Backoff,
    Liveness,
    OrderBook,
    StateEvent,
    StreamManager,
    StreamState,
    TopicSilent,
)
from sixmm.protocol.liveness import KLINE_SECONDS, TopicWatch, check_silence_after
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until

NO_BACKOFF = Backoff(initial=0.001, maximum=0.001, jitter=False)

# ------------------------------------------------------------------------ the policy


def test_default_bounds_per_channel() -> None:
    live = DEFAULT_LIVENESS
    assert live.bound("market.depth.BTCUSDT") == 60.0
    assert live.bound("market.ticker.BTCUSDT") == 60.0
    assert live.bound("market.tickers") == 60.0
    assert live.bound("market.kline.BTCUSDT.1m") == 120.0
    assert live.bound("market.kline.BTCUSDT.1d") == 86400.0 + 60.0
    assert live.bound("market.kline.BTCUSDT.1M") == 31 * 86400.0 + 60.0
    assert live.bound("market.trade.BTCUSDT") is None  # quiet markets have no trades
    assert live.bound("market.funding.BTCUSDT") is None  # unknown cadence
    assert live.bound("user.1188041528") is None
    assert set(KLINE_SECONDS) == {"1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M"}


def test_bounds_are_overridable_per_channel() -> None:
    live = Liveness(depth=5.0, trade=30.0, kline_grace=None, channels={"funding": 600.0})
    assert live.bound("market.depth.X1") == 5.0
    assert live.bound("market.trade.X1") == 30.0
    assert live.bound("market.kline.X1.1m") is None
    assert live.bound("market.funding.X1") == 600.0
    assert live.bound("market.ticker.X1") == 60.0
    # channels= wins over the named field, also to switch a channel off
    assert Liveness(channels={"depth": None}).bound("market.depth.X1") is None
    assert attrs.evolve(live, depth=None).bound("market.depth.X1") is None


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 0.0}, {"ticker": -1.0}, {"kline_grace": 0}, {"channels": {"funding": 0.0}}],
)
def test_bad_bounds_are_refused(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Liveness(**kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        DEFAULT_LIVENESS.depth = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_LIVENESS.channels["depth"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5", True])
def test_bad_silence_after_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        check_silence_after(bad)
    assert check_silence_after(None) is None
    assert check_silence_after(math.inf) == math.inf


# ------------------------------------------------------------------------ the watch (fake clock)


def test_watch_reports_a_silence_past_its_bound_only() -> None:
    w = TopicWatch("market.depth.X1", 10.0)
    assert w.check(100.0, 0, 100.0, NO_BACKOFF) is None  # not armed yet
    w.arm(100.0, 0)
    rx = 100.0
    for now in range(101, 111):  # other data keeps arriving; this topic says nothing
        rx = float(now)
        assert w.check(float(now), 0, rx, NO_BACKOFF) is None
    assert w.check(110.5, 0, 110.5, NO_BACKOFF) is None  # past the bound: confirmed next tick
    found = w.check(111.5, 0, 111.5, NO_BACKOFF)
    assert found is not None
    assert found.topic == "market.depth.X1" and found.bound == 10.0 and found.streak == 1
    assert found.silent_for == pytest.approx(11.5)
    assert w.silences == 1 and not w.armed  # disarmed until the resubscribe is acknowledged
    assert w.check(200.0, 0, 200.0, NO_BACKOFF) is None


def test_watch_data_resets_the_clock() -> None:
    w = TopicWatch("t", 5.0)
    w.arm(0.0, 0)
    count = 0
    for now in range(1, 60):
        if now % 4 == 0:
            count += 1  # a message every 4 s: always within 5 s
        assert w.check(float(now), count, float(now), NO_BACKOFF) is None


def test_watch_quiet_connection_is_not_a_silent_topic() -> None:
    """Nothing at all arrived since the topic's last data: the connection's own staleness
    check deals with that, not the topic's."""
    w = TopicWatch("t", 5.0)
    w.arm(0.0, 0)
    assert w.check(3.0, 1, 3.0, NO_BACKOFF) is None  # data at 3 (last_seen = 3)
    assert w.check(50.0, 1, 2.9, NO_BACKOFF) is None  # last frame before the topic's last data
    assert w.check(50.0, 1, 3.5, NO_BACKOFF) is None  # a pong after it: suspect...
    assert w.check(51.0, 1, 3.5, NO_BACKOFF) is not None  # ...and still silent: judged


def test_watch_a_stall_that_delays_everything_is_not_a_silence() -> None:
    """The server stalled past the bound; its pong arrived a moment before the topic's data.
    One tick later the data is there: no silence."""
    w = TopicWatch("t", 2.0)
    w.arm(0.0, 0)
    assert w.check(1.0, 1, 1.0, NO_BACKOFF) is None
    assert w.check(4.0, 1, 3.99, NO_BACKOFF) is None  # pong first, data not yet counted
    assert w.check(5.0, 9, 5.0, NO_BACKOFF) is None  # the stalled data arrived
    assert w.check(6.0, 10, 6.0, NO_BACKOFF) is None
    assert w.silences == 0


@pytest.mark.parametrize("bound", [None, math.inf])
def test_watch_without_bound_never_fires(bound: Optional[float]) -> None:
    w = TopicWatch("market.trade.X1", bound)
    w.arm(0.0, 0)
    assert all(w.check(float(t), 0, float(t), NO_BACKOFF) is None for t in range(1, 10_000, 7))


def test_watch_backs_off_per_topic_while_it_keeps_happening() -> None:
    backoff = Backoff(initial=10.0, maximum=40.0, factor=2.0, jitter=False)
    w = TopicWatch("t", 5.0)
    now = 0.0
    waits: List[float] = []
    for _ in range(5):
        w.arm(now, 0)  # resubscribe acknowledged; still nothing comes
        start = now
        while True:
            now += 1.0
            found = w.check(now, 0, now, backoff)
            if found is not None:
                waits.append(now - start)
                break
    # bound, then bound + 10, + 20, + 40, + 40 (capped); 1 s ticks and the confirming
    # check add 2 s
    assert waits == [7.0, 17.0, 27.0, 47.0, 47.0]
    assert w.streak == 5 and w.silences == 5
    # the answer to a resubscribe alone (one snapshot) is not steady data: streak kept
    w.arm(now, 0)
    w.check(now + 1, 1, now + 1, backoff)
    assert w.streak == 5
    w.check(now + 2, 2, now + 2, backoff)  # a second message: the topic is healthy again
    assert w.streak == 0
    assert w.deadline(backoff) == 5.0


@settings(max_examples=200, deadline=None)
@given(
    bound=st.floats(min_value=0.5, max_value=30.0),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.01, max_value=5.0), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=200,
    ),
)
def test_watch_never_reports_early(bound: float, steps: List[Any]) -> None:
    """Whatever the arrival pattern, a reported silence is at least the bound long, measured
    from the topic's real last message (or from arming)."""
    w = TopicWatch("t", bound)
    now, count, last_real, rx = 0.0, 0, 0.0, 0.0
    w.arm(now, count)
    for dt, new_messages, other_data in steps:
        now += dt
        if new_messages:
            count += new_messages
            last_real = now - dt / 2  # it arrived some time during the step
        if other_data:
            rx = now
        found = w.check(now, count, rx, NO_BACKOFF)
        if found is not None:
            assert now - last_real > bound
            assert found.silent_for <= now - last_real + 1e-9
            w.arm(now, count)
            last_real = now


# ------------------------------------------------------------------------ over real sockets

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 5.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
}


def assert_equals_truth(sb: Sandbox, book: OrderBook, timeout: float = 10.0) -> None:
    version, bids, asks = sb.book_truth(book.symbol)
    wait_until(lambda: book.synced and book.version == version, timeout=timeout)
    assert book.levels() == (bids, asks)


def unsubscribes(sb: Sandbox, topic: str) -> int:
    return sum(1 for op in sb.ops if op["op"] == "unsubscribe" and topic in (op["args"] or ()))


def silences(errors: Recorder, topic: str) -> List[TopicSilent]:
    return [e for e in errors.snapshot() if isinstance(e, TopicSilent) and e.topic == topic]


def test_one_silent_depth_topic_among_live_ones_is_healed_alone(sandbox: Sandbox) -> None:
    errors, states = Recorder(), Recorder()
    bound = 1.5
    policy = Liveness(depth=bound, repeat_backoff=Backoff(initial=0.5, maximum=0.5, jitter=False))
    with StreamManager(
        sandbox.ws_url, on_error=errors, on_state=states, liveness=policy, **FAST
    ) as streams:
        books = {s: streams.order_book(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
        trades = Recorder()
        streams.trades("BTCUSDT", trades)
        for book in books.values():
            assert book.wait_synced(10)
        btc = books["BTCUSDT"]
        before = {s: b.stats()["resyncs"] for s, b in books.items()}
        # dead until we say so: the first resubscribe gets an ack but no snapshot
        sandbox.silence_topic("market.depth.BTCUSDT", math.inf)
        started = time.monotonic()
        wait_until(lambda: silences(errors, "market.depth.BTCUSDT"), timeout=20)
        detected_after = time.monotonic() - started
        found = silences(errors, "market.depth.BTCUSDT")[0]
        assert found.silent_for >= bound and found.bound == bound and found.streak == 1
        assert detected_after >= bound  # never early
        wait_until(lambda: unsubscribes(sandbox, "market.depth.BTCUSDT") >= 1)
        assert not btc.synced  # resubscribed, no snapshot yet: it says so
        assert btc.stats()["resyncs"] >= before["BTCUSDT"] + 1
        # the others are untouched: no resync, no resubscribe, no reconnect
        for symbol in ("ETHUSDT", "SOLUSDT"):
            assert books[symbol].stats()["resyncs"] == before[symbol]
            assert books[symbol].synced
            assert unsubscribes(sandbox, f"market.depth.{symbol}") == 0
            assert not silences(errors, f"market.depth.{symbol}")
        assert unsubscribes(sandbox, "market.trade.BTCUSDT") == 0
        stats = streams.stats()
        conn = stats["connections"]["public-0"]
        assert conn["reconnects"] == 0
        assert conn["topic_silences"] >= 1
        assert stats["topics"]["market.depth.BTCUSDT"]["silences"] >= 1
        assert stats["topics"]["market.depth.BTCUSDT"]["silence_bound"] == bound
        assert stats["topics"]["market.depth.ETHUSDT"]["silences"] == 0
        assert stats["topics"]["market.trade.BTCUSDT"]["silence_bound"] is None
        wait_until(lambda: any(s.topic for s in states.snapshot()))
        event = next(s for s in states.snapshot() if s.topic)
        assert isinstance(event, StateEvent)
        assert event.topic == "market.depth.BTCUSDT" and event.connection == "public-0"
        assert event.state is StreamState.CONNECTED and "silent" in event.reason
        # the topic comes back: the next resubscribe (bound + 0.5 s on) rebuilds the book
        sandbox.unsilence_topic("market.depth.BTCUSDT")
        assert btc.wait_synced(20)
        sandbox.pause_market()
        assert_equals_truth(sandbox, btc)
        for symbol in ("ETHUSDT", "SOLUSDT"):
            assert unsubscribes(sandbox, f"market.depth.{symbol}") == 0
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0


def test_quiet_trade_topic_is_never_dead_and_a_dead_topic_backs_off(sandbox: Sandbox) -> None:
    """A trade topic that says nothing is left alone (no bound by default), while a depth topic
    that stays dead is resubscribed again and again, each time after a longer silence."""
    errors = Recorder()
    backoff = Backoff(initial=1.0, maximum=2.0, factor=2.0, jitter=False)
    with StreamManager(
        sandbox.ws_url,
        on_error=errors,
        liveness=Liveness(repeat_backoff=backoff),
        **FAST,
    ) as streams:
        trades = Recorder()
        assert streams.trades("BTCUSDT", trades).wait_ready(10)
        eth = streams.order_book("ETHUSDT")
        sol = streams.order_book("SOLUSDT", silence_after=1.0)
        assert eth.wait_synced(10) and sol.wait_synced(10)
        sandbox.silence_topic("market.trade.BTCUSDT", math.inf)
        sandbox.silence_topic("market.depth.SOLUSDT", math.inf)  # resubscribing won't help
        wait_until(lambda: len(silences(errors, "market.depth.SOLUSDT")) >= 3, timeout=40)
        found = silences(errors, "market.depth.SOLUSDT")
        assert [e.streak for e in found[:3]] == [1, 2, 3]
        for n, error in enumerate(found[:3]):  # bound, bound + 1, bound + 2 (capped)
            assert error.silent_for >= 1.0 + (backoff.cap(n - 1) if n else 0.0)
        assert not silences(errors, "market.trade.BTCUSDT")
        stats = streams.stats()
        assert stats["topics"]["market.trade.BTCUSDT"]["silences"] == 0
        assert stats["topics"]["market.depth.SOLUSDT"]["silence_streak"] >= 3
        assert unsubscribes(sandbox, "market.trade.BTCUSDT") == 0
        assert stats["connections"]["public-0"]["reconnects"] == 0
        assert eth.synced and eth.stats()["resyncs"] == 0
        assert not sol.synced
        sandbox.unsilence_topic()
        assert sol.wait_synced(20)  # the next resubscribe heals it


def test_custom_bound_per_subscription_is_honoured(sandbox: Sandbox) -> None:
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors, **FAST) as streams:  # default policy
        btc = streams.order_book("BTCUSDT", silence_after=1.5)
        eth = streams.order_book("ETHUSDT")  # the default bound: 60 s
        sol_trades = Recorder()
        streams.trades("SOLUSDT", sol_trades, silence_after=1.0)  # an event channel, opted in
        ticks = Recorder()
        streams.ticker("ETHUSDT", ticks, silence_after=math.inf)  # opted out
        assert btc.wait_synced(10) and eth.wait_synced(10)
        wait_until(lambda: len(sol_trades) > 0 and len(ticks) > 0)
        stats = streams.stats()["topics"]
        assert stats["market.depth.BTCUSDT"]["silence_bound"] == 1.5
        assert stats["market.depth.ETHUSDT"]["silence_bound"] == 60.0
        assert stats["market.trade.SOLUSDT"]["silence_bound"] == 1.0
        assert stats["market.ticker.ETHUSDT"]["silence_bound"] is None
        for topic in (
            "market.depth.BTCUSDT",
            "market.depth.ETHUSDT",
            "market.trade.SOLUSDT",
            "market.ticker.ETHUSDT",
        ):
            sandbox.silence_topic(topic)
        wait_until(lambda: silences(errors, "market.depth.BTCUSDT"), timeout=20)
        wait_until(lambda: silences(errors, "market.trade.SOLUSDT"), timeout=20)
        assert btc.wait_synced(10)
        assert silences(errors, "market.depth.BTCUSDT")[0].bound == 1.5
        assert silences(errors, "market.trade.SOLUSDT")[0].silent_for >= 1.0
        count = len(sol_trades)
        wait_until(lambda: len(sol_trades) > count)  # resubscribed: trades flow again
        # the 60 s bound and the opted-out ticker are not judged in these few seconds
        assert not silences(errors, "market.depth.ETHUSDT")
        assert not silences(errors, "market.ticker.ETHUSDT")
        assert unsubscribes(sandbox, "market.depth.ETHUSDT") == 0
        assert eth.stats()["resyncs"] == 0
        # a stricter second registration of a topic wins
        streams.depth("ETHUSDT", lambda u: None, silence_after=2.0)
        assert streams.stats()["topics"]["market.depth.ETHUSDT"]["silence_bound"] == 2.0
        wait_until(lambda: silences(errors, "market.depth.ETHUSDT"), timeout=20)
        assert eth.wait_synced(10)
        sandbox.pause_market()
        assert_equals_truth(sandbox, btc)
        assert_equals_truth(sandbox, eth)
        assert streams.stats()["connections"]["public-0"]["reconnects"] == 0
