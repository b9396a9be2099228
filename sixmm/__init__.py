"""sixmm: a dependable, thread-based client for the 6MM exchange's WebSocket streams."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
