"""HTTP-level faults of the sandbox: rate limits with ``Retry-After`` and stalled REST calls.

A rate limit answers the next ``count`` REST calls and/or WebSocket upgrades with ``status``
(429 by default) and ``Retry-After: <seconds>``; a stall holds the next ``count`` REST calls
(of one method/path, or any) for ``seconds`` before answering (``None``: never answers until
the sandbox stops). Every WebSocket upgrade attempt is recorded in ``upgrades`` (``{"t",
"path", "status"}``) so tests can count connects over a window.

Thread-safety: not thread-safe; used only on the sandbox's event-loop thread.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["NEVER", "HttpFaults"]

NEVER = 3600.0  # a stall "forever": far longer than any test, ended by the sandbox's stop
TARGETS = ("rest", "ws", "all")


class HttpFaults:
    """Queued HTTP faults, consumed in order."""

    def __init__(self) -> None:
        self.limits: List[Dict[str, Any]] = []
        self.stalls: List[Dict[str, Any]] = []
        self.upgrades: List[Dict[str, Any]] = []
        self.closed = False  # the sandbox is stopping: stalled calls end now

    def add_limit(
        self,
        retry_after: float,
        count: int = 1,
        target: str = "all",
        status: int = 429,
        path: Optional[str] = None,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        if retry_after < 0 or count < 1:
            raise ValueError("retry_after must be >= 0 and count >= 1")
        self.limits.append(
            {
                "retry_after": retry_after,
                "count": count,
                "target": target,
                "status": status,
                "path": path,
            }
        )

    def take_limit(self, target: str, path: str) -> Optional[Tuple[int, float]]:
        """``(status, retry_after)`` if this call is rate limited."""
        for i, entry in enumerate(self.limits):
            if entry["target"] in (target, "all") and entry["path"] in (None, path):
                entry["count"] -= 1
                if entry["count"] <= 0:
                    del self.limits[i]
                return entry["status"], entry["retry_after"]
        return None

    def add_stall(
        self,
        seconds: Optional[float] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
        count: int = 1,
    ) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.stalls.append(
            {
                "seconds": NEVER if seconds is None else max(0.0, seconds),
                "count": count,
                "method": method.upper() if method else None,
                "path": path,
            }
        )

    def take_stall(self, method: str, path: str) -> Optional[float]:
        """Seconds to hold this REST call before answering, if it is stalled."""
        for i, entry in enumerate(self.stalls):
            if entry["method"] in (None, method) and entry["path"] in (None, path):
                entry["count"] -= 1
                if entry["count"] <= 0:
                    del self.stalls[i]
                return float(entry["seconds"])
        return None

    def upgrade(self, path: str, status: int) -> None:
        self.upgrades.append({"t": time.monotonic(), "path": path, "status": status})
        if len(self.upgrades) > 100_000:
            del self.upgrades[:50_000]
