"""Request signing for the 6MM REST API (PROTOCOL.md §6.1) as ``requests`` auth hooks.

``HmacAuth`` signs exactly what is sent: it appends ``timestamp`` to the final, already
encoded query string of the prepared request, signs ``query + body`` (the body bytes as they
will go on the wire), then appends ``signature``. ``TokenAuth`` adds a JWT bearer header.
Neither ever shows its secret or token in a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Callable, Optional, Union
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.auth import AuthBase

__all__ = ["HmacAuth", "TokenAuth", "sign", "signing_payload"]


def _redacted_prefix(value: str, keep: int = 4) -> str:
    """At most ``keep`` leading characters followed by an ellipsis."""
    return value[: min(keep, len(value) // 2)] + "…"


def signing_payload(query: str, body: Union[str, bytes, None]) -> bytes:
    """The bytes that get signed: the query string without ``signature`` + the body as sent."""
    if body is None:
        raw_body = b""
    elif isinstance(body, bytes):
        raw_body = body
    else:
        raw_body = body.encode("utf-8")
    return query.encode("utf-8") + raw_body


def sign(secret: str, payload: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


class HmacAuth(AuthBase):
    """API-key signing: ``X-API-KEY`` header, ``timestamp`` and ``signature`` query parameters.

    ``clock_ms`` returns the exchange's current time in milliseconds (local clock plus the
    measured server offset). Timestamps are kept strictly increasing within a one-second window
    so that two identical requests in the same millisecond never share a signature (order paths
    reject a replayed signature); a larger backwards jump (a re-synced offset) is taken as is.
    The request must carry its body as ``str`` or ``bytes`` (never a generator or file).

    Thread-safety: safe to share between threads; the timestamp sequence is guarded by a lock.
    """

    def __init__(self, api_key: str, api_secret: str, clock_ms: Callable[[], int]) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock_ms = clock_ms
        self._last_ts = 0
        self._lock = threading.Lock()

    @property
    def api_key(self) -> str:
        """The API key (public by nature, but kept out of reprs beyond a short prefix)."""
        return self._api_key

    def __repr__(self) -> str:
        return f"HmacAuth(api_key={_redacted_prefix(self._api_key)!r})"

    def next_timestamp(self) -> int:
        """The timestamp for the next request, in exchange milliseconds."""
        now = int(self._clock_ms())
        with self._lock:
            if now <= self._last_ts and self._last_ts - now < 1000:
                now = self._last_ts + 1
            self._last_ts = now
        return now

    def sign_query(self, query: str, body: Union[str, bytes, None]) -> str:
        """Return ``query`` + ``timestamp`` + ``signature`` for ``body`` (pure but the clock)."""
        signed = (
            f"{query}&timestamp={self.next_timestamp()}"
            if query
            else (f"timestamp={self.next_timestamp()}")
        )
        signature = sign(self._api_secret, signing_payload(signed, body))
        return f"{signed}&signature={signature}"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if r.url is None:
            raise ValueError("cannot sign a request without a URL")
        body = r.body
        if body is not None and not isinstance(body, (str, bytes)):
            raise TypeError("HmacAuth can only sign a str or bytes body")
        parts = urlsplit(r.url)
        query = self.sign_query(parts.query, body)
        r.url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        r.headers["X-API-KEY"] = self._api_key
        return r


class TokenAuth(AuthBase):
    """JWT auth: ``Authorization: Bearer <token>`` (token from ``POST /v1/public/user/login``).

    Thread-safety: immutable; share freely.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token

    @property
    def token(self) -> str:
        """The bearer token."""
        return self._token

    def __repr__(self) -> str:
        return "TokenAuth(token=<redacted>)"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r


def auth_repr(auth: Optional[AuthBase]) -> str:
    """A safe one-word description of an auth hook for reprs and logs."""
    if isinstance(auth, HmacAuth):
        return "hmac"
    if isinstance(auth, TokenAuth):
        return "token"
    return "none"
