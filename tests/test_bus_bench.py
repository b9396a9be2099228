"""Smoke test of bench/bench_bus.py: tiny streams through the bus paths, figures come out."""

from __future__ import annotations

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import bench_bus
from bench.sender import SenderProcess
from tests.redisserver import redis_server_fixture  # noqa: F401


@pytest.mark.timeout(120)
def test_bus_bench_paths_produce_figures(redis_server) -> None:
    with SenderProcess() as sender:
        for kind, n in (("trade", 2_000), ("depth", 200)):
            rates, extra = bench_bus.bus_stream(sender.port, redis_server.url, kind, n)
            assert math.isfinite(rates.wall) and rates.wall > 0
            assert extra["dropped"] == 0
            assert bench_bus.bus_stream_process(sender.port, redis_server.url, kind, n).wall > 0
        p50, p99, _lag = bench_bus.bus_latency(sender.port, redis_server.url, 1000, 300)
        assert 0 < p50 <= p99
