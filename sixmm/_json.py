"""JSON in one place: orjson when it is importable (the ``fast`` extra), else the stdlib.

Both backends behave the same where it matters to sixmm:

- :func:`loads` takes ``str`` or ``bytes`` (bytes must be UTF-8) and raises ``ValueError``
  on anything that is not strict JSON. ``NaN``/``Infinity`` tokens and numbers that overflow
  to infinity (``1e400``) are rejected: prices and sizes must be finite. A UTF-8 BOM is
  rejected.
- :func:`dumps` returns a compact ``str`` (``{"a":1}``, no spaces), keys in insertion order,
  non-ASCII characters written as themselves (not ``\\u`` escapes).

Known differences: integers wider than 64 bits come back as ``float`` from orjson (exact
``int`` from the stdlib) -- 6MM sends large ids as strings, so this does not arise; a lone
surrogate escape (``"\\ud800"``) is rejected by orjson and accepted by the stdlib. Non-finite
floats given to :func:`dumps` raise ``ValueError`` with the stdlib and become ``null`` with
orjson: never send them.
"""

from __future__ import annotations

import json as _stdlib_json
import math
from typing import Any, Callable, Union

__all__ = ["BACKEND", "dumps", "loads"]

BACKEND: str
"""``"orjson"`` or ``"json"``: which parser :func:`loads` uses."""

loads: Callable[[Union[str, bytes]], Any]
dumps: Callable[[Any], str]


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-finite number {token} is not allowed")


def _finite_float(token: str) -> float:
    value = float(token)
    if math.isinf(value):
        raise ValueError(f"number {token[:40]} overflows to infinity")
    return value


_DECODER = _stdlib_json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = _stdlib_json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]  # what decode() -> raw_decode() calls


def _stdlib_loads(s: Union[str, bytes]) -> Any:
    """Parse strict JSON text (``str``, or UTF-8 ``bytes``) with the stdlib."""
    if not isinstance(s, str):
        s = bytes(s).decode("utf-8")  # strict: invalid UTF-8 raises UnicodeDecodeError
    if s.startswith("\ufeff"):
        raise ValueError("UTF-8 byte order mark (BOM) is not supported")
    if s[-1:] == "}" and s[:1] == "{":
        # An object with no surrounding whitespace (every frame of the exchange): the
        # scanner directly, as decode() would call it, without its two whitespace regex
        # matches and two Python calls (~0.7 us per frame). Anything else -- an error
        # included -- goes through decode() for its exact result or exception.
        try:
            obj, end = _SCAN(s, 0)
        except StopIteration:
            return _DECODER.decode(s)
        if end == len(s):
            return obj
    return _DECODER.decode(s)


def _stdlib_dumps(obj: Any) -> str:
    """Serialise ``obj`` as compact JSON text with the stdlib."""
    return _ENCODER.encode(obj)


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised when the ``fast`` extra is absent
    BACKEND = "json"
    loads = _stdlib_loads
    dumps = _stdlib_dumps
else:
    BACKEND = "orjson"
    # orjson.loads already takes str/bytes, rejects NaN/Infinity/overflow and BOMs, and
    # raises orjson.JSONDecodeError (a ValueError). Bound directly: no wrapper call per frame.
    loads = _orjson.loads
    _orjson_dumps = _orjson.dumps

    def _orjson_dumps_str(obj: Any) -> str:
        """Serialise ``obj`` as compact JSON text with orjson (which returns bytes)."""
        return _orjson_dumps(obj).decode("utf-8")

    dumps = _orjson_dumps_str
