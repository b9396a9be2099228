"""Smoke test of the benchmark scripts: tiny streams through each path, figures come out.

No timing assertions: the figures only have to exist and be positive.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import bench_latency, bench_stream
from bench.sender import SenderProcess


@pytest.fixture(scope="module")
def sender() -> Iterator[SenderProcess]:
    with SenderProcess() as s:
        yield s


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


@pytest.mark.timeout(30)
def test_throughput_paths_produce_figures(sender: SenderProcess) -> None:
    assert _positive(bench_stream.raw_reader(sender.port, "trade", 2_000))
    assert all(map(_positive, bench_stream.bare_loop(sender.port, "trade", 2_000)))
    for dispatcher in ("inline", "worker", "queue"):
        rates = bench_stream.sixmm_stream(sender.port, "trade", 2_000, dispatcher)
        assert all(map(_positive, rates))
    # depth: a 5,000-level snapshot, then versioned updates that keep the live book synced
    # (sixmm_stream raises if the book is not synced at the end)
    assert all(map(_positive, bench_stream.sixmm_stream(sender.port, "depth", 300, "inline")))


@pytest.mark.timeout(30)
def test_latency_paths_produce_figures(sender: SenderProcess) -> None:
    p50, p99 = bench_latency.bare_latency(sender.port, 2_000, 200)
    assert _positive(p50) and p99 >= p50
    s50, s99 = bench_latency.sixmm_latency(sender.port, 2_000, 200, "inline")
    assert _positive(s50) and s99 >= s50


def test_bench_instructions_reads_the_reader_threads_count(tmp_path: Path) -> None:
    from bench import bench_instructions

    (tmp_path / "x.out-01").write_text("fn=main\ntotals: 900\n")
    (tmp_path / "x.out-02").write_text("fn=sock_recv_into\ntotals: 120\n")
    (tmp_path / "x.out-03").write_text("fn=heartbeat\ntotals: 5\n")
    assert bench_instructions._reader_instructions(str(tmp_path), "x.out") == 120
    with pytest.raises(RuntimeError, match="no reader thread"):
        bench_instructions._reader_instructions(str(tmp_path), "y.out")


def test_bench_stream_refuses_a_sixmm_from_another_tree(tmp_path: Path) -> None:
    import subprocess

    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "bench_stream.py")
    env = {**os.environ, "SIXMM_BENCH_TREE": str(tmp_path)}  # holds no sixmm: ours is found
    proc = subprocess.run(
        [sys.executable, script, "--quick"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "but sixmm came from" in proc.stderr


def test_compare_summary_pairs_quotients_and_leaves_invalid_pairs_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import compare

    fig = compare._summary([1.2, None, 0.9, 1.0], [1.0, 0.8, 1.0, 0.5])
    assert fig["pairs"] == 3 and fig["invalid_pairs"] == 1
    assert fig["median"] == 1.2 and fig["min"] == 0.9 and fig["max"] == 2.0
    assert fig["won"] == 2
    with pytest.raises(SystemExit, match="every pair was invalid"):
        compare._summary([None], [1.0])
    with pytest.raises(SystemExit):
        compare.main(["--against", compare.ROOT])
    assert "--against names this tree" in capsys.readouterr().err
