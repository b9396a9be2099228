"""A local 6MM exchange for tests, demos and offline development (needs ``aiohttp``).

``Sandbox`` runs REST and the WebSocket ``/ws`` on one loopback port in a background thread,
with a seeded market simulation and fault injection (drops, silence, version gaps, crossed
books, malformed frames, rejected subscriptions, listenKey expiry, clock skew, REST errors).
``python -m sixmm.sandbox`` runs it in the foreground.

This package is an independent implementation of the protocol: it never imports the
client's protocol or REST modules, so a bug shared by both cannot hide itself.
"""

from __future__ import annotations

from .sandbox import Sandbox
from .wire import DEPTH_STYLES

__all__ = ["DEPTH_STYLES", "Sandbox"]
