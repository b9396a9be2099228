"""Smoke test of bench/bench_record.py: it runs and verifies its own result (no timing asserted)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import bench_record


@pytest.mark.timeout(120)
def test_bench_record_verifies_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_record.main(["--n", "3000", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert '"verified": true' in out and '"replay"' in out
