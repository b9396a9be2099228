"""Pure tests of the sandbox's market simulation, wire encoding and auth bookkeeping."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.sandbox.auth import TOLERANCE_MESSAGE, Auth, sign
from sixmm.sandbox.market import INTERVALS, DepthEvent, Market, fmt, kline_open
from sixmm.sandbox.server import _merge
from sixmm.sandbox.wire import depth_frame, validate_topic

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def apply(book: Dict[str, str], levels: List[Tuple[str, str]]) -> None:
    for price, qty in levels:
        if Decimal(qty) == 0:
            book.pop(price, None)
        else:
            book[price] = qty


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    ticks=st.integers(1, 80),
    skips=st.lists(st.tuples(st.integers(0, 79), st.integers(1, 5)), max_size=3),
)
def test_updates_rebuild_the_truth_and_never_cross(
    seed: int, ticks: int, skips: List[Tuple[int, int]]
) -> None:
    market = Market(SYMBOLS, seed, levels=30, now_ms=1_700_000_000_000)
    books = {}
    for symbol, sb in market.books.items():
        snap = sb.snapshot()
        books[symbol] = (snap.end, dict(snap.bids), dict(snap.asks))
    skip_at = dict(skips)
    for i in range(ticks):
        if i in skip_at:
            market.skip("ETHUSDT", skip_at[i])
        for ev in market.tick(1_700_000_000_000 + i * 20).depth:
            version, bids, asks = books[ev.symbol]
            assert ev.kind == "update" and ev.end >= ev.start
            if ev.start != version + 1:  # only a requested skip may jump
                assert ev.symbol == "ETHUSDT" and ev.start == version + 1 + skip_at[i]
                truth = market.books[ev.symbol].truth()
                books[ev.symbol] = (truth[0], truth[1], truth[2])  # resync from the truth
                continue
            assert 1 <= len(ev.bids) + len(ev.asks) <= 60
            apply(bids, ev.bids)
            apply(asks, ev.asks)
            books[ev.symbol] = (ev.end, bids, asks)
            assert max(map(Decimal, bids)) < min(map(Decimal, asks))
    for symbol, sb in market.books.items():
        assert books[symbol] == sb.truth()
        version, bids, asks = sb.truth()
        assert 10 <= len(bids) <= 300 and 10 <= len(asks) <= 300


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), ticks=st.integers(1, 30))
def test_merged_update_equals_the_two_it_covers(seed: int, ticks: int) -> None:
    market = Market(("BTCUSDT",), seed, levels=20)
    sb = market.books["BTCUSDT"]
    for _ in range(ticks):
        sb.advance()
    prev = sb.advance()
    version, bids, asks = sb.truth()  # the book after prev, i.e. at prev.end
    ev = sb.advance(2)
    merged = _merge(prev, ev)
    assert (merged.start, merged.end) == (prev.start, ev.end)
    assert merged.start <= version + 1 <= merged.end
    apply(bids, merged.bids)
    apply(asks, merged.asks)
    assert (ev.end, bids, asks) == sb.truth()
    assert [Decimal(p) for p, _ in merged.bids] == sorted(
        (Decimal(p) for p, _ in merged.bids), reverse=True
    )


def test_same_seed_same_ticks_same_everything() -> None:
    def run(seed: int) -> List[object]:
        m = Market(SYMBOLS, seed, ticker_every=3, kline_every=5, now_ms=1_700_000_000_000)
        out: List[object] = []
        for i in range(40):
            res = m.tick(1_700_000_000_000 + i)
            out.append([(e.start, e.end, e.bids, e.asks) for e in res.depth])
            out.append((res.trades, res.klines, res.tickers))
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_cross_update_crosses_but_truth_does_not() -> None:
    sb = Market(("BTCUSDT",), 0).books["BTCUSDT"]
    before = sb.truth()
    ev = sb.crossed_update()
    assert (ev.start, ev.end) == (before[0] + 1, before[0] + 1)
    assert Decimal(ev.bids[0][0]) >= min(map(Decimal, before[2]))
    assert sb.truth() == (before[0] + 1, before[1], before[2])


def test_trades_klines_tickers_are_consistent() -> None:
    m = Market(("SOLUSDT",), 5, ticker_every=1, kline_every=1, now_ms=1_700_000_000_000)
    sb = m.books["SOLUSDT"]
    trades = sb.trades(1_700_000_000_000, 3)
    assert len(trades) == 3 and len({t["tradeId"] for t in trades}) == 3
    assert all(t["side"] in ("BUY", "SELL") and t["time"] == 1_700_000_000_000 for t in trades)
    res = m.tick(1_700_000_000_000)
    assert {iv for _, iv, _ in res.klines} == set(INTERVALS)
    (ticker,) = res.tickers
    assert Decimal(ticker["low"]) <= Decimal(ticker["lastPrice"]) <= Decimal(ticker["high"])  # type: ignore[arg-type]
    # a kline whose period ended is sent once more as closed, then a new one starts
    later = 1_700_000_000_000 + 61_000
    minute = [k for iv, k in sb.kline_dicts(later) if iv == "1m"]
    assert [k["closed"] for k in minute] == [True, False]
    assert minute[1]["openTime"] == minute[0]["closeTime"] + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("n", "d", "text"),
    [(5, 3, "0.005"), (-1234, 2, "-12.34"), (7, 0, "7"), (850000, 1, "85000.0"), (0, 2, "0.00")],
)
def test_fmt(n: int, d: int, text: str) -> None:
    assert fmt(n, d) == text


@settings(max_examples=100, deadline=None)
@given(now=st.integers(0, 4_000_000_000_000), interval=st.sampled_from(INTERVALS))
def test_kline_periods_contain_now_and_start_on_boundaries(now: int, interval: str) -> None:
    start, end = kline_open(interval, now)
    assert start <= now <= end
    assert kline_open(interval, end + 1)[0] == end + 1  # periods tile the time line
    opened = datetime.datetime.fromtimestamp(start / 1000, tz=datetime.timezone.utc)
    if interval == "1w":
        assert opened.weekday() == 0 and opened.hour == 0
    if interval == "1M":
        assert opened.day == 1 and calendar.timegm(opened.timetuple()) * 1000 == start


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("market.depth.BTCUSDT", True),
        ("market.kline.ETHUSDT.1M", True),
        ("market.tickers", True),
        ("market.ticker.SOLUSDT", True),
        ("market.kline.ETHUSDT.2m", False),
        ("market.kline.ETHUSDT", False),
        ("market.depth.BTCUSDT.x", False),
        ("market.depth.DOGEUSDT", False),
        ("market.candles.BTCUSDT", False),
        ("user.1188041528", False),
        ("", False),
        (42, False),
    ],
)
def test_validate_topic(topic: object, ok: bool) -> None:
    assert (validate_topic(topic, SYMBOLS) is None) is ok


def test_depth_frame_doc_shape() -> None:
    ev = DepthEvent("BTCUSDT", "update", 5, 7, [("1.0", "2")], [("1.1", "0")])
    frame = json.loads(depth_frame(ev, "doc", 123))
    assert frame == {
        "topic": "market.depth.BTCUSDT",
        "event": "data",
        "ts": 123,
        "data": {
            "symbol": "BTCUSDT",
            "type": "update",
            "startVersion": 5,
            "endVersion": 7,
            "bids": [["1.0", "2"]],
            "asks": [["1.1", "0"]],
        },
    }
    prev = json.loads(depth_frame(ev, "prev_field", 1))["data"]
    assert prev["prevEndVersion"] == 4 and "startVersion" not in prev


# ------------------------------------------------------------------------- auth


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def make_auth(clock: Clock) -> Auth:
    return Auth(
        api_key="k",
        api_secret="s",
        username="u",
        password="p",
        user_id="7",
        listen_key_ttl=60.0,
        server_ms=clock,
        wall_ms=clock,
    )


def test_hmac_checks() -> None:
    clock = Clock()
    auth = make_auth(clock)
    qs = f"symbol=BTCUSDT&timestamp={clock.ms}"
    body = '{"a":1}'
    good = hmac.new(b"s", (qs + body).encode(), hashlib.sha256).hexdigest()
    assert sign("s", qs + body) == good
    headers = {"X-API-KEY": "k"}
    assert auth.check_rest(headers, f"{qs}&signature={good}", body, replay_guard=False) is None
    assert auth.check_rest(headers, f"{qs}&signature={good.upper()}", body, False) is not None
    assert auth.check_rest(headers, f"{qs}&signature={good}", body + " ", False) == (
        401,
        1003,
        "Invalid signature",
    )
    assert auth.check_rest(headers, f"{qs}&signature={good}", body, replay_guard=True) is None
    replay = auth.check_rest(headers, f"{qs}&signature={good}", body, replay_guard=True)
    assert replay is not None and replay[1:] == (3004, "Signature replay detected")
    clock.ms += 10_001
    late = auth.check_rest(headers, f"{qs}&signature={good}", body, False)
    assert late is not None and late[2] == TOLERANCE_MESSAGE
    assert auth.check_rest({}, qs, "", False) == (401, 1001, "Authentication required")


def test_tokens_and_listen_keys_follow_the_clock() -> None:
    clock = Clock()
    auth = make_auth(clock)
    failure, data = auth.login("u", "p")
    assert failure is None
    token = str(data["accessToken"])
    assert auth.check_token(token) is None
    assert auth.ws_auth(None, token) == (True, "7")
    clock.ms += 3_600_000
    assert auth.check_token(token) == (401, 1002, "Token expired")
    assert auth.login("u", "wrong")[0] == (401, 1003, "Invalid username or password")
    key, expiry = auth.create_key()
    assert expiry == clock.ms + 60_000
    clock.ms += 30_000
    assert auth.renew_key(key) == clock.ms + 60_000
    clock.ms += 60_000
    assert auth.due() == [key]
    assert auth.renew_key(key) is None
    assert auth.ws_auth(key, None) == (False, "listenKey not found or expired")


def test_a_kline_rolled_by_a_trade_is_still_published_closed() -> None:
    from sixmm.sandbox.market import SymbolBook

    start = 1_700_000_040_000  # 40 s into a minute
    book = SymbolBook("BTCUSDT", 0, now_ms=start)
    first_open, first_close = book.klines["1m"][0], book.klines["1m"][1]
    book._fold(book.mid, 5, first_close + 10)  # a trade after the minute ended rolls it
    sent = [(iv, k) for iv, k in book.kline_dicts(first_close + 20) if iv == "1m"]
    closed = [k for _, k in sent if k["closed"]]
    assert [k["openTime"] for k in closed] == [first_open]
    assert [k["openTime"] for _, k in sent if not k["closed"]] == [first_close + 1]
    assert book.kline_dicts(first_close + 30)[0][1]["closed"] is False  # sent once
