"""Payload models (PROTOCOL.md §4, §5): from_wire, convert, user_event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Dict, List, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.errors import ProtocolError
from sixmm.protocol.events import PrivatePush, Push
from sixmm.protocol.frames import decode
from sixmm.protocol.models import (
    AccountUpdate,
    Balance,
    DepthUpdate,
    Kline,
    OrderUpdate,
    Position,
    Ticker,
    Trade,
    UserEvent,
    convert,
    user_event,
)

D = Decimal


def push(topic: str, data: Any, ts: Optional[int] = 1772007815000, snapshot: bool = False) -> Push:
    return Push(topic, ts, data, snapshot, {"topic": topic, "ts": ts, "data": data})


def private(data: Any, ts: Optional[int] = 1771047000000) -> PrivatePush:
    event_type = data.get("eventType") if isinstance(data, dict) else None
    return PrivatePush("user.5794", ts, event_type, data, {"topic": "user.5794", "data": data})


TRADE = {
    "symbol": "BTCUSDT",
    "tradeId": "987654321",
    "price": "85000.10",
    "quantity": "0.500",
    "side": "BUY",
    "time": 1772007814999,
}


# --------------------------------------------------------------------------- trades


def test_trade_from_documented_fields() -> None:
    trade = Trade.from_wire(TRADE)
    assert trade == Trade(
        "BTCUSDT", D("85000.10"), D("0.500"), "BUY", "987654321", 1772007814999, {}
    )
    assert str(trade.price) == "85000.10"  # the exact wire string, no float on the way
    assert trade.raw is TRADE
    assert "raw" not in repr(trade)


def test_trade_variants_and_unknown_fields() -> None:
    trade = Trade.from_wire(
        {
            "tradeId": 12,
            "price": 85000.5,
            "qty": 1,
            "side": "sell",
            "time": "1772007814999",
            "new": [1],
        },
        symbol="BTCUSDT",
    )
    assert trade.symbol == "BTCUSDT"
    assert trade.trade_id == "12"
    assert trade.price == D("85000.5")
    assert trade.quantity == D(1)
    assert trade.side == "SELL"
    assert trade.time == 1772007814999


def test_trade_missing_optionals_are_none() -> None:
    trade = Trade.from_wire({"symbol": "BTCUSDT", "price": "1", "quantity": "2"})
    assert (trade.side, trade.trade_id, trade.time) == (None, None, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": None}, "price"),
        ({"price": "abc"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"price": "Infinity"}, "price"),
        ({"price": "1e999999"}, "price"),
        ({"price": [1]}, "price"),
        ({"price": True}, "price"),
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": None}, "quantity"),
        ({"time": "yesterday"}, "time"),
        ({"time": 1.5}, "time"),
        ({"side": 1}, "side"),
        ({"tradeId": [1]}, "tradeId"),
        ({"symbol": None}, "symbol"),
        ({"symbol": ["x"]}, "symbol"),
    ],
)
def test_trade_bad_fields_raise_protocol_error_naming_them(
    change: Dict[str, Any], field: str
) -> None:
    data = {**TRADE, **change}
    with pytest.raises(ProtocolError, match=f"Trade.{field}"):
        Trade.from_wire(data)


def test_trade_payload_must_be_an_object() -> None:
    with pytest.raises(ProtocolError, match="object"):
        Trade.from_wire(["85000", "1"])


def test_convert_trades_one_per_trade() -> None:
    one = convert("trade", push("market.trade.BTCUSDT", TRADE))
    assert [t.trade_id for t in one] == ["987654321"]
    many = convert("trade", push("market.trade.BTCUSDT", [TRADE, {**TRADE, "tradeId": "2"}]))
    assert [t.trade_id for t in many] == ["987654321", "2"]
    assert convert("trade", push("market.trade.BTCUSDT", [])) == []
    no_symbol = {k: v for k, v in TRADE.items() if k != "symbol"}
    from_topic = convert("trade", push("market.trade.ETHUSDT", no_symbol))
    assert from_topic[0].symbol == "ETHUSDT"


# --------------------------------------------------------------------------- klines

KLINE = {
    "symbol": "BTCUSDT",
    "interval": "1m",
    "openTime": 1772007780000,
    "open": "85000.0",
    "high": "85010.5",
    "low": "84990.0",
    "close": "85005.1",
    "volume": "12.345",
    "closeTime": 1772007839999,
}


def test_kline_documented_fields() -> None:
    kline = Kline.from_wire(KLINE)
    assert kline == Kline(
        "BTCUSDT",
        "1m",
        1772007780000,
        D("85000.0"),
        D("85010.5"),
        D("84990.0"),
        D("85005.1"),
        D("12.345"),
        1772007839999,
        {},  # the contract's positional order: ..., close_time, raw
    )
    assert kline.closed is None


@pytest.mark.parametrize(
    ("key", "value", "closed"),
    [("closed", True, True), ("isFinal", False, False), ("x", "true", True)],
)
def test_kline_closed_flag(key: str, value: Any, closed: bool) -> None:
    assert Kline.from_wire({**KLINE, key: value}).closed is closed


def test_kline_short_aliases_and_topic_fallback() -> None:
    kline = Kline.from_wire(
        {"t": 1, "o": "1", "h": "2", "l": "0.5", "c": "1.5", "v": "10", "T": 2, "x": False},
        "ETHUSDT",
        "1M",
    )
    assert (kline.symbol, kline.interval, kline.open_time, kline.close_time) == (
        "ETHUSDT",
        "1M",
        1,
        2,
    )
    assert (kline.open, kline.high, kline.low, kline.close, kline.volume) == (
        D(1),
        D(2),
        D("0.5"),
        D("1.5"),
        D(10),
    )
    assert kline.closed is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"openTime": None}, "openTime"),
        ({"open": None}, "open"),
        ({"high": "x"}, "high"),
        ({"volume": "-1"}, "volume"),
        ({"closeTime": "later"}, "closeTime"),
        ({"closed": "yes"}, "closed"),
        ({"interval": None}, "interval"),
    ],
)
def test_kline_bad_fields(change: Dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=f"Kline.{field}"):
        Kline.from_wire({**KLINE, **change})


def test_convert_kline_uses_topic_for_missing_symbol_and_interval() -> None:
    data = {k: v for k, v in KLINE.items() if k not in ("symbol", "interval")}
    (kline,) = convert("kline", push("market.kline.ETHUSDT.4h", data))
    assert (kline.symbol, kline.interval) == ("ETHUSDT", "4h")
    several = convert("kline", push("market.kline.BTCUSDT.1m", [KLINE, KLINE]))
    assert len(several) == 2


# --------------------------------------------------------------------------- tickers

TICKER = {
    "symbol": "BTCUSDT",
    "lastPrice": "85000.1",
    "open": "84000",
    "high": "86000",
    "low": "83000",
    "volume": "1234.5",
    "quoteVolume": "104000000.25",
    "priceChange": "-1000.9",
    "priceChangePercent": "-1.18",
    "markPrice": "85001",
    "indexPrice": "84999.5",
    "fundingRate": "0.0001",
}


def test_ticker_documented_fields() -> None:
    ticker = Ticker.from_wire(TICKER)
    assert ticker.last_price == D("85000.1")
    assert ticker.price_change == D("-1000.9")
    assert ticker.price_change_percent == D("-1.18")
    assert ticker.quote_volume == D("104000000.25")
    assert ticker.funding_rate == D("0.0001")
    assert (ticker.open, ticker.high, ticker.low) == (D(84000), D(86000), D(83000))
    assert (ticker.mark_price, ticker.index_price, ticker.volume) == (
        D(85001),
        D("84999.5"),
        D("1234.5"),
    )


def test_ticker_missing_optionals_and_aliases() -> None:
    ticker = Ticker.from_wire(
        {"symbol": "X1", "openPrice": "1", "highPrice": "2", "lowPrice": "", "extra": {}}
    )
    assert (ticker.open, ticker.high, ticker.low, ticker.last_price, ticker.funding_rate) == (
        D(1),
        D(2),
        None,
        None,
        None,
    )


def test_ticker_bad_fields() -> None:
    with pytest.raises(ProtocolError, match=r"Ticker\.lastPrice"):
        Ticker.from_wire({**TICKER, "lastPrice": "12abc"})
    with pytest.raises(ProtocolError, match=r"Ticker\.symbol"):
        Ticker.from_wire({k: v for k, v in TICKER.items() if k != "symbol"})


def test_convert_ticker_and_tickers() -> None:
    (single,) = convert("ticker", push("market.ticker.BTCUSDT", {**TICKER, "symbol": None}))
    assert isinstance(single, Ticker) and single.symbol == "BTCUSDT"
    args = convert("tickers", push("market.tickers", [TICKER, {**TICKER, "symbol": "ETHUSDT"}]))
    assert len(args) == 1  # the callback gets ONE argument: the list of tickers
    assert [t.symbol for t in args[0]] == ["BTCUSDT", "ETHUSDT"]
    wrapped = convert("tickers", push("market.tickers", {"tickers": [TICKER]}))
    assert [t.symbol for t in wrapped[0]] == ["BTCUSDT"]
    bads: List[Any] = [{"other": []}, "x", None]
    for bad in bads:
        with pytest.raises(ProtocolError, match="tickers"):
            convert("tickers", push("market.tickers", bad))


# --------------------------------------------------------------------------- depth

DEPTH = {
    "symbol": "BTCUSDT",
    "type": "snapshot",
    "startVersion": 1001,
    "endVersion": 1001,
    "bids": [["85000.1", "0.500"], ["85000.0", "1.2"]],
    "asks": [["85000.2", "0.3"]],
}


def test_depth_documented_snapshot() -> None:
    update = DepthUpdate.from_wire(DEPTH, ts=1772007815000)
    assert update == DepthUpdate(
        "BTCUSDT",
        "snapshot",
        1001,
        1001,
        None,
        ((D("85000.1"), D("0.500")), (D("85000.0"), D("1.2"))),
        ((D("85000.2"), D("0.3")),),
        1772007815000,
        None,
    )
    assert update.raw is DEPTH


def test_depth_string_versions_object_levels_and_predecessor() -> None:
    data = {
        "type": "update",
        "endVersion": "1003",
        "prevEndVersion": "1002",
        "bids": [{"price": "1.5", "quantity": "0"}],
        "asks": [{"price": "2", "qty": "3"}],
    }
    update = DepthUpdate.from_wire(data, symbol="ETHUSDT")
    assert (
        update.symbol,
        update.kind,
        update.start_version,
        update.end_version,
        update.prev_version,
    ) == (
        "ETHUSDT",
        "update",
        None,
        1003,
        1002,
    )
    assert update.bids == ((D("1.5"), D(0)),)
    assert update.asks == ((D(2), D(3)),)


def test_depth_kind_from_envelope_snapshot_or_unknown() -> None:
    data = {k: v for k, v in DEPTH.items() if k != "type"}
    (from_envelope,) = convert("depth", push("market.depth.BTCUSDT", data, snapshot=True))
    assert from_envelope.kind == "snapshot"
    (unknown,) = convert("depth", push("market.depth.BTCUSDT", data))
    assert unknown.kind is None and unknown.ts == 1772007815000


@pytest.mark.parametrize(
    "change",
    [
        {"endVersion": None},
        {"endVersion": "x"},
        {"bids": [["-1", "1"]]},
        {"asks": [["1", "-1"]]},
        {"bids": "no"},
        {"type": "delta"},
        {"bids": [["NaN", "1"]]},
    ],
)
def test_depth_bad_payloads(change: Dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        DepthUpdate.from_wire({**DEPTH, **change})
    with pytest.raises(ProtocolError):
        convert("depth", push("market.depth.BTCUSDT", {**DEPTH, **change}))


def test_depth_through_decode_end_to_end() -> None:
    text = (
        '{"topic":"market.depth.BTCUSDT","event":"data","ts":1772007815000,"data":{"symbol":"BTCUSDT",'
        '"type":"update","startVersion":"1002","endVersion":"1002","bids":[["85000.1","0"]],"asks":[]}}'
    )
    frame = decode(text)
    assert isinstance(frame, Push)
    (update,) = convert("depth", frame)
    assert (update.kind, update.start_version, update.bids) == (
        "update",
        1002,
        ((D("85000.1"), D(0)),),
    )


# --------------------------------------------------------------------------- convert, generic


def test_convert_unknown_channel_gives_the_envelope() -> None:
    p = push("market.funding.BTCUSDT", {"a": 1})
    assert convert("funding", p) == [p.raw]
    bare = Push("x.y", 5, {"a": 1})
    assert convert("nope", bare) == [{"topic": "x.y", "ts": 5, "data": {"a": 1}}]


@pytest.mark.parametrize("channel", ["trade", "kline", "ticker", "depth"])
@pytest.mark.parametrize("data", [None, 5, "x", [1], {"nothing": True}])
def test_convert_bad_payloads_raise_protocol_error_only(channel: str, data: Any) -> None:
    with pytest.raises(ProtocolError):
        convert(channel, push(f"market.{channel}.BTCUSDT", data))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "symbol",
        "price",
        "quantity",
        "side",
        "tradeId",
        "time",
        "openTime",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "closeTime",
        "closed",
        "lastPrice",
        "type",
        "startVersion",
        "endVersion",
        "bids",
        "asks",
        "tickers",
        "orderId",
        "orderStatus",
        "balances",
        "positions",
        "eventType",
    ]
)
PAYLOADS = st.one_of(
    JSON,
    st.dictionaries(FIELDS, JSON, max_size=8),
    st.lists(st.dictionaries(FIELDS, JSON, max_size=8), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["trade", "kline", "ticker", "tickers", "depth"]), PAYLOADS, st.booleans())
def test_convert_raises_nothing_but_protocol_error(channel: str, data: Any, snapshot: bool) -> None:
    try:
        convert(channel, push(f"market.{channel}.BTCUSDT.1m", data, snapshot=snapshot))
    except ProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "OTHER"]),
    st.dictionaries(FIELDS, JSON, max_size=8),
)
def test_user_event_raises_nothing_but_protocol_error(
    event_type: str, data: Dict[str, Any]
) -> None:
    data["eventType"] = event_type
    try:
        user_event(private(data))
    except ProtocolError:
        pass


# --------------------------------------------------------------------------- private events

ORDER = {
    "eventType": "ORDER_TRADE_UPDATE",
    "eventTime": 1771047000001,
    "symbol": "BTCUSDT",
    "orderId": "1234567890123456789",
    "clientOrderId": "my-1",
    "side": "BUY",
    "positionSide": "LONG",
    "orderType": "LIMIT",
    "timeInForce": "GTC",
    "orderStatus": "PARTIALLY_FILLED",
    "price": "85000",
    "quantity": "0.010",
    "filledQuantity": "0.004",
    "avgPrice": "85000",
    "lastFilledPrice": "85000",
    "lastFilledQuantity": "0.004",
    "updateTime": 1771047000000,
}


def test_order_update_documented_ws_names() -> None:
    order = user_event(private(ORDER))
    assert isinstance(order, OrderUpdate)
    assert order == OrderUpdate(
        "BTCUSDT",
        "1234567890123456789",
        "my-1",
        "BUY",
        "LONG",
        "LIMIT",
        "GTC",
        "PARTIALLY_FILLED",
        D(85000),
        D("0.010"),
        D("0.004"),
        D(85000),
        D(85000),
        D("0.004"),
        1771047000000,
        1771047000001,
        {},
    )
    assert order.raw is ORDER


def test_order_update_variants() -> None:
    rest_names = {
        "eventType": "ORDER_TRADE_UPDATE",
        "symbol": "BTCUSDT",
        "orderId": 42,
        "status": "filled",
        "type": "MARKET",
        "origQty": "1",
        "executedQty": "1",
        "unknown": {"x": 1},
    }
    order = OrderUpdate.from_wire(rest_names, ts=99)
    assert (order.order_id, order.order_status, order.order_type) == ("42", "FILLED", "MARKET")
    assert (order.quantity, order.filled_quantity, order.event_time, order.update_time) == (
        D(1),
        D(1),
        99,
        None,
    )
    assert order.price is None and order.client_order_id is None
    nested = OrderUpdate.from_wire(
        {"eventType": "ORDER_TRADE_UPDATE", "E": 5, "order": {"symbol": "X1", "orderId": "7"}}
    )
    assert (nested.symbol, nested.order_id, nested.event_time) == ("X1", "7", 5)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"orderId": None}, "orderId"),
        ({"symbol": None}, "symbol"),
        ({"price": "cheap"}, "price"),
        ({"filledQuantity": "-0.1"}, "filledQuantity"),
        ({"updateTime": "noon"}, "updateTime"),
        ({"orderStatus": 3}, "orderStatus"),
    ],
)
def test_order_update_bad_fields(change: Dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=f"OrderUpdate.{field}"):
        user_event(private({**ORDER, **change}))


def test_order_dedupe_key() -> None:
    a = OrderUpdate.from_wire(ORDER)
    replay = OrderUpdate.from_wire(dict(ORDER))
    assert a.dedupe_key is not None and a.dedupe_key == replay.dedupe_key
    hash(a.dedupe_key)
    filled_more = OrderUpdate.from_wire(
        {**ORDER, "filledQuantity": "0.010", "orderStatus": "FILLED"}
    )
    amended = OrderUpdate.from_wire({**ORDER, "price": "84000"})
    assert len({a.dedupe_key, filled_more.dedupe_key, amended.dedupe_key}) == 3
    no_time = OrderUpdate.from_wire(
        {k: v for k, v in ORDER.items() if k not in ("updateTime", "eventTime")}
    )
    assert no_time.dedupe_key is None
    event_time_only = OrderUpdate.from_wire({k: v for k, v in ORDER.items() if k != "updateTime"})
    assert event_time_only.dedupe_key is not None


ACCOUNT = {
    "eventType": "ACCOUNT_UPDATE",
    "eventTime": 1771047000002,
    "reason": "ORDER",
    "balances": [
        {
            "asset": "USDT",
            "walletBalance": "1000.5",
            "availableBalance": "900",
            "frozenBalance": "100.5",
        }
    ],
    "positions": [
        {
            "symbol": "BTCUSDT",
            "positionSide": "LONG",
            "quantity": "0.004",
            "entryPrice": "85000",
            "unrealizedPnl": "-1.2",
            "marginMode": "ISOLATED",
            "leverage": "20",
        }
    ],
}


def test_account_update_documented_ws_names() -> None:
    account = user_event(private(ACCOUNT))
    assert isinstance(account, AccountUpdate)
    assert account.balances == (Balance("USDT", D("1000.5"), D(900), D("100.5"), {}),)
    assert account.positions == (
        Position("BTCUSDT", "LONG", D("0.004"), D(85000), D("-1.2"), "ISOLATED", D(20), {}),
    )
    assert (account.event_time, account.reason) == (1771047000002, "ORDER")


def test_account_update_variants() -> None:
    rest_like = {
        "eventType": "ACCOUNT_UPDATE",
        "account": {
            "B": [{"coin": "USDT", "balance": "5", "frozenMargin": "1"}],
            "P": [{"symbol": "X1", "positionAmt": "-2", "marginMode": "cross"}],
        },
    }
    account = AccountUpdate.from_wire(rest_like, ts=77)
    assert (
        account.balances[0].frozen_balance == D(1) and account.balances[0].available_balance is None
    )
    assert account.positions[0].quantity == D(-2)  # shorts may be negative
    assert account.positions[0].margin_mode == "CROSS"
    assert account.event_time == 77 and account.reason is None
    empty = AccountUpdate.from_wire({"eventType": "ACCOUNT_UPDATE"})
    assert (empty.balances, empty.positions, empty.event_time, empty.dedupe_key) == (
        (),
        (),
        None,
        None,
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"balances": {"asset": "USDT"}}, "AccountUpdate.balances"),
        ({"balances": ["USDT"]}, "Balance payload"),
        ({"balances": [{"walletBalance": "1"}]}, "Balance.asset"),
        ({"positions": [{"symbol": "X1", "quantity": "lots"}]}, "Position.quantity"),
        ({"eventTime": "later"}, "AccountUpdate.eventTime"),
    ],
)
def test_account_update_bad_fields(change: Dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        user_event(private({**ACCOUNT, **change}))


def test_account_dedupe_key_includes_content() -> None:
    a = AccountUpdate.from_wire(ACCOUNT)
    assert a.dedupe_key == AccountUpdate.from_wire(dict(ACCOUNT)).dedupe_key
    hash(a.dedupe_key)
    same_ms_other = AccountUpdate.from_wire(
        {**ACCOUNT, "balances": [{"asset": "USDT", "walletBalance": "999"}]}
    )
    assert same_ms_other.dedupe_key != a.dedupe_key


def test_unknown_private_events_are_delivered_generically() -> None:
    data = {"eventType": "MARGIN_CALL", "x": 1}
    event = user_event(private(data, ts=5))
    assert event == UserEvent("MARGIN_CALL", data, 5)
    untyped = user_event(PrivatePush(None, None, None, [1, 2], {}))
    assert isinstance(untyped, UserEvent) and untyped.event_type is None and untyped.data == [1, 2]


def test_models_are_frozen_and_hashable_without_raw() -> None:
    trade = Trade.from_wire(TRADE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trade.price = D(1)  # type: ignore[misc]
    other = Trade.from_wire({**TRADE, "extra": 1})
    assert trade == other and hash(trade) == hash(other)
