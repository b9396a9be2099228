"""This tree against another checkout, in wall time: ``python bench/compare.py --against DIR``.

Issue 12's "no speed lost" asks for the trade and depth ratios to L before and after. One run
of each tree, minutes apart, cannot show that on a machine whose load drifts by tens of percent
between runs; this runner measures the two trees in many short pairs instead:

- one loopback sender (``bench/sender.py``) serves every measurement;
- each measurement is one ``bench/bench_stream.py`` process (this tree's script, pointed at a
  tree's ``sixmm`` by ``SIXMM_BENCH_TREE``) that times the raw ceiling, L, ``sixmm`` inline and
  L again on one stream, and verifies the book at the end (a wrong book fails the whole run);
  its figure is sixmm's rate over the mean of the two L around it, so both trees are measured
  against the same yardstick in the same process;
- pair ``i`` measures both trees back to back, this tree first when ``i`` is even and the
  other first when it is odd (any drift within a pair cancels over two pairs);
- the result per stream and JSON backend is the median over the pairs of
  ``ratio(this) / ratio(other)``, its range, and how many pairs this tree won.

Both trees must have their C extensions built (``--build`` builds them with
``setup.py build_ext --inplace``); the runner refuses a tree whose extensions are missing, as
the figures would compare C against pure Python. ``SIXMM_NO_EXTENSIONS=1`` compares the
pure-Python paths (then nothing needs building).

Options: ``--pairs N`` (default 10), ``--kinds trade,depth,book``, ``--json orjson,json``,
``--trades/--depth/--book`` (messages per measurement), ``--save FILE`` (every measurement as
JSON lines). Making the other tree: ``git worktree add ../before c8c1065 && python
bench/compare.py --against ../before --build``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.machinery
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.sender import SenderProcess  # noqa: E402

STREAM_N = {"trade": 60_000, "depth": 20_000, "book": 20_000}
TIMEOUT = 600.0


def missing_extensions(tree: str) -> List[str]:
    """The C sources under ``tree/sixmm`` without a built extension for this interpreter."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    missing = []
    for source in sorted(glob.glob(os.path.join(tree, "sixmm", "**", "*.c"), recursive=True)):
        if not os.path.exists(source[: -len(".c")] + suffix):
            missing.append(os.path.relpath(source, tree))
    return missing


def ensure_built(tree: str, build: bool) -> None:
    """Build ``tree``'s extensions if asked; refuse a tree that still lacks one."""
    if os.environ.get("SIXMM_NO_EXTENSIONS") == "1":
        return
    if build and missing_extensions(tree):
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=tree,
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
    missing = missing_extensions(tree)
    if missing:
        raise SystemExit(
            f"{tree}: C extensions not built ({', '.join(missing)}); pass --build, or set "
            "SIXMM_NO_EXTENSIONS=1 to compare the pure-Python paths"
        )


def measure(tree: str, port: int, kind: str, backend: str, n: int) -> Dict[str, Any]:
    """One ``bench_stream.py`` process on ``tree``'s sixmm: the inline figure's row."""
    cmd = [
        sys.executable,
        os.path.join(HERE, "bench_stream.py"),
        "--port",
        str(port),
        "--json",
        backend,
        "--only-kinds",
        kind,
        "--dispatchers",
        "inline",
        f"--{'trades' if kind == 'trade' else kind}",
        str(n),
    ]
    env = {**os.environ, "SIXMM_BENCH_TREE": os.path.abspath(tree)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    errors = [r["error"] for r in rows if "error" in r]
    if proc.returncode != 0 or errors:
        tail = errors or (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"{kind}/{backend} on {tree} failed: {' | '.join(tail)}")
    (row,) = [r for r in rows if r.get("figure") == "sixmm-inline"]
    (raw,) = [r for r in rows if r.get("figure") == "raw"]
    # the sender below 20x L: L may have measured the sender, not the client (the pair is
    # left out and counted)
    return dict(row, valid=bool(raw["valid"]), sender_ratio=raw["ratio"])


def _summary(this: List[Optional[float]], that: List[Optional[float]]) -> Dict[str, Any]:
    kept = [(a, b) for a, b in zip(this, that) if a is not None and b is not None]
    if not kept:
        raise SystemExit("every pair was invalid (the sender below 20x L)")
    paired = [a / b for a, b in kept]
    return {
        "pairs": len(paired),
        "invalid_pairs": len(this) - len(kept),
        "median": round(statistics.median(paired), 3),
        "min": round(min(paired), 3),
        "max": round(max(paired), 3),
        "won": sum(1 for r in paired if r >= 1.0),
        "this_median_ratio_to_L": round(statistics.median(a for a, _ in kept), 3),
        "that_median_ratio_to_L": round(statistics.median(b for _, b in kept), 3),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", required=True, help="another checkout of sixmm")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--kinds", default="trade,depth,book")
    parser.add_argument("--json", default="orjson,json", help="JSON backends, e.g. orjson,json")
    parser.add_argument("--trades", type=int, default=STREAM_N["trade"])
    parser.add_argument("--depth", type=int, default=STREAM_N["depth"])
    parser.add_argument("--book", type=int, default=STREAM_N["book"])
    parser.add_argument("--build", action="store_true", help="build missing C extensions")
    parser.add_argument("--save", default="", help="every measurement as JSON lines")
    args = parser.parse_args(argv)
    other = os.path.abspath(args.against)
    if not os.path.isdir(os.path.join(other, "sixmm")):
        parser.error(f"{other} holds no sixmm package")
    if os.path.samefile(other, ROOT):
        parser.error("--against names this tree")
    for tree in (ROOT, other):
        ensure_built(tree, args.build)
    trees = {"this": ROOT, "that": other}
    sizes = {"trade": args.trades, "depth": args.depth, "book": args.book}
    kinds = [k for k in args.kinds.split(",") if k]
    backends = [b for b in args.json.split(",") if b]
    for kind in kinds:
        if kind not in sizes:
            parser.error(f"unknown kind {kind!r} (trade, depth, book)")
    ratios: Dict[Tuple[str, str, str], List[Optional[float]]] = {}
    with contextlib.ExitStack() as stack:
        save = stack.enter_context(open(args.save, "w")) if args.save else None
        sender = SenderProcess()
        stack.callback(sender.stop)
        started = time.monotonic()
        for pair in range(args.pairs):
            order = ("this", "that") if pair % 2 == 0 else ("that", "this")
            for backend in backends:
                for kind in kinds:
                    for side in order:
                        row = measure(trees[side], sender.port, kind, backend, sizes[kind])
                        ratio = row["ratio"] if row["valid"] else None
                        ratios.setdefault((kind, backend, side), []).append(ratio)
                        if save is not None:
                            save.write(json.dumps(dict(row, pair=pair, tree=trees[side])) + "\n")
                            save.flush()
            print(
                f"pair {pair + 1}/{args.pairs} done ({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    result: Dict[str, Any] = {"this": ROOT, "that": other, "figures": {}}
    for kind in kinds:
        for backend in backends:
            this = ratios[(kind, backend, "this")]
            that = ratios[(kind, backend, "that")]
            result["figures"][f"{kind}/{backend}"] = _summary(this, that)
    print(json.dumps(result, indent=1))
    print()
    print(
        f"| sixmm inline / L, paired ({args.pairs} pairs) | this | that"
        " | this / that, median (range) | pairs won |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, fig in result["figures"].items():
        print(
            f"| {name} | {fig['this_median_ratio_to_L']:.3f} | {fig['that_median_ratio_to_L']:.3f}"
            f" | {fig['median']:.3f} ({fig['min']:.3f}-{fig['max']:.3f})"
            f" | {fig['won']}/{fig['pairs']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
