"""Coverage-guided fuzzing of the wire layer and the book (optional; not run in CI).

With atheris installed (``pip install atheris``)::

    python fuzz/fuzz_wire.py -max_total_time=600 fuzz/corpus

Without it, the same target runs on randomly mutated seed frames (stdlib only)::

    python fuzz/fuzz_wire.py --iterations 200000 --seed 1

The target feeds one input to :func:`sixmm.protocol.frames.decode` (must never raise), and,
when it decodes to a depth push, to :func:`parse_depth` (``ProtocolError`` only) and to a
:class:`BookState` holding a valid snapshot (any other exception, or a synced book that is
crossed or unsorted, is a finding).
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Callable, List

from sixmm.errors import ProtocolError
from sixmm.protocol.book import BookState
from sixmm.protocol.depth import parse_depth
from sixmm.protocol.events import Push
from sixmm.protocol.frames import decode

SEEDS: List[bytes] = [
    b'{"topic":"market.depth.BTCUSDT","event":"data","ts":1,"data":{"symbol":"BTCUSDT",'
    b'"type":"update","startVersion":11,"endVersion":12,"bids":[["99.5","0"],["99.7","2"]],'
    b'"asks":[["100.5","1.5"]]}}',
    b'{"topic":"market.depth.BTCUSDT","event":"snapshot","ts":1,"data":{"startVersion":"10",'
    b'"endVersion":"10","bids":[{"price":"99.5","quantity":"1"}],"asks":[]}}',
    b'{"topic":"market.trade.BTCUSDT","event":"data","ts":1,"data":[{"symbol":"BTCUSDT",'
    b'"tradeId":"1","price":"1","quantity":"1","side":"BUY","time":1}]}',
    b'{"id":"1","event":"subscribe","success":false,"message":"no","data":["x"]}',
    b'{"event":"auth","success":true,"data":"1188041528"}',
    b'{"topic":"user.1","ts":1,"data":{"eventType":"ORDER_TRADE_UPDATE","orderId":"7"}}',
    b'{"id":"2","event":"pong"}',
]
_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"NaN",
    b"-1",
    b"1e400",
    b"\xff",
    b"null",
    b'"endVersion":',
    b'"startVersion":',
    b'"type":"snapshot"',
    b"9" * 30,
    b"\\u0000",
]


def _fresh_book() -> BookState:
    book = BookState("BTCUSDT")
    book.apply(
        parse_depth(
            {
                "type": "snapshot",
                "startVersion": 10,
                "endVersion": 10,
                "bids": [["99.5", "1"], ["99.0", "2"]],
                "asks": [["100.5", "1"], ["101.0", "3"]],
            }
        )
    )
    return book


def target(data: bytes) -> None:
    """One fuzz input; raises only on a finding."""
    event = decode(data, max_bytes=1 << 20, max_depth=32)
    if type(event) is not Push or not event.topic.startswith("market.depth."):
        return
    try:
        msg = parse_depth(event.data, event.snapshot)
    except ProtocolError:
        return
    book = _fresh_book()
    book.apply(msg)
    if book.synced:
        bids, asks = book.top(100)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert not (bids and asks and bids[0][0] >= asks[0][0]), "synced book is crossed"


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randint(0, len(out))
        if op < 0.3 and out:
            del out[pos : pos + rng.randint(1, 8)]
        elif op < 0.6:
            out[pos:pos] = rng.choice(_TOKENS)
        elif out:
            out[min(pos, len(out) - 1)] = rng.randint(0, 255)
    return bytes(out)


def run_random(iterations: int, seed: int, check: Callable[[bytes], None] = target) -> int:
    """Stdlib fallback: mutate the seeds ``iterations`` times; return the number of inputs."""
    rng = random.Random(seed)
    for i in range(iterations):
        data = _mutate(rng, rng.choice(SEEDS))
        try:
            check(data)
        except Exception:
            print(f"finding at iteration {i}: {data!r}", file=sys.stderr)
            raise
    return iterations


def main() -> int:
    try:
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        parser = argparse.ArgumentParser(description="random-mutation fallback (no atheris)")
        parser.add_argument("--iterations", type=int, default=100_000)
        parser.add_argument("--seed", type=int, default=1)
        args = parser.parse_args()
        n = run_random(args.iterations, args.seed)
        print(f"{n} inputs, no finding")
        return 0
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
