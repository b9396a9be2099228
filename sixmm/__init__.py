"""sixmm: a dependable, thread-based client for the 6MM exchange's WebSocket streams.

Register a callback per channel; sixmm keeps the connections alive, the subscriptions
current, the local order books correct and the listenKey fresh::

    import sixmm

    with sixmm.StreamManager() as streams:
        streams.trades("BTCUSDT", print)
        book = streams.order_book("BTCUSDT")
        streams.wait()
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import gui
from .config import DEFAULT_REST_URL, DEFAULT_WS_URL, Backoff
from .dispatch import InlineDispatcher, QueueDispatcher, WorkerDispatcher
from .errors import (
    ApiError,
    AuthError,
    CallbackError,
    ConnectionLost,
    ProtocolError,
    QueueOverflow,
    SixMMError,
    SubscriptionError,
    TopicSilent,
)
from .orderbook import OrderBook
from .protocol.liveness import DEFAULT_LIVENESS, Liveness
from .protocol.models import (
    AccountUpdate,
    Balance,
    DepthUpdate,
    Kline,
    OrderUpdate,
    Position,
    Ticker,
    Trade,
    UserEvent,
)
from .settings import Settings
from .states import GapEvent, StateEvent, StreamState
from .subscriptions import Subscription

if TYPE_CHECKING:
    from .manager import StreamManager
    from .rest.client import RestClient

# The facade and the REST client (websocket and HTTP I/O: they import requests) load on first
# use, so the pure core (``sixmm.protocol``) imports without them installed.
_LAZY = {"StreamManager": ".manager", "RestClient": ".rest.client"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sixmm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIVENESS",
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "AccountUpdate",
    "ApiError",
    "AuthError",
    "Backoff",
    "Balance",
    "CallbackError",
    "ConnectionLost",
    "DepthUpdate",
    "GapEvent",
    "InlineDispatcher",
    "Kline",
    "Liveness",
    "OrderBook",
    "OrderUpdate",
    "Position",
    "ProtocolError",
    "QueueDispatcher",
    "QueueOverflow",
    "RestClient",
    "Settings",
    "SixMMError",
    "StateEvent",
    "StreamManager",
    "StreamState",
    "Subscription",
    "SubscriptionError",
    "Ticker",
    "TopicSilent",
    "Trade",
    "UserEvent",
    "WorkerDispatcher",
    "gui",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
