"""A client that gives up during the upgrade (a connect deadline, ``stop()`` aborting the
attempt) is not an error of the sandbox: aiohttp must log no traceback for it."""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
import time
from urllib.parse import urlsplit

import pytest

from sixmm.sandbox import Sandbox


def test_an_upgrade_abandoned_midway_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with Sandbox(port=0) as sb:
        url = urlsplit(sb.ws_url)
        assert url.hostname is not None and url.port is not None
        for i in range(150):
            sock = socket.create_connection((url.hostname, url.port), timeout=5)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            if i % 3 == 0:  # vary where in the upgrade the reset lands
                time.sleep(0.0005 * (i % 7))
            # close with a reset, as an aborted connect attempt does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        # none of the abandoned attempts stays registered as a connection
        assert sb.wait_for(lambda: not sb.connections, timeout=10)
    errors = [
        r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR
    ]
    assert not errors, [r.getMessage() for r in errors]
