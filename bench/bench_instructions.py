"""Instructions per frame on sixmm's reader thread, counted by valgrind (callgrind).

Run: ``python bench/bench_instructions.py [--kinds book,depth,trade] [--json orjson,json]
[--against OTHER_TREE] [-j 2]``. Each figure runs ``bench/profile_frame.py --no-profile``
(its own loopback sender, ``StreamManager`` inline, the book verified at the end) under
``valgrind --tool=callgrind --separate-threads=yes`` twice, with N and 3N frames, and divides
the difference of the reader thread's instruction count by 2N: start-up, the snapshot and the
main thread's verification drop out. The reader is the thread that calls ``recv``.

Instruction counts do not depend on what else the machine is doing, so two trees compare in
one run on a noisy machine, where wall-clock ratios drift by tens of percent. They are not
time: cache misses and branch mispredictions are not in them. ``--against`` runs the same
figures (this tree's bench scripts) on another checkout's ``sixmm`` and prints the ratio.
``--record`` counts each figure a second time with ``record=`` a file and prints what
recording adds to the reader thread per frame (issue 13's "at most 10%", in instructions).
Needs valgrind (Debian's package); about 1-4 minutes per figure.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE_N = {"book": 2000, "depth": 2000, "trade": 6000}


def _reader_instructions(outdir: str, stem: str) -> int:
    """The instruction total of the thread that received from the socket."""
    best: Optional[int] = None
    for path in glob.glob(os.path.join(outdir, stem + "-*")):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "sock_recv" not in text:
            continue
        for line in text.splitlines():
            if line.startswith("totals:"):
                total = int(line.split()[1])
                best = total if best is None else max(best, total)
    if best is None:
        raise RuntimeError(f"no reader thread found in {outdir}/{stem}-*")
    return best


def _count(tree: str, kind: str, backend: str, n: int, outdir: str, record: bool = False) -> int:
    # the whole path: two checkouts may share their folder's name
    stem = f"{tree.strip(os.sep).replace(os.sep, '_')}.{kind}.{backend}.{n}.{int(record)}.out"
    # this tree's profile_frame.py, pointed at ``tree``'s sixmm
    script = os.path.join(HERE, "profile_frame.py")
    env = {**os.environ, "SIXMM_BENCH_TREE": tree}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={os.path.join(outdir, stem)}",
        sys.executable,
        script,
        "--kind",
        kind,
        "--n",
        str(n),
        "--json",
        backend,
        "--no-profile",
    ]
    if record:
        cmd += ["--record", os.path.join(outdir, stem + ".jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{kind}/{backend}/{n} on {tree} failed: {' | '.join(tail)}")
    return _reader_instructions(outdir, stem)


def per_frame(tree: str, kind: str, backend: str, outdir: str, record: bool = False) -> float:
    n = BASE_N[kind]
    small = _count(tree, kind, backend, n, outdir, record)
    large = _count(tree, kind, backend, 3 * n, outdir, record)
    return (large - small) / (2 * n)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kinds", default="book,depth,trade")
    parser.add_argument("--json", default="orjson,json", help="backends: orjson,json")
    parser.add_argument("--against", default="", help="another checkout of sixmm to compare")
    parser.add_argument("-j", type=int, default=2, help="valgrind runs at once")
    parser.add_argument(
        "--record",
        action="store_true",
        help="also count each figure with record= (a .jsonl file): what recording adds to the "
        "reader thread, per frame and as a share of the figure without it",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    trees = [ROOT] + ([os.path.abspath(args.against)] if args.against else [])
    jobs: List[Tuple[str, str, str, bool]] = [
        (tree, kind, backend, rec)
        for kind in args.kinds.split(",")
        for backend in args.json.split(",")
        for tree in trees
        for rec in ((False, True) if args.record else (False,))
    ]
    results: Dict[Tuple[str, str, str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="sixmm-cg-") as outdir:  # noqa: SIM117 (3.9)
        with ThreadPoolExecutor(max_workers=max(1, args.j)) as pool:
            futures = {job: pool.submit(per_frame, *job[:3], outdir, job[3]) for job in jobs}
            for job, fut in futures.items():
                results[job] = fut.result()
    head = "| stream | JSON | instructions/frame, this tree |"
    if args.against:
        head += f" `{args.against}` | this / that |"
    if args.record:
        head += " recording adds, this tree | share |"
        if args.against:
            head += f" recording adds, `{args.against}` | share |"
    print(head)
    cols = 3 + (2 if args.against else 0) + (2 * len(trees) if args.record else 0)
    print("|---|---|" + "---:|" * (cols - 2))
    for kind in args.kinds.split(","):
        for backend in args.json.split(","):
            mine = results[(ROOT, kind, backend, False)]
            row = f"| {kind} | {backend} | {mine:,.0f} |"
            if args.against:
                theirs = results[(trees[1], kind, backend, False)]
                row += f" {theirs:,.0f} | {mine / theirs:.3f} |"
            if args.record:
                for tree in trees:
                    plain = results[(tree, kind, backend, False)]
                    added = results[(tree, kind, backend, True)] - plain
                    row += f" {added:,.0f} | {added / plain:.3f} |"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
