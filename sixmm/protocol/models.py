"""Typed models of 6MM payloads (PROTOCOL.md §4, §5): frozen attrs classes built by ``from_wire``.

Conventions for every model:

- prices and quantities are :class:`~decimal.Decimal`, converted from the exact wire strings
  (a JSON number is accepted via ``Decimal(str(x))``); they must be finite. Quantities must
  be >= 0.
- times are int milliseconds (a digit string is accepted).
- ``raw`` keeps the wire dict (excluded from ``repr`` and ``==``); unknown fields are ignored.
- a missing optional field is ``None``; a missing or bad required field, or a bad optional
  one, raises :class:`~sixmm.errors.ProtocolError` naming the model and the field.

Field names [assumed, PROTOCOL.md §4.2 and §5]: the documented/REST names are read first;
the aliases listed on each model (in brackets) are tolerated as variants.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import attrs

from sixmm.errors import ProtocolError
from sixmm.protocol._fields import (
    dec,
    get,
    items,
    merged,
    obj,
    opt_bool,
    opt_dec,
    opt_int,
    opt_str,
    opt_upper,
    req,
    req_int,
    req_str,
)
from sixmm.protocol._speedups import load as load_extension
from sixmm.protocol.depth import DepthMsg, parse_depth
from sixmm.protocol.events import PrivatePush, Push

__all__ = [
    "AccountUpdate",
    "Balance",
    "DepthUpdate",
    "Kline",
    "OrderUpdate",
    "Position",
    "Ticker",
    "Trade",
    "UserEvent",
    "convert",
    "user_event",
]

# --------------------------------------------------------------------------- public data


@attrs.frozen(slots=True)
class Trade:
    """One trade of ``market.trade.{symbol}``.

    Wire: ``symbol, price, quantity, side, tradeId, time`` [aliases: ``p``; ``qty``, ``q``;
    ``id``, ``t``; ``ts``, ``timestamp``, ``T``]. ``side`` is upper-cased (``BUY``/``SELL``);
    ``trade_id`` is a string. Required: symbol (or the topic's), price, quantity.

    Thread-safety: immutable; share freely.
    """

    symbol: str
    price: Decimal
    quantity: Decimal
    side: Optional[str]
    trade_id: Optional[str]
    time: Optional[int]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any, symbol: Optional[str] = None) -> Trade:
        """Build from one trade object; ``symbol`` is the fallback (from the topic)."""
        d = obj(data, "Trade")
        return cls(
            req_str(get(d, ("symbol", "s")) or symbol, "Trade", "symbol"),
            dec(req(get(d, ("price", "p")), "Trade", "price"), "Trade", "price"),
            dec(
                req(get(d, ("quantity", "qty", "q")), "Trade", "quantity"),
                "Trade",
                "quantity",
                non_negative=True,
            ),
            opt_upper(d.get("side"), "Trade", "side"),
            opt_str(get(d, ("tradeId", "id", "t")), "Trade", "tradeId"),
            opt_int(get(d, ("time", "ts", "timestamp", "T")), "Trade", "time"),
            d,
        )


@attrs.frozen(slots=True)
class Kline:
    """One kline (candle) of ``market.kline.{symbol}.{interval}``.

    Wire: ``symbol, interval, openTime, open, high, low, close, volume, closeTime`` and
    ``closed``/``isFinal`` [aliases: ``s, i, t, o, h, l, c, v, T, x``]. ``closed`` is None
    when the wire does not say. Required: symbol and interval (or the topic's), open_time,
    open, high, low, close, volume.

    Thread-safety: immutable; share freely.
    """

    symbol: str
    interval: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time: Optional[int]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)
    closed: Optional[bool] = None  # after raw: the public positional signature ends at raw

    @classmethod
    def from_wire(
        cls, data: Any, symbol: Optional[str] = None, interval: Optional[str] = None
    ) -> Kline:
        """Build from one kline object; ``symbol``/``interval`` are fallbacks (the topic's)."""
        d = obj(data, "Kline")
        m = "Kline"

        def price(keys: Tuple[str, ...]) -> Decimal:
            return dec(req(get(d, keys), m, keys[0]), m, keys[0])

        closed = d.get("closed")
        if closed is None:
            closed = get(d, ("isFinal", "x"))
        return cls(
            req_str(get(d, ("symbol", "s")) or symbol, m, "symbol"),
            req_str(get(d, ("interval", "i")) or interval, m, "interval"),
            req_int(get(d, ("openTime", "t")), m, "openTime"),
            price(("open", "o")),
            price(("high", "h")),
            price(("low", "l")),
            price(("close", "c")),
            dec(req(get(d, ("volume", "v")), m, "volume"), m, "volume", non_negative=True),
            opt_int(get(d, ("closeTime", "T")), m, "closeTime"),
            d,
            opt_bool(closed, m, "closed"),
        )


@attrs.frozen(slots=True)
class Ticker:
    """A ticker summary (``market.ticker.{symbol}``; ``market.tickers`` carries a list).

    Wire: ``symbol, lastPrice, open, high, low, volume, quoteVolume, priceChange,
    priceChangePercent, markPrice, indexPrice, fundingRate`` [aliases: ``last``;
    ``openPrice``, ``highPrice``, ``lowPrice``]. Only the symbol is required, but a ticker
    with none of these fields is refused (a schema we do not understand).

    Thread-safety: immutable; share freely.
    """

    symbol: str
    last_price: Optional[Decimal]
    open: Optional[Decimal]
    high: Optional[Decimal]
    low: Optional[Decimal]
    volume: Optional[Decimal]
    quote_volume: Optional[Decimal]
    price_change: Optional[Decimal]
    price_change_percent: Optional[Decimal]
    mark_price: Optional[Decimal]
    index_price: Optional[Decimal]
    funding_rate: Optional[Decimal]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any, symbol: Optional[str] = None) -> Ticker:
        """Build from one ticker object; ``symbol`` is the fallback (the topic's)."""
        d = obj(data, "Ticker")
        m = "Ticker"
        ticker = cls(
            req_str(get(d, ("symbol", "s")) or symbol, m, "symbol"),
            opt_dec(get(d, ("lastPrice", "last")), m, "lastPrice"),
            opt_dec(get(d, ("open", "openPrice")), m, "open"),
            opt_dec(get(d, ("high", "highPrice")), m, "high"),
            opt_dec(get(d, ("low", "lowPrice")), m, "low"),
            opt_dec(d.get("volume"), m, "volume"),
            opt_dec(d.get("quoteVolume"), m, "quoteVolume"),
            opt_dec(d.get("priceChange"), m, "priceChange"),
            opt_dec(d.get("priceChangePercent"), m, "priceChangePercent"),
            opt_dec(d.get("markPrice"), m, "markPrice"),
            opt_dec(d.get("indexPrice"), m, "indexPrice"),
            opt_dec(d.get("fundingRate"), m, "fundingRate"),
            d,
        )
        if ticker.last_price is None and all(getattr(ticker, n) is None for n in _TICKER_NUMBERS):
            # Nothing we know: a schema we do not understand, not a ticker full of None.
            raise ProtocolError(f"Ticker has none of the known fields: {sorted(d)[:8]}")
        return ticker


_TICKER_NUMBERS = (
    "last_price",
    "open",
    "high",
    "low",
    "volume",
    "quote_volume",
    "price_change",
    "price_change_percent",
    "mark_price",
    "index_price",
    "funding_rate",
)

Level = Tuple[Decimal, Decimal]


@attrs.frozen(slots=True)
class DepthUpdate:
    """One ``market.depth.{symbol}`` message (what a ``depth()`` callback receives).

    ``kind`` is ``"snapshot"``, ``"update"`` or None (the wire did not say); versions per
    PROTOCOL.md §4.1 (``prev_version`` from ``prevEndVersion``/``lastEndVersion``); ``bids``
    and ``asks`` are ``(price, quantity)`` in wire order, quantity 0 meaning "remove"; ``ts``
    is the envelope's. Validation is :func:`sixmm.protocol.depth.parse_depth`'s.

    Thread-safety: immutable; share freely.
    """

    symbol: Optional[str]
    kind: Optional[str]
    start_version: Optional[int]
    end_version: Optional[int]
    prev_version: Optional[int]
    bids: Tuple[Level, ...]
    asks: Tuple[Level, ...]
    ts: Optional[int]
    raw: Any = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(
        cls,
        data: Any,
        snapshot_hint: bool = False,
        ts: Optional[int] = None,
        symbol: Optional[str] = None,
    ) -> DepthUpdate:
        """Validate ``data`` (a depth push's payload) and build; ``symbol`` is the fallback."""
        return cls.from_depth_msg(parse_depth(data, snapshot_hint), ts=ts, symbol=symbol, raw=data)

    @classmethod
    def from_depth_msg(
        cls,
        msg: DepthMsg,
        *,
        ts: Optional[int] = None,
        symbol: Optional[str] = None,
        raw: Any = None,
    ) -> DepthUpdate:
        """Build from an already validated :class:`~sixmm.protocol.depth.DepthMsg`."""
        return cls(
            msg.symbol or symbol,
            msg.kind,
            msg.start,
            msg.end,
            msg.prev,
            tuple((Decimal(p), Decimal(q)) for p, q in msg.bids),
            tuple((Decimal(p), Decimal(q)) for p, q in msg.asks),
            ts,
            raw,
        )


# --------------------------------------------------------------------------- private data


@attrs.frozen(slots=True)
class OrderUpdate:
    """An ``ORDER_TRADE_UPDATE`` private event (new, amend, trade, cancel).

    Wire (PROTOCOL.md §5; WS names differ from REST): ``symbol, orderId, clientOrderId, side,
    positionSide, orderType, timeInForce, orderStatus, price, quantity, filledQuantity,
    avgPrice, lastFilledPrice, lastFilledQuantity, updateTime, eventTime`` [aliases:
    ``status`` (the REST name); ``type``; ``origQty``; ``executedQty``, ``filledQty``,
    ``cumQty``; ``averagePrice``; ``lastFilledQty``; ``E``; fields nested under ``order`` or
    ``o`` are merged in]. ``event_time`` falls back to the envelope's ``ts``. Required:
    symbol, order_id. Enum values are upper-cased strings, not checked against a list.

    Thread-safety: immutable; share freely.
    """

    symbol: str
    order_id: str
    client_order_id: Optional[str]
    side: Optional[str]
    position_side: Optional[str]
    order_type: Optional[str]
    time_in_force: Optional[str]
    order_status: Optional[str]
    price: Optional[Decimal]
    quantity: Optional[Decimal]
    filled_quantity: Optional[Decimal]
    avg_price: Optional[Decimal]
    last_filled_price: Optional[Decimal]
    last_filled_quantity: Optional[Decimal]
    update_time: Optional[int]
    event_time: Optional[int]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any, ts: Optional[int] = None) -> OrderUpdate:
        """Build from the ``data`` of a private push; ``ts`` is the envelope's."""
        m = "OrderUpdate"
        d = merged(obj(data, m), ("order", "o"))
        event_time = opt_int(get(d, ("eventTime", "E")), m, "eventTime")
        return cls(
            req_str(get(d, ("symbol", "s")), m, "symbol"),
            req_str(get(d, ("orderId", "i")), m, "orderId"),
            opt_str(get(d, ("clientOrderId", "clientOid")), m, "clientOrderId"),
            opt_upper(d.get("side"), m, "side"),
            opt_upper(d.get("positionSide"), m, "positionSide"),
            opt_upper(get(d, ("orderType", "type")), m, "orderType"),
            opt_upper(d.get("timeInForce"), m, "timeInForce"),
            opt_upper(get(d, ("orderStatus", "status")), m, "orderStatus"),
            opt_dec(d.get("price"), m, "price"),
            opt_dec(get(d, ("quantity", "origQty")), m, "quantity", True),
            opt_dec(
                get(d, ("filledQuantity", "executedQty", "filledQty", "cumQty")),
                m,
                "filledQuantity",
                True,
            ),
            opt_dec(get(d, ("avgPrice", "averagePrice")), m, "avgPrice"),
            opt_dec(d.get("lastFilledPrice"), m, "lastFilledPrice"),
            opt_dec(get(d, ("lastFilledQuantity", "lastFilledQty")), m, "lastFilledQuantity", True),
            opt_int(d.get("updateTime"), m, "updateTime"),
            event_time if event_time is not None else ts,
            obj(data, m),
        )

    @property
    def dedupe_key(self) -> Optional[Tuple[Any, ...]]:
        """Identity of this update for dropping replays after a reconnect (PROTOCOL.md §5).

        ``(order_id, time, status, filled, price, quantity)`` with ``time`` the update time
        (else the event time); None when there is no time to tell two updates apart.
        """
        when = self.update_time if self.update_time is not None else self.event_time
        if when is None:
            return None
        return (
            "ORDER_TRADE_UPDATE",
            self.order_id,
            when,
            self.order_status,
            self.filled_quantity,
            self.price,
            self.quantity,
        )


@attrs.frozen(slots=True)
class Balance:
    """One asset balance of an ``ACCOUNT_UPDATE``.

    Wire: ``asset, walletBalance, availableBalance, frozenBalance`` [aliases: ``coin``,
    ``currency``; ``balance``; ``available``; ``frozenMargin`` (the REST name)].

    Thread-safety: immutable; share freely.
    """

    asset: str
    wallet_balance: Optional[Decimal]
    available_balance: Optional[Decimal]
    frozen_balance: Optional[Decimal]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any) -> Balance:
        """Build from one balance object."""
        m = "Balance"
        d = obj(data, m)
        return cls(
            req_str(get(d, ("asset", "coin", "currency")), m, "asset"),
            opt_dec(get(d, ("walletBalance", "balance")), m, "walletBalance"),
            opt_dec(get(d, ("availableBalance", "available")), m, "availableBalance"),
            opt_dec(get(d, ("frozenBalance", "frozenMargin")), m, "frozenBalance"),
            d,
        )


@attrs.frozen(slots=True)
class Position:
    """One position of an ``ACCOUNT_UPDATE``.

    Wire: ``symbol, positionSide, quantity, entryPrice, unrealizedPnl, marginMode, leverage``
    [aliases: ``positionAmt``, ``positionAmount``, ``size``; ``avgPrice``;
    ``unrealizedProfit``]. ``margin_mode`` is the wire string (``ISOLATED``/``CROSS``).
    ``quantity`` may be negative (short, one-way).

    Thread-safety: immutable; share freely.
    """

    symbol: str
    position_side: Optional[str]
    quantity: Optional[Decimal]
    entry_price: Optional[Decimal]
    unrealized_pnl: Optional[Decimal]
    margin_mode: Optional[str]
    leverage: Optional[Decimal]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any) -> Position:
        """Build from one position object."""
        m = "Position"
        d = obj(data, m)
        return cls(
            req_str(d.get("symbol"), m, "symbol"),
            opt_upper(d.get("positionSide"), m, "positionSide"),
            opt_dec(get(d, ("quantity", "positionAmt", "positionAmount", "size")), m, "quantity"),
            opt_dec(get(d, ("entryPrice", "avgPrice")), m, "entryPrice"),
            opt_dec(get(d, ("unrealizedPnl", "unrealizedProfit")), m, "unrealizedPnl"),
            opt_upper(d.get("marginMode"), m, "marginMode"),
            opt_dec(d.get("leverage"), m, "leverage"),
            d,
        )


@attrs.frozen(slots=True)
class AccountUpdate:
    """An ``ACCOUNT_UPDATE`` private event: balances and positions.

    Wire: ``balances`` (list of :class:`Balance`), ``positions`` (list of :class:`Position`),
    ``eventTime``, ``reason`` [aliases: ``B``, ``P``, ``E``, ``updateReason``; fields nested
    under ``account`` or ``a`` are merged in]. Missing lists are empty tuples;
    ``event_time`` falls back to the envelope's ``ts``.

    Thread-safety: immutable; share freely.
    """

    balances: Tuple[Balance, ...]
    positions: Tuple[Position, ...]
    event_time: Optional[int]
    reason: Optional[str]
    raw: Dict[str, Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def from_wire(cls, data: Any, ts: Optional[int] = None) -> AccountUpdate:
        """Build from the ``data`` of a private push; ``ts`` is the envelope's."""
        m = "AccountUpdate"
        d = merged(obj(data, m), ("account", "a"))
        event_time = opt_int(get(d, ("eventTime", "E")), m, "eventTime")
        return cls(
            tuple(Balance.from_wire(b) for b in items(get(d, ("balances", "B")), m, "balances")),
            tuple(Position.from_wire(p) for p in items(get(d, ("positions", "P")), m, "positions")),
            event_time if event_time is not None else ts,
            opt_str(get(d, ("reason", "updateReason")), m, "reason"),
            obj(data, m),
        )

    @property
    def dedupe_key(self) -> Optional[Tuple[Any, ...]]:
        """Identity for dropping replays: the event time plus the full content (two different
        updates in the same millisecond stay distinct); None without an event time."""
        if self.event_time is None:
            return None
        return ("ACCOUNT_UPDATE", self.event_time, self.reason, self.balances, self.positions)


@attrs.frozen(slots=True)
class UserEvent:
    """Any other private event (unknown ``eventType``s are delivered, never dropped).

    Thread-safety: immutable; share freely.
    """

    event_type: Optional[str]
    data: Any = attrs.field(repr=False)
    ts: Optional[int] = None
    raw: Any = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def from_push(cls, push: PrivatePush) -> UserEvent:
        """Wrap a private push as it is."""
        return cls(push.event_type, push.data, push.ts, push.raw)


# --------------------------------------------------------------------------- dispatch

_wirefast = load_extension("_wirefast")
# The common trade push in C (see _wirefast.c): the same Trade list as the pure from_wire,
# or None and the pure code decides. Tests swap it to exercise both.
_c_trades = None if _wirefast is None else _wirefast.trades


def _plain_attrs(cls: type) -> bool:
    """True when attrs' ``__init__`` of ``cls`` only stores its arguments, in field order:
    no validator, converter, default-only field or init hook that filling the slots
    directly would skip."""
    hooks = ("__attrs_pre_init__", "__attrs_post_init__", "__attrs_init__")
    return not any(hasattr(cls, name) for name in hooks) and all(
        f.init and f.validator is None and f.converter is None for f in attrs.fields(cls)
    )


if _wirefast is not None and _plain_attrs(Trade):
    # Trades are then built slot by slot in C (seven object.__setattr__ calls of attrs'
    # frozen __init__ cost half the C path). bind() refuses a layout it cannot fill.
    _wirefast.bind("trade", Trade, tuple(f.name for f in attrs.fields(Trade)))


def _topic_parts(topic: str) -> List[str]:
    return topic.split(".")


def _trades(push: Push) -> List[Any]:
    data = push.data
    if _c_trades is not None:
        done: Optional[List[Trade]] = _c_trades(Trade, data)
        if done is not None:
            return done
    parts = _topic_parts(push.topic)
    symbol = parts[2] if len(parts) > 2 else None
    if type(data) is list:
        return [Trade.from_wire(item, symbol) for item in data]
    return [Trade.from_wire(data, symbol)]


def _klines(push: Push) -> List[Any]:
    parts = _topic_parts(push.topic)
    symbol = parts[2] if len(parts) > 2 else None
    interval = parts[3] if len(parts) > 3 else None
    data = push.data
    if type(data) is list:  # [assumed] several klines in one push: one callback each
        return [Kline.from_wire(item, symbol, interval) for item in data]
    return [Kline.from_wire(data, symbol, interval)]


def _ticker(push: Push) -> List[Any]:
    parts = _topic_parts(push.topic)
    return [Ticker.from_wire(push.data, parts[2] if len(parts) > 2 else None)]


def _tickers(push: Push) -> List[Any]:
    data = push.data
    if type(data) is dict:  # [assumed] {"tickers": [...]}
        data = data.get("tickers")
    if type(data) is not list:
        raise ProtocolError("market.tickers data must be a list of tickers")
    return [[Ticker.from_wire(item) for item in data]]


def _depth(push: Push) -> List[Any]:
    parts = _topic_parts(push.topic)
    symbol = parts[2] if len(parts) > 2 else None
    return [DepthUpdate.from_wire(push.data, push.snapshot, push.ts, symbol)]


_CONVERTERS: Dict[str, Callable[[Push], List[Any]]] = {
    "trade": _trades,
    "kline": _klines,
    "ticker": _ticker,
    "tickers": _tickers,
    "depth": _depth,
}


def convert(channel: str, push: Push) -> List[Any]:
    """The callback arguments for one push of ``channel`` (see :mod:`.topics`).

    One :class:`Trade` per trade; for ``tickers`` a one-element list holding the list of
    :class:`Ticker`; otherwise one model. For a channel without a model, the envelope dict.
    Raises :class:`ProtocolError` on a bad payload.
    """
    converter = _CONVERTERS.get(channel)
    if converter is None:
        raw = push.raw
        if raw is None:
            raw = {"topic": push.topic, "ts": push.ts, "data": push.data}
        return [raw]
    return converter(push)


_USER_EVENTS: Dict[Optional[str], Callable[[PrivatePush], Union[OrderUpdate, AccountUpdate]]] = {
    "ORDER_TRADE_UPDATE": lambda p: OrderUpdate.from_wire(p.data, p.ts),
    "ACCOUNT_UPDATE": lambda p: AccountUpdate.from_wire(p.data, p.ts),
}


def user_event(push: PrivatePush) -> Union[OrderUpdate, AccountUpdate, UserEvent]:
    """The typed model for a private push: :class:`OrderUpdate`, :class:`AccountUpdate`, or
    :class:`UserEvent` for any other event type.

    Raises :class:`ProtocolError` when a known event type has a bad payload; the caller should
    then still deliver ``UserEvent.from_push(push)`` so no private event is ever dropped.
    """
    builder = _USER_EVENTS.get(push.event_type)
    if builder is None:
        return UserEvent.from_push(push)
    return builder(push)
