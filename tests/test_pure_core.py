"""The pure core stays pure: no module in ``sixmm/protocol`` imports I/O or thread machinery,
and ``sixmm.protocol`` (engines included) imports without websocket-client or requests."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import sixmm.protocol

BANNED = {
    "socket", "ssl", "select", "selectors", "threading", "queue",
    "websocket", "requests", "urllib3", "aiohttp",
}  # fmt: skip
PROTOCOL = pathlib.Path(sixmm.protocol.__file__).parent


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_protocol_module_imports_io_or_threads() -> None:
    modules = sorted(PROTOCOL.glob("*.py"))
    assert len(modules) >= 15  # the walk really looked at the package
    bad = {p.name: sorted(_imports(p) & BANNED) for p in modules if _imports(p) & BANNED}
    assert not bad, bad


def test_the_check_sees_a_banned_import(tmp_path: pathlib.Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("import threading\nfrom socket import socket\n")
    assert _imports(planted) & BANNED == {"threading", "socket"}


def test_engines_import_without_websocket_client_or_requests() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"websocket", "requests", "urllib3", "aiohttp"}:
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import sixmm.protocol.public_engine, sixmm.protocol.user_engine
        import sixmm.protocol.reconnect, sixmm.protocol.framing, sixmm.protocol.handshake
        import sixmm.protocol.listenkey
        import sixmm.protocol.liveness, sixmm.protocol.book, sixmm.protocol.depth
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in {"websocket", "requests", "urllib3", "aiohttp"})
        print("loaded:", loaded)
        try:
            import requests
        except ImportError as exc:
            print("blocker works:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "loaded: []" in out
    assert "blocker works: blocked requests" in out
