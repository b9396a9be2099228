"""How REST answers are read (PROTOCOL.md §6 and §8): pure rules, no I/O.

The REST client and the listenKey keeper ask these functions; no other module decides what a
code or a message means.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sixmm.errors import ApiError, AuthError, ConnectionLost

__all__ = [
    "AUTH_CODES",
    "RATE_LIMIT_CODE",
    "SERVER_ERROR_CODES",
    "envelope_message",
    "is_auth_failure",
    "is_tolerance_message",
    "is_transient",
]

#: [doc] 1001 no auth, 1002 token expired, 1003 invalid token/key/signature, 1004 revoked.
AUTH_CODES = frozenset({1001, 1002, 1003, 1004})
#: [doc] 5003 rate limited; 5001 internal, 5002 unavailable.
RATE_LIMIT_CODE = 5003
SERVER_ERROR_CODES = frozenset({5001, 5002})
_TOLERANCE_TEXT = "timestamp outside of tolerance window"


def envelope_message(payload: Mapping[str, Any]) -> Optional[Any]:
    """The error text of an envelope: ``message`` [doc], or ``msg`` [assumed variant]."""
    return payload.get("message", payload.get("msg"))


def is_tolerance_message(message: Optional[str]) -> bool:
    """[assumed] §8: the clock-skew error is known by its text, whatever code or status."""
    return _TOLERANCE_TEXT in (message or "").lower()


def is_auth_failure(code: Optional[int], http_status: Optional[int]) -> bool:
    """Rejected credentials: HTTP 401 or codes 1001-1004 (terminal: never retried)."""
    return http_status == 401 or code in AUTH_CODES


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying later: rate limits, server errors, lost connections.

    [assumed] §8: any other non-zero code (not 5001/5002/5003, not HTTP 429/5xx) is final -- for
    a listenKey renewal it means the key is gone. ``AuthError`` is never transient.
    """
    if isinstance(error, AuthError):
        return False
    if isinstance(error, ConnectionLost):
        return True
    if isinstance(error, ApiError):
        if error.code == RATE_LIMIT_CODE or error.code in SERVER_ERROR_CODES:
            return True
        status = error.http_status
        return status is not None and (status == 429 or status >= 500)
    return False
