"""Loading the optional C extensions of the wire layer (``_bookside``, ``_depthfast``).

Each is optional: not built (no C compiler at install time) or switched off with the
environment variable ``SIXMM_NO_EXTENSIONS=1`` (read at import), the pure-Python code runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

__all__ = ["load"]


def load(name: str) -> Optional[ModuleType]:
    """The extension ``sixmm.protocol.<name>``, or None if it is not built or switched off."""
    if os.environ.get("SIXMM_NO_EXTENSIONS") == "1":
        return None
    try:
        return importlib.import_module(f"sixmm.protocol.{name}")
    except ImportError:
        return None
