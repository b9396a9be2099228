"""Registers the ``autobahn`` marker (setup.cfg runs pytest with --strict-markers)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "autobahn: the Autobahn|Testsuite client cases (needs wstest on CPython 2.7)"
    )
