"""sixmm's framing against Autobahn|Testsuite's fuzzingserver: every client case except the
compression ones (12.*, 13.*) must be OK or INFORMATIONAL (NON-STRICT counts as a failure).

``wstest`` comes from ``~/.pyenv/versions/2.7.18/bin/python -m pip install
autobahntestsuite==25.10.1`` (it runs on CPython 2.7 only; its dependencies are pinned by the
package itself); it is looked up as ``$SIXMM_WSTEST``, then on ``PATH``, then in
``~/.pyenv/versions/2.7*/bin``. Without it the test skips, unless
``SIXMM_REQUIRE_AUTOBAHN=1``: then it fails.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from . import client

pytestmark = pytest.mark.autobahn

ACCEPTED = ("OK", "INFORMATIONAL")


def find_wstest() -> Optional[str]:
    explicit = os.environ.get("SIXMM_WSTEST")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    # pyenv's own copy first: a pyenv shim named wstest on PATH exits 127 when 2.7 is not one
    # of pyenv's selected versions
    for path in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/wstest"))):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("wstest")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"wstest exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"wstest fuzzingserver not listening on {port} within {timeout}s")


def summarize(results: Dict[str, Dict[str, str]]) -> Dict[str, List[str]]:
    """Case ids by verdict; a case whose close behaviour is not accepted counts under it."""
    by: Dict[str, List[str]] = collections.defaultdict(list)
    for case, entry in results.items():
        verdict = entry["behavior"]
        if verdict in ACCEPTED and entry.get("behaviorClose", "OK") not in ACCEPTED:
            verdict = f"close {entry['behaviorClose']}"
        by[verdict].append(case)
    return by


def test_every_autobahn_client_case_passes(tmp_path: Path) -> None:
    wstest = find_wstest()
    if wstest is None:
        message = "wstest (autobahntestsuite on CPython 2.7) is not installed"
        if os.environ.get("SIXMM_REQUIRE_AUTOBAHN") == "1":
            pytest.fail(f"{message}, and SIXMM_REQUIRE_AUTOBAHN=1")
        pytest.skip(message)
    port = _free_port()
    url = f"ws://127.0.0.1:{port}"
    spec = {
        "url": url,
        "outdir": str(tmp_path / "reports"),
        "cases": ["*"],
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with open(tmp_path / "wstest.log", "wb") as log:
        proc = subprocess.Popen(
            [wstest, "-m", "fuzzingserver", "-s", "spec.json", "-u", "0"],
            cwd=str(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_listening(port, proc)
            started = time.monotonic()
            count = client.case_count(url, "sixmm")
            for case in range(1, count + 1):
                client.run_case(url, case, "sixmm")
            client.update_reports(url, "sixmm")
            elapsed = time.monotonic() - started
            index = tmp_path / "reports" / "index.json"
            deadline = time.monotonic() + 30
            while not index.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            results = json.loads(index.read_text())["sixmm"]
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    by = summarize(results)
    summary = ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items()))
    print(f"\nAutobahn client cases: {len(results)} run in {elapsed:.1f}s: {summary}")
    assert len(results) == count and count >= 290, (count, len(results))
    failed = {k: sorted(v) for k, v in by.items() if k not in ACCEPTED}
    assert not failed, f"{summary}; not OK: {failed}"
