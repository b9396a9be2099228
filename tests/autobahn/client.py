"""An Autobahn|Testsuite echo client driven by sixmm's own transport and framing.

``python tests/autobahn/client.py --url ws://127.0.0.1:9001`` runs every case the
fuzzingserver offers (``/getCaseCount``, then ``/runCase?case=N``), echoing each data message
with its opcode, then asks the server to write its reports (``/updateReports``). A frame that
breaks the protocol fails the connection with the decoder's close code (1002/1007/1009), as
sixmm's connections do.

Limits: the library defaults, except ``max_fragments``: cases 9.3.x/9.4.x send a 4 MiB
message in up to 65,536 fragments, more than the 1,024 a market stream allows by default.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

try:
    from sixmm.protocol.framing import FrameError
    from sixmm.transport import ConnectionClosed, FrameTimeout, Transport
except ImportError:  # run as a script from a checkout
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from sixmm.protocol.framing import FrameError
    from sixmm.transport import ConnectionClosed, FrameTimeout, Transport

MAX_FRAGMENTS = 1 << 17
READ_TIMEOUT = 60.0


def _open(url: str) -> Transport:
    t = Transport.connect(url, timeout=30, max_fragments=MAX_FRAGMENTS)
    t.settimeout(READ_TIMEOUT)
    return t


def case_count(base: str, agent: str) -> int:
    t = _open(f"{base}/getCaseCount?agent={agent}")
    try:
        _opcode, payload = t.recv()
        return int(payload)
    finally:
        t.close()


def run_case(base: str, case: int, agent: str) -> Optional[str]:
    """Echo until the server closes; return why the connection ended (None: a clean close)."""
    t = _open(f"{base}/runCase?case={case}&agent={agent}")
    try:
        while True:
            try:
                opcode, payload = t.recv()
            except ConnectionClosed as exc:
                return None if "closed by server" in str(exc) else str(exc)
            except FrameError as exc:
                return f"failed the connection ({exc.code}): {exc}"
            except FrameTimeout:
                return "timed out"
            try:
                t.send_frame(opcode, payload)
            except ConnectionClosed as exc:
                return str(exc)
    finally:
        t.close()


def update_reports(base: str, agent: str) -> None:
    t = _open(f"{base}/updateReports?agent={agent}")
    try:
        while True:
            t.recv()
    except (ConnectionClosed, FrameTimeout):
        pass
    finally:
        t.close()


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="ws://127.0.0.1:9001", help="the fuzzingserver's URL")
    p.add_argument("--agent", default="sixmm", help="agent name in the report")
    p.add_argument("--cases", type=int, default=0, help="run only the first N cases")
    args = p.parse_args(argv)
    started = time.monotonic()
    count = case_count(args.url, args.agent)
    if args.cases:
        count = min(count, args.cases)
    for case in range(1, count + 1):
        try:
            run_case(args.url, case, args.agent)
        except Exception as exc:  # one case's trouble must not stop the run
            print(f"case {case}: {type(exc).__name__}: {exc}", file=sys.stderr)
    update_reports(args.url, args.agent)
    print(f"ran {count} cases in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
