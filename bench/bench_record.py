"""What recording costs, and how fast a recording replays.

Run: ``python bench/bench_record.py [--n 200000] [--runs 5] [--quick]``. Starts its own
loopback sender (``bench/sender.py``). Prints one JSON object per figure and a summary.

Figures (messages/s of trade callbacks, timed from the 10th percent of the stream to its end):

- ``live``: ``StreamManager(url)`` + ``streams.trades("BTCUSDT", cb)``, inline dispatcher;
- ``record``: the same with ``record=FILE.jsonl`` (and ``record_gz`` with ``FILE.jsonl.gz``);
- ``replay``: ``StreamManager.replay(FILE.jsonl)`` (speed None) with the same callback.

Each figure also has a CPU-time rate (messages per second of this process's CPU time, every
thread): far less sensitive to other load on the machine than the wall-clock rate.

Live and recording runs alternate (live, record, replay, record_gz, live, ...): each round's
ratios are taken against the geometric mean of the live runs on either side of it, so that a
drift of the machine's speed cancels out; the summary gives the medians (and the spread) of the
same-run ratios ``record / live`` (target >= 0.90) and ``replay / live`` (target >= 1.0).

The bench checks its own result: every recording holds every trade frame the callback saw
(no drop), and replaying it delivers the same trade ids in the same order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_stream import TIMEOUT, WARM, Counter, Rates
from bench.sender import SYMBOL, SenderProcess, url_for


class Ids(Counter):
    """A counting callback that also keeps the trade ids (to verify replays)."""

    def __init__(self, n: int, warm: int) -> None:
        super().__init__(n, warm)
        self.ids: List[str] = []

    def __call__(self, item: Any) -> None:
        self.ids.append(item.trade_id)
        super().__call__(item)


def live(
    port: int, n: int, record: Optional[str] = None
) -> Tuple[Rates, List[str], Dict[str, Any]]:
    import sixmm

    counter = Ids(n, int(n * WARM))
    errors: List[BaseException] = []
    streams = sixmm.StreamManager(
        url_for(port, kind="trade", n=n), record=record, on_error=errors.append
    )
    with streams:
        streams.trades(SYMBOL, counter)
        if not counter.done.wait(TIMEOUT):
            raise RuntimeError(f"only {counter.count} of {n} trades; errors {errors[:3]}")
        stats = streams.stats().get("recorder", {})
    stats = {**stats, "dropped": streams.stats().get("recorder", {}).get("dropped", 0)}
    if errors:
        raise RuntimeError(f"sixmm reported errors: {errors[:3]}")
    return counter.rates(), counter.ids, stats


def replay(path: str, n: int) -> Tuple[Rates, List[str]]:
    import sixmm

    counter = Ids(n, int(n * WARM))
    with sixmm.StreamManager.replay(path) as streams:
        streams.trades(SYMBOL, counter)
        if not streams.wait(TIMEOUT) or not counter.done.is_set():
            raise RuntimeError(f"replay delivered {counter.count} of {n} trades")
    return counter.rates(), counter.ids


def recorded_trades(path: str) -> int:
    """Trade frames in a recording (each carries one trade)."""
    from sixmm.replay import read_recording

    _h, events, _i = read_recording(path)
    return sum(
        1 for e in events if e.get("ev") == "recv" and '"topic":"market.trade.' in e.get("text", "")
    )


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="trades per run (200000)")
    ap.add_argument("--runs", type=int, default=5, help="rounds (5)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20000 trades, 2 rounds")
    args = ap.parse_args(argv)
    n, runs = (20_000, 2) if args.quick else (args.n, args.runs)
    rows: Dict[str, List[Rates]] = {"live": [], "record": [], "record_gz": [], "replay": []}
    problems: List[str] = []
    with SenderProcess() as sender, tempfile.TemporaryDirectory() as tmp:
        rows["live"].append(live(sender.port, n)[0])
        for r in range(runs):
            for name, suffix in (("record", ".jsonl"), ("record_gz", ".jsonl.gz")):
                path = os.path.join(tmp, f"run{r}{suffix}")
                rates, rec_ids, stats = live(sender.port, n, record=path)
                rows[name].append(rates)
                framed = recorded_trades(path)
                if stats["dropped"] or framed < n:
                    problems.append(
                        f"{name} run {r}: {framed} of {n} trades recorded, "
                        f"{stats['dropped']} dropped"
                    )
                if name == "record":
                    rep, rep_ids = replay(path, n)
                    rows["replay"].append(rep)
                    if rep_ids[:n] != rec_ids[:n]:
                        problems.append(f"replay run {r}: trade ids differ from the live run")
            rows["live"].append(live(sender.port, n)[0])
            # each round is bracketed by a live run on either side: its ratios are taken
            # against their geometric mean, so a drift of the machine's speed cancels out
            for name in ("record", "record_gz", "replay"):
                print(json.dumps(_row(r, name, rows[name][-1], rows["live"][-2:])), flush=True)
    ratios = {
        k: [_ratio(rows[k][r], rows["live"][r : r + 2], "wall") for r in range(runs)]
        for k in ("record", "record_gz", "replay")
    }
    cpu_ratios = {
        k: [_ratio(rows[k][r], rows["live"][r : r + 2], "cpu") for r in range(runs)]
        for k in ("record", "record_gz", "replay")
    }
    med = {k: round(statistics.median(v.wall for v in vs)) for k, vs in rows.items()}
    mratio = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    spread = {k: [round(min(v), 3), round(max(v), 3)] for k, v in ratios.items()}
    mcpu = {k: round(statistics.median(v), 3) for k, v in cpu_ratios.items()}
    cmed = {k: round(statistics.median(v.cpu for v in vs)) for k, vs in rows.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    summary = {
        "n": n,
        "runs": runs,
        "load_avg_1m": load,
        "median_msgs_per_s": med,
        "median_same_run_ratio": mratio,
        "same_run_ratio_min_max": spread,
        "median_cpu_msgs_per_s": cmed,
        "median_same_run_cpu_ratio": mcpu,
        "targets": {"record": ">= 0.90", "replay": ">= 1.0"},
        "met_wall": {"record": mratio["record"] >= 0.90, "replay": mratio["replay"] >= 1.0},
        "met_cpu": {"record": mcpu["record"] >= 0.90, "replay": mcpu["replay"] >= 1.0},
        "verified": not problems,
        "problems": problems,
    }
    print(json.dumps(summary, indent=1))
    return 0 if not problems else 1


def _ratio(rates: Rates, lives: List[Rates], kind: str) -> float:
    """``rates`` against the geometric mean of the live runs around it."""
    base = statistics.geometric_mean(getattr(x, kind) for x in lives)
    return float(getattr(rates, kind) / base)


def _row(r: int, name: str, rates: Rates, lives: List[Rates]) -> Dict[str, Any]:
    return {
        "run": r,
        "figure": name,
        "msgs_per_s": round(rates.wall),
        "cpu_msgs_per_s": round(rates.cpu),
        "live_around": [round(x.wall) for x in lives],
        "ratio_to_live": round(_ratio(rates, lives, "wall"), 3),
        "cpu_ratio_to_live": round(_ratio(rates, lives, "cpu"), 3),
    }


if __name__ == "__main__":
    sys.exit(main())
