"""Scalar field converters shared by :mod:`sixmm.protocol.models` (private).

Each takes the wire value plus the model and field names, and returns the normalised value
or raises :class:`~sixmm.errors.ProtocolError` naming ``Model.field``.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, List, Optional, Tuple

from sixmm.errors import ProtocolError

__all__ = [
    "dec",
    "get",
    "items",
    "merged",
    "obj",
    "opt_bool",
    "opt_dec",
    "opt_int",
    "opt_str",
    "opt_upper",
    "req",
    "req_int",
    "req_str",
]

_MAX_EXPONENT = 100  # |adjusted exponent| above this is not a price or a size


def get(data: Dict[str, Any], keys: Tuple[str, ...]) -> Any:
    """The first non-None value among ``keys`` (None when none is present)."""
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


def dec(value: Any, model: str, field: str, non_negative: bool = False) -> Decimal:
    t = type(value)
    try:
        if t is str:
            number = Decimal(value) if len(value) <= 100 else Decimal("NaN")
        elif t is int:
            number = Decimal(value)
        elif t is float:
            number = Decimal(repr(value))
        elif t is Decimal:
            number = value
        else:
            raise ProtocolError(
                f"{model}.{field} must be a decimal string, got {type(value).__name__}"
            )
    except InvalidOperation:
        raise ProtocolError(f"{model}.{field} is not a number: {value!r:.40}") from None
    if not number.is_finite() or abs(number.adjusted()) > _MAX_EXPONENT:
        raise ProtocolError(f"{model}.{field} must be a finite number, got {value!r:.40}")
    if non_negative and number < 0:
        raise ProtocolError(f"{model}.{field} must be >= 0, got {value!r:.40}")
    return number


def opt_dec(value: Any, model: str, field: str, non_negative: bool = False) -> Optional[Decimal]:
    if value is None or value == "":
        return None
    return dec(value, model, field, non_negative)


def req(value: Any, model: str, field: str) -> Any:
    if value is None:
        raise ProtocolError(f"{model}.{field} is missing")
    return value


def opt_int(value: Any, model: str, field: str) -> Optional[int]:
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if t is str and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return int(value)
    if t is float and math.isfinite(value) and value.is_integer():
        return int(value)
    raise ProtocolError(f"{model}.{field} must be an integer (ms), got {value!r:.40}")


def req_int(value: Any, model: str, field: str) -> int:
    result = opt_int(value, model, field)
    if result is None:
        raise ProtocolError(f"{model}.{field} is missing")
    return result


def opt_str(value: Any, model: str, field: str) -> Optional[str]:
    t = type(value)
    if t is str or value is None:
        return value  # type: ignore[no-any-return]
    if t is int:  # large ids may come as numbers
        return str(value)
    raise ProtocolError(f"{model}.{field} must be a string, got {type(value).__name__}")


def req_str(value: Any, model: str, field: str) -> str:
    result = opt_str(value, model, field)
    if not result:
        raise ProtocolError(f"{model}.{field} is missing")
    return result


def opt_upper(value: Any, model: str, field: str) -> Optional[str]:
    if type(value) is str:
        return value.upper()
    if value is None:
        return None
    raise ProtocolError(f"{model}.{field} must be a string, got {type(value).__name__}")


def opt_bool(value: Any, model: str, field: str) -> Optional[bool]:
    if value is None or value is True or value is False:
        return value
    if value == "true" or value == "false":
        return bool(value == "true")
    raise ProtocolError(f"{model}.{field} must be a boolean, got {value!r:.40}")


def obj(data: Any, model: str) -> Dict[str, Any]:
    if type(data) is not dict:
        raise ProtocolError(f"{model} payload must be an object, got {type(data).__name__}")
    return data


def merged(data: Dict[str, Any], nested: Tuple[str, ...]) -> Dict[str, Any]:
    """[assumed] Fields may sit in a nested object (``{"order": {...}}``): merge it in."""
    for key in nested:
        inner = data.get(key)
        if type(inner) is dict:
            return {**data, **inner}
    return data


def items(value: Any, model: str, field: str) -> List[Any]:
    if value is None:
        return []
    if type(value) is list:
        return value
    raise ProtocolError(f"{model}.{field} must be a list, got {type(value).__name__}")
