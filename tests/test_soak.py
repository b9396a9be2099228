"""Soak runs: a StreamManager under a seeded fault schedule, checked against the sandbox.

The short one (~30 s of faults, denser than the default schedule so that every kind,
issue 11's included, is injected at least once) runs in the default test run; the long one
is marked ``soak`` (``python -m pytest -m soak``; length from ``SIXMM_SOAK_SECONDS``, default
90). The runner is ``bench/soak.py`` (``python bench/soak.py --minutes 10`` for a longer run
by hand).
"""

from __future__ import annotations

import os

import pytest

from bench.soak import FAULT_KINDS, SoakConfig, SoakResult, run_soak


def _check(result: SoakResult) -> None:
    print()
    print(result.table())
    assert result.ok, result.report()
    assert result.losses == 0 and result.duplicates == 0
    assert result.thread_delta <= 0
    assert sum(result.faults.values()) >= 5
    assert result.reconnects >= result.sockets_dropped - result.failed_attempts
    assert result.trades > 0 and result.user_events > 0
    assert result.credential_leaks == 0 and result.texts_scanned > 0
    assert result.stops and result.stop_overruns == 0  # the final stop() at least


@pytest.mark.timeout(150)
def test_short_soak_survives_every_fault_kind() -> None:
    result = run_soak(SoakConfig(seconds=30.0, seed=7, fault_every=(0.4, 1.0)))
    _check(result)
    assert set(result.faults) == set(FAULT_KINDS), result.faults  # every kind at least once


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_long_soak(request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.option.markexpr or ""):
        pytest.skip("long soak: run with -m soak")
    seconds = float(os.environ.get("SIXMM_SOAK_SECONDS", "90"))
    seed = int(os.environ.get("SIXMM_SOAK_SEED", "1"))
    result = run_soak(SoakConfig(seconds=seconds, seed=seed))
    _check(result)
    assert set(result.faults) == set(FAULT_KINDS), result.faults
