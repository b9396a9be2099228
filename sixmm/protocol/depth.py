"""Depth payloads (PROTOCOL.md §4.1): validate one ``market.depth.*`` push's ``data`` cheaply.

:func:`parse_depth` turns the ``data`` object of a depth push into a :class:`DepthMsg`, the
fast internal form the book state machine (:mod:`sixmm.protocol.book`) consumes. It runs once
per depth frame, so it validates with precompiled regular expressions and keeps the exact
price/quantity strings (no ``Decimal`` is built here).

Accepted shapes — every one beyond the documented example is marked ``[assumed]`` below:

- ``type``: ``"snapshot"`` / ``"update"`` (any letter case), or absent/``null`` (then the
  message kind is unknown: ``None``, or ``"snapshot"`` when the envelope said
  ``"event": "snapshot"``, passed as ``snapshot_hint=True``).
- versions ``startVersion``, ``endVersion`` (required), and the predecessor
  ``prevEndVersion`` / ``lastEndVersion``: JSON integers or strings of decimal digits,
  ``0 <= v < 2**63``. ``null`` counts as absent.
- levels: ``[price, quantity]`` (extra trailing elements such as an order count are ignored),
  or ``{"price": ..., "quantity": ...}`` (``"qty"`` is accepted for ``"quantity"``); prices and
  quantities are strings of ASCII digits with at most one ``.``: at most 30 digits before and
  30 after it; no sign, exponent, blanks, ``NaN`` or ``Infinity``. A JSON number is tolerated
  (converted to its shortest exact decimal string). ``price > 0``, ``quantity >= 0``.
- ``bids`` / ``asks`` missing or ``null``: no change on that side.

Anything else raises :class:`~sixmm.errors.ProtocolError` naming the offending field; no other
exception escapes.

Speedups: the optional C extension :mod:`sixmm.protocol._depthfast` runs the fast path of the
level loop (lists of ``[price, quantity]`` lists of valid strings) and returns None for
anything else, so the Python code below, the reference, handles every other case and raises
every error. :data:`SPEEDUPS` says whether it is in use; ``SIXMM_NO_EXTENSIONS=1`` set before
``sixmm`` is imported forces the pure-Python code.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from operator import itemgetter
from typing import Any, Callable, Container, FrozenSet, List, Optional, Tuple

from sixmm.errors import ProtocolError
from sixmm.protocol._speedups import load as load_extension

__all__ = ["MAX_VERSION", "SPEEDUPS", "DepthMsg", "Level", "parse_depth"]

Level = Tuple[str, str]
"""One price level as received: ``(price, quantity)`` strings."""

MAX_VERSION = 2**63 - 1
"""The largest version accepted (versions are non-negative 63-bit integers)."""

# A numeral: ASCII digits, optionally one "." followed by digits; bounded length.
_NUM = r"[0-9]{1,30}(?:\.[0-9]{1,30})?"
_PRICE = re.compile(r"(?=[0.]*[1-9])" + _NUM).fullmatch  # ... with at least one non-zero digit
_QTY = re.compile(_NUM).fullmatch
# Every quantity of a side joined by "|", validated in one call: about half the cost of one
# ``fullmatch`` per quantity (the separator count proves no quantity contains a "|").
# Possessive quantifiers (Python 3.11+) match the same strings -- a run of digits is always
# followed by a non-digit, a "." by digits, a "|" by a numeral -- without backtracking
# bookkeeping: ~40% faster. Older Pythons get the plain pattern.
_NUM_POSSESSIVE = r"[0-9]{1,30}+(?:\.[0-9]{1,30}+)?+"
try:
    _QTYS = re.compile(_NUM_POSSESSIVE + r"(?:\|" + _NUM_POSSESSIVE + ")*+").fullmatch
except re.error:  # pragma: no cover - Python < 3.11
    _QTYS = re.compile(_NUM + r"(?:\|" + _NUM + ")*").fullmatch
_VERSION = re.compile(r"[0-9]{1,19}").fullmatch
_SECOND = itemgetter(1)
_NOTHING: FrozenSet[str] = frozenset()
_NO_PRICES: Tuple[Container[str], Container[str]] = (_NOTHING, _NOTHING)
_new = object.__new__

_CLevels = Callable[[Any, Container[str]], Optional[List[Level]]]


_depthfast = load_extension("_depthfast")
_c_levels: Optional[_CLevels] = None if _depthfast is None else _depthfast.levels

SPEEDUPS: bool = _c_levels is not None
"""True when depth levels are validated by the C extension :mod:`sixmm.protocol._depthfast`."""

# parse_depth's common case in C (the envelope's fields checked, the levels through the C
# level check): the same DepthMsg, or None and the pure code runs. Only while _c_levels is
# in use (switching that off switches both off).
_c_parse: Optional[Callable[..., Any]] = None if _depthfast is None else _depthfast.parse


class DepthMsg:
    """One depth message, validated. Cheap by design: a plain slotted class, built per frame.

    ``kind`` is ``"snapshot"``, ``"update"`` or ``None`` (the wire did not say); ``start`` /
    ``end`` are ``startVersion`` / ``endVersion``; ``prev`` is the predecessor
    (``prevEndVersion`` or ``lastEndVersion``); ``bids`` / ``asks`` hold the exact
    ``(price, quantity)`` strings in wire order, quantity ``"0"`` meaning "remove".

    Thread-safety: immutable by convention once built; safe to share between threads.
    """

    __slots__ = ("asks", "bids", "end", "kind", "prev", "start", "symbol")

    def __init__(
        self,
        *,
        symbol: Optional[str] = None,
        kind: Optional[str] = None,
        start: Optional[int] = None,
        end: Optional[int] = None,
        prev: Optional[int] = None,
        bids: Optional[List[Level]] = None,
        asks: Optional[List[Level]] = None,
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.start = start
        self.end = end
        self.prev = prev
        self.bids: List[Level] = [] if bids is None else bids
        self.asks: List[Level] = [] if asks is None else asks

    def __repr__(self) -> str:
        return (
            f"DepthMsg(symbol={self.symbol!r}, kind={self.kind!r}, start={self.start}, "
            f"end={self.end}, prev={self.prev}, bids={len(self.bids)}, asks={len(self.asks)})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DepthMsg):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def parse_depth(
    data: Any,
    snapshot_hint: bool = False,
    known: Optional[Tuple[Container[str], Container[str]]] = None,
) -> DepthMsg:
    """Validate the ``data`` of a depth push and return a :class:`DepthMsg`.

    ``snapshot_hint`` is True when the envelope said ``"event": "snapshot"`` [assumed variant].
    ``known`` (an optimisation): ``(bid prices, ask prices)`` already known to be valid price
    strings (a live book's current levels, which all passed this function); a price found
    there is not matched against the pattern again. It never changes what is accepted.
    Raises :class:`ProtocolError` (naming the field) on any malformed payload, never another
    exception.
    """
    if _c_parse is not None and _c_levels is not None:
        pair = _NO_PRICES if known is None else known
        fast = _c_parse(data, snapshot_hint, pair[0], pair[1], DepthMsg)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    if not isinstance(data, dict):
        raise ProtocolError(f"depth data must be an object, got {type(data).__name__}")
    symbol = data.get("symbol")
    if symbol is not None and not isinstance(symbol, str):
        raise ProtocolError(f"depth field 'symbol' must be a string, got {type(symbol).__name__}")

    get = data.get
    kind: Optional[str] = get("type")
    if kind != "update" or snapshot_hint:  # the common case needs no call
        kind = _kind(kind, snapshot_hint)
    # Each version: a valid JSON integer is taken as is; anything else goes to _version.
    start = get("startVersion")
    if start is not None and (type(start) is not int or not 0 <= start <= MAX_VERSION):
        start = _version(data, "startVersion")
    end = get("endVersion")
    if end is not None and (type(end) is not int or not 0 <= end <= MAX_VERSION):
        end = _version(data, "endVersion")
    prev = get("prevEndVersion")
    if prev is not None:
        prev = _version(data, "prevEndVersion")
    last = get("lastEndVersion")  # [assumed] the other spelling of the predecessor
    if last is not None:
        last = _version(data, "lastEndVersion")
        if prev is not None and prev != last:
            raise ProtocolError(
                f"depth fields 'prevEndVersion' ({prev}) and 'lastEndVersion' ({last}) disagree"
            )
        prev = last
    if end is None:
        raise ProtocolError("depth field 'endVersion' is missing")
    if start is not None and start > end:
        raise ProtocolError(f"depth field 'startVersion' ({start}) exceeds endVersion ({end})")
    if prev is not None and prev >= end:
        raise ProtocolError(
            f"depth field 'prevEndVersion' ({prev}) is not below endVersion ({end})"
        )

    if known is None:
        known = _NO_PRICES
    bids = _levels(get("bids"), "bids", known[0])
    asks = _levels(get("asks"), "asks", known[1])
    msg: DepthMsg = _new(DepthMsg)  # the keyword __init__ costs ~0.3 us more per frame
    msg.symbol = symbol
    msg.kind = kind
    msg.start = start
    msg.end = end
    msg.prev = prev
    msg.bids = bids
    msg.asks = asks
    return msg


def _kind(value: Any, snapshot_hint: bool) -> Optional[str]:
    if value is None:
        # [assumed] no "type": the envelope may say "event": "snapshot"; otherwise unknown, and
        # the book decides (the first depth message after the subscribe ack is the snapshot).
        return "snapshot" if snapshot_hint else None
    if isinstance(value, str):
        lowered = value.lower()  # [assumed] letter case is not significant
        if lowered == "snapshot":
            return "snapshot"
        if lowered == "update":
            if snapshot_hint:
                raise ProtocolError("depth field 'type' is 'update' but the envelope says snapshot")
            return "update"
    raise ProtocolError(f"depth field 'type' must be 'snapshot' or 'update', got {value!r:.40}")


def _version(data: Any, name: str) -> Optional[int]:
    value = data.get(name)
    if value is None:
        return None
    if type(value) is int:
        if 0 <= value <= MAX_VERSION:
            return value
    elif isinstance(value, str) and _VERSION(value):  # [assumed] big integers may be strings
        number = int(value)
        if number <= MAX_VERSION:
            return number
    raise ProtocolError(
        f"depth field {name!r} must be a non-negative integer below 2**63, got {value!r:.40}"
    )


def _levels(raw: Any, side: str, known: Container[str]) -> List[Level]:
    if raw is None:
        return []
    if type(raw) is list:
        if _c_levels is not None:  # the same fast path in C; None: run the Python code
            fast = _c_levels(raw, known)
            if fast is not None:
                return fast
        # Fast path: [[price, qty], ...] of well-formed strings (the documented shape). A price
        # already in ``known`` is valid; all quantities are checked at once after the loop.
        out: List[Level] = []
        append = out.append
        price_ok = _PRICE
        try:
            for entry in raw:
                if type(entry) is not list:
                    break
                price, qty = entry  # ValueError unless exactly two elements
                if price not in known and not price_ok(price):
                    break
                append((price, qty))
            else:
                if not out:
                    return out
                qtys = "|".join(map(_SECOND, out))  # TypeError unless every qty is a str
                if qtys.count("|") == len(out) - 1 and _QTYS(qtys):
                    return out
        except (TypeError, ValueError):  # a non-string/unhashable price or quantity, or not
            pass  # two elements: the slow path says which (extra elements are allowed there)
    elif not isinstance(raw, (list, tuple)):
        raise ProtocolError(f"depth field {side!r} must be a list, got {type(raw).__name__}")
    return [_level(entry, side, index) for index, entry in enumerate(raw)]


def _level(entry: Any, side: str, index: int) -> Level:
    where = f"{side}[{index}]"
    if isinstance(entry, (list, tuple)):
        if len(entry) < 2:  # [assumed] extra elements (e.g. an order count) are ignored
            raise ProtocolError(f"depth level {where} must be [price, quantity], got {entry!r:.60}")
        price, qty = entry[0], entry[1]
    elif isinstance(entry, dict):  # [assumed] object levels
        price = entry.get("price")
        qty = entry.get("quantity")
        if qty is None:
            qty = entry.get("qty")  # [assumed] the obvious abbreviation
        if price is None or qty is None:
            raise ProtocolError(
                f"depth level {where} needs 'price' and 'quantity', got {entry!r:.60}"
            )
    else:
        raise ProtocolError(
            f"depth level {where} must be a list or an object, got {type(entry).__name__}"
        )
    price_text = _numeral(price, f"{where}.price")
    qty_text = _numeral(qty, f"{where}.quantity")
    if not _PRICE(price_text):
        raise ProtocolError(f"depth {where}.price must be > 0, got {price_text!r}")
    return price_text, qty_text


def _numeral(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value
    elif type(value) is int:  # [assumed] a JSON number instead of a string
        text = str(value)
    elif type(value) is float and math.isfinite(value):  # [assumed] as above
        text = repr(value)
        if "e" in text or "E" in text:
            text = format(Decimal(text), "f")
    else:
        raise ProtocolError(f"depth {where} must be a decimal string, got {type(value).__name__}")
    if not _QTY(text):
        raise ProtocolError(
            f"depth {where} must be a non-negative decimal numeral (ASCII digits, at most one '.',"
            f" at most 30 digits each side), got {value!r:.40}"
        )
    return text
