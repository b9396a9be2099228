"""A real ``redis-server`` for the bus tests: 127.0.0.1, a free port, a temporary data dir.

Missing ``redis-server`` (or the ``redis`` package) skips the tests with the reason, unless
``SIXMM_REQUIRE_REDIS=1`` (CI), which makes them fail instead. Import the fixture into a test
module: ``from tests.redisserver import redis_server_fixture  # noqa: F401`` (the fixture's name is
``redis_server``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator, Optional

import pytest

__all__ = ["RedisServer", "redis_server_fixture", "require_redis"]


def require_redis() -> str:
    """The path of ``redis-server``; skips (or fails, with SIXMM_REQUIRE_REDIS=1) without it."""
    required = os.environ.get("SIXMM_REQUIRE_REDIS") == "1"
    path = shutil.which("redis-server")
    problem = None
    if path is None:
        problem = "redis-server is not installed (apt-get install redis-server)"
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            problem = "the redis package is not installed (pip install 'sixmm[bus]')"
    if problem is not None:
        if required:
            pytest.fail(f"SIXMM_REQUIRE_REDIS=1 but {problem}")
        pytest.skip(problem)
    assert path is not None
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; ``restart()`` keeps the port (and, with ``persist``, data)."""

    def __init__(self, binary: str, *, persist: bool = False) -> None:
        self._binary = binary
        self._dir = tempfile.mkdtemp(prefix="sixmm-redis-")
        self.port = _free_port()
        self.persist = persist
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir,
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err[-500:]}")
            try:
                if self.client().ping():
                    return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def used_memory(self) -> int:
        return int(self.client().info("memory")["used_memory"])

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (no persistence), stopped and removed afterwards."""
    server = RedisServer(require_redis())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
