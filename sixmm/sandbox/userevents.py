"""Generator of the sandbox user's private events (orders, account, margin calls).

Pure and seeded; ``now_ms`` is passed in. Field names follow PROTOCOL.md §5 (WS names:
``orderStatus``, ``frozenBalance``, string ``marginMode``).

Thread-safety: not thread-safe; used only on the sandbox's event-loop thread.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["EVENT_TYPES", "UserEvents"]

EVENT_TYPES: Tuple[str, ...] = ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "MARGIN_CALL")

_PRICES = {"BTCUSDT": "85000.0", "ETHUSDT": "3000.00", "SOLUSDT": "150.000"}


class UserEvents:
    """Makes plausible private events; order ids grow, statuses progress NEW -> FILLED."""

    def __init__(self, seed: int, symbols: Tuple[str, ...]) -> None:
        self.rng = random.Random(f"{seed}:user")
        self.symbols = symbols or ("BTCUSDT",)
        self.order_id = 7_000_000_000 + self.rng.randint(0, 999_999)
        self._open: List[Dict[str, Any]] = []

    def make(
        self, event_type: str, now_ms: int, extra: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """One event's ``data`` of ``event_type``; ``extra`` fields override generated ones."""
        if event_type == "ORDER_TRADE_UPDATE":
            data = self._order(now_ms)
        elif event_type == "ACCOUNT_UPDATE":
            data = self._account(now_ms)
        elif event_type == "MARGIN_CALL":
            data = self._margin_call(now_ms)
        else:
            data = {"eventType": event_type, "eventTime": now_ms}
        if extra:
            data.update(extra)
        data["eventType"] = extra.get("eventType", event_type) if extra else event_type
        return data

    def random(self, now_ms: int) -> Dict[str, Any]:
        """A random event, mostly order updates."""
        r = self.rng.random()
        kind = "ORDER_TRADE_UPDATE" if r < 0.7 else "ACCOUNT_UPDATE" if r < 0.95 else "MARGIN_CALL"
        return self.make(kind, now_ms)

    def _order(self, now_ms: int) -> Dict[str, Any]:
        rng = self.rng
        if self._open and rng.random() < 0.6:
            order = self._open[0]
            if rng.random() < 0.2:
                order["orderStatus"] = "CANCELED"
                order["lastFilledQuantity"] = "0"
            else:
                qty = int(order["quantity"].replace(".", ""))
                filled = int(order["filledQuantity"].replace(".", ""))
                step = rng.randint(1, max(1, qty - filled))
                filled = min(qty, filled + step)
                order["filledQuantity"] = _fmt3(filled)
                order["lastFilledQuantity"] = _fmt3(step)
                order["lastFilledPrice"] = order["price"]
                order["avgPrice"] = order["price"]
                order["orderStatus"] = "FILLED" if filled >= qty else "PARTIALLY_FILLED"
            if order["orderStatus"] in ("FILLED", "CANCELED"):
                self._open.pop(0)
        else:
            self.order_id += 1
            symbol = rng.choice(self.symbols)
            order = {
                "symbol": symbol,
                "orderId": str(self.order_id),
                "clientOrderId": f"sbx-{self.order_id}",
                "side": rng.choice(("BUY", "SELL")),
                "positionSide": "BOTH",
                "orderType": "LIMIT",
                "timeInForce": "GTC",
                "orderStatus": "NEW",
                "price": _PRICES.get(symbol, "100.0000"),
                "quantity": _fmt3(rng.randint(1, 5000)),
                "filledQuantity": "0.000",
                "avgPrice": "0",
                "lastFilledPrice": "0",
                "lastFilledQuantity": "0",
            }
            self._open.append(order)
            if len(self._open) > 20:
                self._open.pop(0)
        out = dict(order)
        out["updateTime"] = now_ms
        out["eventTime"] = now_ms
        out["eventType"] = "ORDER_TRADE_UPDATE"
        return out

    def _account(self, now_ms: int) -> Dict[str, Any]:
        rng = self.rng
        wallet = rng.randint(100_000, 200_000)
        frozen = rng.randint(0, 20_000)
        symbol = rng.choice(self.symbols)
        return {
            "eventType": "ACCOUNT_UPDATE",
            "eventTime": now_ms,
            "balances": [
                {
                    "asset": "USDT",
                    "walletBalance": f"{wallet}.00",
                    "availableBalance": f"{wallet - frozen}.00",
                    "frozenBalance": f"{frozen}.00",
                }
            ],
            "positions": [
                {
                    "symbol": symbol,
                    "positionSide": rng.choice(("BOTH", "LONG", "SHORT")),
                    "positionAmount": _fmt3(rng.randint(-5000, 5000)),
                    "entryPrice": _PRICES.get(symbol, "100.0000"),
                    "marginMode": rng.choice(("ISOLATED", "CROSS")),
                    "unrealizedProfit": f"{rng.randint(-500, 500)}.00",
                }
            ],
        }

    def _margin_call(self, now_ms: int) -> Dict[str, Any]:
        symbol = self.rng.choice(self.symbols)
        return {
            "eventType": "MARGIN_CALL",
            "eventTime": now_ms,
            "symbol": symbol,
            "positionSide": "BOTH",
            "marginRatio": f"0.{self.rng.randint(80, 99)}",
            "marginMode": "CROSS",
        }


def _fmt3(n: int) -> str:
    sign = "-" if n < 0 else ""
    s = str(abs(n)).rjust(4, "0")
    return f"{sign}{s[:-3]}.{s[-3:]}"
