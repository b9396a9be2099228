"""Small test helpers: wait on conditions instead of sleeping."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, Iterator, List


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
        time.sleep(interval)


class Recorder:
    """A thread-safe callback that records its arguments (and the thread that called it)."""

    def __init__(self) -> None:
        self.items: List[Any] = []
        self.threads: List[str] = []
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)
            self.threads.append(threading.current_thread().name)

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)

    def snapshot(self) -> List[Any]:
        with self._lock:
            return list(self.items)


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound but never
    listening, so no other process can take it meanwhile (unlike a fixed port such as 9)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
