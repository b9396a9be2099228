"""Small test helpers: wait on conditions instead of sleeping."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Tuple


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


@contextlib.contextmanager
def control_sandbox() -> Iterator[Tuple[subprocess.Popen[str], str]]:
    """``python -m sixmm.sandbox --port 0 --control`` in a subprocess: yields it (stdin is the
    control channel) and its WebSocket URL; killed at the end if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm.sandbox", "--port", "0", "--control"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ws_url = proc.stdout.readline().split("ws=")[1].split()[0]
        yield proc, ws_url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def quit_control(proc: subprocess.Popen[str]) -> Tuple[str, str]:
    """Send ``quit`` on the control channel; the sandbox's stdout and stderr once it ended."""
    assert proc.stdin is not None
    proc.stdin.write("quit\n")
    proc.stdin.flush()
    return proc.communicate(timeout=10)
