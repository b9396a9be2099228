"""Topic grammar (PROTOCOL.md §4): builders, parse_topic, is_known_topic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.protocol.topics import (
    CHANNELS,
    INTERVALS,
    TICKERS_TOPIC,
    Topic,
    channel_of,
    depth_topic,
    is_known_topic,
    kline_topic,
    parse_topic,
    ticker_topic,
    trade_topic,
    user_topic,
)

SYMBOLS = st.from_regex(r"[A-Z0-9](?:[A-Z0-9_-]{0,28}[A-Z0-9])?", fullmatch=True).filter(
    lambda s: len(s) >= 2
)


def test_builders_produce_documented_names() -> None:
    assert depth_topic("BTCUSDT") == "market.depth.BTCUSDT"
    assert trade_topic("BTCUSDT") == "market.trade.BTCUSDT"
    assert kline_topic("ETHUSDT", "1m") == "market.kline.ETHUSDT.1m"
    assert ticker_topic("BTCUSDT") == "market.ticker.BTCUSDT"
    assert TICKERS_TOPIC == "market.tickers"
    assert user_topic(5794) == "user.5794"
    assert user_topic("1188041528") == "user.1188041528"


def test_builders_upper_case_symbols() -> None:
    assert trade_topic("btcusdt") == "market.trade.BTCUSDT"
    assert kline_topic("ethUsdt", "4h") == "market.kline.ETHUSDT.4h"


def test_intervals_are_the_documented_set_and_case_sensitive() -> None:
    assert INTERVALS == ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M")
    assert parse_topic("market.kline.BTCUSDT.1m").interval == "1m"
    assert parse_topic("market.kline.BTCUSDT.1M").interval == "1M"
    assert kline_topic("BTCUSDT", "1M") != kline_topic("BTCUSDT", "1m")
    with pytest.raises(ValueError, match="interval"):
        kline_topic("BTCUSDT", "1H")
    with pytest.raises(ValueError, match="interval"):
        parse_topic("market.kline.BTCUSDT.2m")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "B",
        "BTC USDT",
        "BTC.USDT",
        " BTCUSDT",
        "BTCUSDT\n",
        "-BTC",
        "BTC_",
        "A" * 31,
        "BTCÜSD",
        "btcusd\u0131",  # dotless i upper-cases to ASCII I
    ],
)
def test_builders_reject_bad_symbols_naming_them(bad: str) -> None:
    with pytest.raises(ValueError, match="symbol"):
        trade_topic(bad)


@pytest.mark.parametrize("bad", [None, 5, b"BTCUSDT", ["BTCUSDT"]])
def test_builders_reject_non_strings(bad: object) -> None:
    with pytest.raises(ValueError, match="symbol"):
        depth_topic(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, 1.5, "", "a.b", "x" * 65, "5 7"])
def test_user_topic_rejects_bad_ids(bad: object) -> None:
    with pytest.raises(ValueError, match="user id"):
        user_topic(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("market.depth.BTCUSDT", Topic("depth", "BTCUSDT", None)),
        ("market.trade.BTCUSDT", Topic("trade", "BTCUSDT", None)),
        ("market.kline.BTCUSDT.15m", Topic("kline", "BTCUSDT", "15m")),
        ("market.ticker.1000PEPEUSDT", Topic("ticker", "1000PEPEUSDT", None)),
        ("market.tickers", Topic("tickers", None, None)),
        ("user.5794", Topic("user", "5794", None)),
    ],
)
def test_parse_known_topics(wire: str, expected: Topic) -> None:
    topic = parse_topic(wire)
    assert topic == expected
    assert topic.name == wire
    assert str(topic) == wire
    assert topic.channel in CHANNELS
    assert is_known_topic(wire)


@pytest.mark.parametrize(
    ("wire", "part"),
    [
        ("market.orders.BTCUSDT", "unknown channel"),
        ("market.depth", "market.depth"),
        ("market.depth.BTCUSDT.extra", "market.depth"),
        ("market.depth.btcusdt", "upper-case"),
        ("market.depth.", "bad symbol"),
        ("market.kline.BTCUSDT", "kline"),
        ("market.kline.BTCUSDT.1m.x", "kline"),
        ("market.tickers.BTCUSDT", "market.tickers"),
        ("markets.depth.BTCUSDT", "market"),
        ("user.", "user"),
        ("user.1.2", "user"),
        ("", "bad topic"),
        ("market", "market"),
        ("depth.BTCUSDT", "bad topic"),
        ("market.depth.BTCUSDT" + "X" * 300, "longer"),
    ],
)
def test_parse_rejects_bad_topics_naming_the_part(wire: str, part: str) -> None:
    with pytest.raises(ValueError, match=part):
        parse_topic(wire)
    assert not is_known_topic(wire)


@pytest.mark.parametrize("bad", [None, 1, b"market.tickers", ("market.tickers",)])
def test_non_string_topics(bad: object) -> None:
    with pytest.raises(ValueError, match="str"):
        parse_topic(bad)  # type: ignore[arg-type]
    assert is_known_topic(bad) is False


@settings(max_examples=150, deadline=None)
@given(SYMBOLS, st.sampled_from(INTERVALS))
def test_build_then_parse_round_trips(symbol: str, interval: str) -> None:
    for wire, channel in [
        (depth_topic(symbol), "depth"),
        (trade_topic(symbol), "trade"),
        (ticker_topic(symbol), "ticker"),
    ]:
        assert parse_topic(wire) == Topic(channel, symbol, None)
    kline = kline_topic(symbol, interval)
    assert parse_topic(kline) == Topic("kline", symbol, interval)
    assert parse_topic(kline).name == kline


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_parse_never_raises_anything_but_value_error(text: str) -> None:
    try:
        topic = parse_topic(text)
    except ValueError:
        assert not is_known_topic(text)
    else:
        assert topic.name == text
        assert is_known_topic(text)


@pytest.mark.parametrize(
    ("wire", "channel"),
    [
        ("market.depth.BTCUSDT", "depth"),
        ("market.kline.BTCUSDT.1m", "kline"),
        ("market.tickers", "tickers"),
        ("user.5794", "user"),
        ("market.funding.BTCUSDT", None),
        ("market.markPrice.BTCUSDT", None),
        ("market.liquidations", None),
        ("market.index.BTC_USDT.1s", None),
    ],
)
def test_channel_of_accepts_known_and_wellformed_unknown_channels(
    wire: str, channel: object
) -> None:
    assert channel_of(wire) == channel
    assert is_known_topic(wire) is (channel is not None)  # unknown ones stay unknown


@pytest.mark.parametrize(
    ("wire", "part"),
    [
        ("market.depth.btcusdt", "upper-case"),  # known channels keep their strict grammar
        ("market.kline.BTCUSDT.1x", "interval"),
        ("market.tickers.X", "market.tickers"),
        ("market.Depth.BTCUSDT", "case-sensitive"),
        ("market.TRADE.BTCUSDT", "case-sensitive"),
        ("market.", "channel name"),
        ("market.1funding.X", "channel name"),
        ("market.fund ing.X", "channel name"),
        ("market.funding..X", "bad part"),
        ("market.funding.X.", "bad part"),
        ("market.funding.X$", "bad part"),
        ("market.funding." + ".".join("A" * 7), "parts"),
        ("market.funding." + "X" * 300, "longer"),
        ("funding.BTCUSDT", "bad topic"),
    ],
)
def test_channel_of_rejects_malformed_topics_naming_the_part(wire: str, part: str) -> None:
    with pytest.raises(ValueError, match=part):
        channel_of(wire)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_channel_of_never_raises_anything_but_value_error(text: str) -> None:
    try:
        channel = channel_of("market." + text)
    except ValueError:
        return
    assert channel is None or channel in CHANNELS
