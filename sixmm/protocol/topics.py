"""Topic grammar (PROTOCOL.md §4, §5): build and parse the wire names of 6MM channels.

=================================  ===========  =============================
wire name                          ``channel``  parts
=================================  ===========  =============================
``market.depth.{symbol}``          ``depth``    symbol
``market.trade.{symbol}``          ``trade``    symbol
``market.kline.{symbol}.{iv}``     ``kline``    symbol, interval
``market.ticker.{symbol}``         ``ticker``   symbol
``market.tickers``                 ``tickers``  --
``user.{id}``                      ``user``     id (kept in ``symbol``)
=================================  ===========  =============================

Any other channel (a channel the exchange added, which sixmm has no model for) is accepted by
:func:`channel_of` when well-formed [assumed grammar]: ``market.{channel}`` plus up to 6 more
dot-separated parts, the channel 1-40 characters of ``A-Za-z0-9_`` starting with a letter,
each part 1-64 of ``A-Za-z0-9_-`` (e.g. ``market.funding.BTCUSDT``). Its pushes are delivered
as the envelope dict. A known channel name in another case (``market.Depth.X``) is an error.

Symbols [assumed grammar]: 2-30 characters of ``A-Z`` and ``0-9``, with ``_`` or ``-``
allowed inside (not first or last), e.g. ``BTCUSDT``. Builders upper-case their input;
:func:`parse_topic` does not (a wire topic is exact). Intervals are case-sensitive:
``1m`` is a minute, ``1M`` a month. User ids: 1-64 characters of ``A-Za-z0-9_-``.
"""

from __future__ import annotations

import functools
import re
from typing import Optional, Union

import attrs

__all__ = [
    "CHANNELS",
    "INTERVALS",
    "TICKERS_TOPIC",
    "Topic",
    "channel_of",
    "depth_topic",
    "is_known_topic",
    "kline_topic",
    "parse_topic",
    "ticker_topic",
    "trade_topic",
    "user_topic",
]

INTERVALS = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M")
"""Kline intervals, as the REST klines endpoint names them (case-sensitive)."""

CHANNELS = ("depth", "trade", "kline", "ticker", "tickers", "user")
"""Every channel name :func:`parse_topic` knows."""

TICKERS_TOPIC = "market.tickers"

_INTERVAL_SET = frozenset(INTERVALS)
_SYMBOL_RE = re.compile(r"[A-Z0-9](?:[A-Z0-9_-]{0,28}[A-Z0-9])?")
_USER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SYMBOL_CHANNELS = frozenset(("depth", "trade", "ticker"))
_MAX_TOPIC_LEN = 200
_RAW_CHANNEL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_RAW_PART_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_RAW_PARTS = 8
_KNOWN_LOWER = frozenset(CHANNELS)


@attrs.frozen(slots=True)
class Topic:
    """A parsed topic. ``symbol`` holds the user id for the ``user`` channel.

    Thread-safety: immutable; share freely.
    """

    channel: str
    symbol: Optional[str] = None
    interval: Optional[str] = None

    @property
    def name(self) -> str:
        """The wire string, e.g. ``"market.kline.BTCUSDT.1m"``."""
        if self.channel == "user":
            return f"user.{self.symbol}"
        if self.channel == "tickers":
            return TICKERS_TOPIC
        if self.channel == "kline":
            return f"market.kline.{self.symbol}.{self.interval}"
        return f"market.{self.channel}.{self.symbol}"

    def __str__(self) -> str:
        return self.name


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _symbol(symbol: str) -> str:
    """Validate and upper-case a symbol given to a builder."""
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a str, got {type(symbol).__name__}")
    upper = symbol.upper()
    if not symbol.isascii() or _SYMBOL_RE.fullmatch(upper) is None or len(upper) < 2:
        raise ValueError(f"bad symbol {_clip(symbol)}: expected 2-30 letters/digits like 'BTCUSDT'")
    return upper


def _interval(interval: str) -> str:
    if not isinstance(interval, str) or interval not in _INTERVAL_SET:
        raise ValueError(
            f"bad kline interval {_clip(interval)}: expected one of {' '.join(INTERVALS)}"
            " (case-sensitive: 1m is a minute, 1M a month)"
        )
    return interval


def depth_topic(symbol: str) -> str:
    """``market.depth.{SYMBOL}``; raises ``ValueError`` on a bad symbol."""
    return "market.depth." + _symbol(symbol)


def trade_topic(symbol: str) -> str:
    """``market.trade.{SYMBOL}``; raises ``ValueError`` on a bad symbol."""
    return "market.trade." + _symbol(symbol)


def kline_topic(symbol: str, interval: str) -> str:
    """``market.kline.{SYMBOL}.{interval}``; raises ``ValueError`` on a bad symbol/interval."""
    return f"market.kline.{_symbol(symbol)}.{_interval(interval)}"


def ticker_topic(symbol: str) -> str:
    """``market.ticker.{SYMBOL}``; raises ``ValueError`` on a bad symbol."""
    return "market.ticker." + _symbol(symbol)


def user_topic(user_id: Union[int, str]) -> str:
    """``user.{id}`` (the private channel the server subscribes by itself)."""
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
        raise ValueError(f"user id must be an int or str, got {type(user_id).__name__}")
    text = str(user_id)
    if _USER_ID_RE.fullmatch(text) is None:
        raise ValueError(f"bad user id {_clip(user_id)}: expected 1-64 of A-Z a-z 0-9 _ -")
    return "user." + text


@functools.lru_cache(maxsize=4096)
def _parse(s: str) -> Topic:
    if len(s) > _MAX_TOPIC_LEN:
        raise ValueError(f"bad topic {_clip(s)}: longer than {_MAX_TOPIC_LEN} characters")
    parts = s.split(".")
    head = parts[0]
    if head == "user":
        if len(parts) != 2 or _USER_ID_RE.fullmatch(parts[1]) is None:
            raise ValueError(f"bad topic {_clip(s)}: expected 'user.{{id}}'")
        return Topic("user", parts[1], None)
    if head != "market" or len(parts) < 2:
        raise ValueError(f"bad topic {_clip(s)}: expected 'market.<channel>...' or 'user.<id>'")
    channel = parts[1]
    if channel == "tickers":
        if len(parts) != 2:
            raise ValueError(f"bad topic {_clip(s)}: expected exactly 'market.tickers'")
        return Topic("tickers", None, None)
    if channel == "kline":
        if len(parts) != 4:
            raise ValueError(
                f"bad topic {_clip(s)}: expected 'market.kline.{{symbol}}.{{interval}}'"
            )
        _check_wire_symbol(s, parts[2])
        if parts[3] not in _INTERVAL_SET:
            raise ValueError(
                f"bad topic {_clip(s)}: unknown kline interval {parts[3]!r}"
                f" (expected one of {' '.join(INTERVALS)})"
            )
        return Topic("kline", parts[2], parts[3])
    if channel in _SYMBOL_CHANNELS:
        if len(parts) != 3:
            raise ValueError(f"bad topic {_clip(s)}: expected 'market.{channel}.{{symbol}}'")
        _check_wire_symbol(s, parts[2])
        return Topic(channel, parts[2], None)
    raise ValueError(
        f"bad topic {_clip(s)}: unknown channel {_clip(channel)}"
        " (expected depth, trade, kline, ticker or tickers)"
    )


def _check_wire_symbol(topic: str, symbol: str) -> None:
    if _SYMBOL_RE.fullmatch(symbol) is None or len(symbol) < 2:
        hint = " (symbols are upper-case on the wire)" if symbol != symbol.upper() else ""
        raise ValueError(f"bad topic {_clip(topic)}: bad symbol {_clip(symbol)}{hint}")


def parse_topic(s: str) -> Topic:
    """Parse a wire topic; raises ``ValueError`` naming the bad part. Results are cached."""
    if not isinstance(s, str):
        raise ValueError(f"topic must be a str, got {type(s).__name__}")
    return _parse(s)


def is_known_topic(s: object) -> bool:
    """True when ``s`` is a well-formed topic of a known channel."""
    if not isinstance(s, str):
        return False
    try:
        _parse(s)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _channel_of(s: str) -> Optional[str]:
    parts = s.split(".")
    if len(parts) >= 2 and parts[0] == "market" and parts[1] not in CHANNELS:
        channel = parts[1]
        if len(s) > _MAX_TOPIC_LEN:
            raise ValueError(f"bad topic {_clip(s)}: longer than {_MAX_TOPIC_LEN} characters")
        if channel.lower() in _KNOWN_LOWER:
            raise ValueError(
                f"bad topic {_clip(s)}: channel {_clip(channel)} must be {channel.lower()!r}"
                " (channel names are case-sensitive)"
            )
        if _RAW_CHANNEL_RE.fullmatch(channel) is None:
            raise ValueError(f"bad topic {_clip(s)}: bad channel name {_clip(channel)}")
        if len(parts) > _MAX_RAW_PARTS:
            raise ValueError(f"bad topic {_clip(s)}: more than {_MAX_RAW_PARTS} parts")
        for part in parts[2:]:
            if _RAW_PART_RE.fullmatch(part) is None:
                raise ValueError(f"bad topic {_clip(s)}: bad part {_clip(part)}")
        return None
    return _parse(s).channel


def channel_of(s: str) -> Optional[str]:
    """The known channel of a ``market.`` or ``user.`` topic, or ``None`` for a well-formed
    topic of a channel sixmm has no model for (``market.funding.BTCUSDT``). Known channels
    keep their strict grammar; raises ``ValueError`` naming the bad part."""
    if not isinstance(s, str):
        raise ValueError(f"topic must be a str, got {type(s).__name__}")
    return _channel_of(s)
