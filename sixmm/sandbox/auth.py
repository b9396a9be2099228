"""Credential checks for the sandbox: HMAC signatures, login tokens, listenKeys.

Pure bookkeeping with an injected clock; the server calls it from its event-loop thread.
Signature rule (PROTOCOL.md §6.1): ``payload = raw query string without the signature
parameter + raw body``; ``signature = lowercase hex HMAC-SHA256(secret, payload)``. The
query is taken exactly as received: never decoded, re-encoded or reordered.

Thread-safety: not thread-safe; used only on the sandbox's event-loop thread.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import time
from typing import Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import unquote

__all__ = ["TOLERANCE_MESSAGE", "Auth", "Failure", "sign"]

TOLERANCE_MESSAGE = "Timestamp outside of tolerance window"
REPLAY_MESSAGE = "Signature replay detected"
TOLERANCE_MS = 10_000

# (http status, code, message)
Failure = Tuple[int, int, str]


def sign(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Auth:
    """API key, login and listenKey state of the single sandbox user.

    ``server_ms`` is the (possibly skewed) server clock used for the timestamp tolerance;
    token and listenKey expiry use the real wall clock ``wall_ms``.
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        username: str,
        password: str,
        user_id: str,
        listen_key_ttl: float,
        server_ms: Callable[[], int],
        wall_ms: Optional[Callable[[], int]] = None,
        token_ttl: int = 3600,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.username = username
        self.password = password
        self.user_id = user_id
        self.listen_key_ttl = listen_key_ttl
        self.server_ms = server_ms
        self.wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self.token_ttl = token_ttl
        self.rejecting = False
        #: keys are created but dead at once: auth, renew and close all say "not found"
        self.dead_on_arrival = False
        #: refusals quote the credential they refuse (key, token, api key), as careless
        #: servers do: the client must scrub it from everything it logs, raises or stores
        self.echo_refusals = False
        self.issued: List[str] = []  # every listenKey ever created (for leak checks)
        self.keys: Dict[str, int] = {}  # listenKey -> expiry, wall-clock epoch ms
        self._token_secret = secrets.token_bytes(32)
        self._seen: Set[str] = set()
        self._seen_order: Deque[str] = collections.deque()

    # ----------------------------------------------------------------- tokens
    def login(
        self, username: object, password: object
    ) -> Tuple[Optional[Failure], Dict[str, object]]:
        """Check a username/password; on success return a fresh access token payload."""
        if self.rejecting or username != self.username or password != self.password:
            return (401, 1003, "Invalid username or password"), {}
        token = self.issue_token()
        return None, {
            "accessToken": token,
            "refreshToken": _b64(secrets.token_bytes(24)),
            "tokenType": "Bearer",
            "expiresIn": self.token_ttl,
            "userId": self.user_id,
        }

    def issue_token(self, ttl: Optional[int] = None) -> str:
        """A JWT-shaped token ``header.payload.signature`` (HMAC-SHA256 with a sandbox key)."""
        now = self.wall_ms() // 1000
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": self.user_id,
            "iat": now,
            "exp": now + (self.token_ttl if ttl is None else ttl),
            "jti": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._token_secret, f"{header}.{payload}".encode(), hashlib.sha256)
        return f"{header}.{payload}.{_b64(mac.digest())}"

    def check_token(self, token: str) -> Optional[Failure]:
        """``None`` if ``token`` is a valid, unexpired sandbox token."""
        if self.rejecting:
            return 401, 1003, "Invalid token"
        parts = token.split(".")
        if len(parts) != 3:
            return 401, 1003, "Invalid token"
        mac = hmac.new(self._token_secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
        try:
            ok = hmac.compare_digest(_unb64(parts[2]), mac.digest())
            claims = json.loads(_unb64(parts[1])) if ok else {}
        except (ValueError, TypeError):
            return 401, 1003, "Invalid token"
        if not ok or not isinstance(claims, dict):
            return 401, 1003, "Invalid token"
        if int(claims.get("exp", 0)) * 1000 <= self.wall_ms():
            return 401, 1002, "Token expired"
        return None

    # -------------------------------------------------------------- REST auth
    def check_rest(
        self, headers: Mapping[str, str], raw_query: str, body: str, replay_guard: bool
    ) -> Optional[Failure]:
        """Authenticate one private REST call (Bearer token or API key + HMAC)."""
        authz = headers.get("Authorization", "")
        api_key = headers.get("X-API-KEY")
        if authz.startswith("Bearer "):
            token = authz[len("Bearer ") :].strip()
            failure = self.check_token(token)
            if failure is not None and self.echo_refusals:
                return failure[0], failure[1], f"{failure[2]}: {token}"
            return failure
        if api_key is None:
            return 401, 1001, "Authentication required"
        if self.rejecting or api_key != self.api_key:
            if self.echo_refusals:
                return 401, 1003, f"Invalid API key {api_key} (query {raw_query})"
            return 401, 1003, "Invalid API key"
        kept: List[str] = []
        signature: Optional[str] = None
        timestamp: Optional[str] = None
        for part in raw_query.split("&") if raw_query else []:
            if part.startswith("signature="):
                signature = part[len("signature=") :]
                continue
            kept.append(part)
            if part.startswith("timestamp="):
                timestamp = unquote(part[len("timestamp=") :])
        if signature is None:
            return 401, 1001, "Missing signature"
        if timestamp is None:
            return 400, 2001, "Missing parameter: timestamp"
        try:
            ts = int(timestamp)
        except ValueError:
            return 400, 2002, "Invalid parameter: timestamp"
        if abs(ts - self.server_ms()) > TOLERANCE_MS:
            return 400, 2003, TOLERANCE_MESSAGE
        expected = sign(self.api_secret, "&".join(kept) + body)
        if not hmac.compare_digest(expected, signature):
            return 401, 1003, "Invalid signature"
        if replay_guard:
            if signature in self._seen:
                return 200, 3004, REPLAY_MESSAGE
            self._seen.add(signature)
            self._seen_order.append(signature)
            if len(self._seen_order) > 10_000:
                self._seen.discard(self._seen_order.popleft())
        return None

    # ------------------------------------------------------------- listenKeys
    def create_key(self) -> Tuple[str, int]:
        """A new listenKey and its expiry (epoch ms)."""
        key = secrets.token_hex(32)
        expiry = self.wall_ms() + int(self.listen_key_ttl * 1000)
        self.issued.append(key)
        if not self.dead_on_arrival:
            self.keys[key] = expiry
        return key, expiry

    def key_not_found(self, key: str) -> str:
        """The refusal text for an unknown or expired listenKey (quoting it if echoing)."""
        if self.echo_refusals:
            return f"listenKey {key!r} not found or expired"
        return "listenKey not found or expired"

    def renew_key(self, key: object) -> Optional[int]:
        """Extend a live key by the TTL; ``None`` if it is unknown or expired."""
        if not isinstance(key, str) or key not in self.keys:
            return None
        if self.keys[key] <= self.wall_ms():
            del self.keys[key]
            return None
        expiry = self.wall_ms() + int(self.listen_key_ttl * 1000)
        self.keys[key] = expiry
        return expiry

    def close_key(self, key: object) -> bool:
        """Forget a key; ``False`` if it was not known."""
        return isinstance(key, str) and self.keys.pop(key, None) is not None

    def expire(self, key: Optional[str] = None) -> List[str]:
        """Expire ``key`` (or every key) now; return the keys removed."""
        gone = [key] if key is not None and key in self.keys else []
        if key is None:
            gone = list(self.keys)
        for k in gone:
            del self.keys[k]
        return gone

    def due(self) -> List[str]:
        """Remove and return every key whose expiry has passed."""
        now = self.wall_ms()
        gone = [k for k, exp in self.keys.items() if exp <= now]
        for k in gone:
            del self.keys[k]
        return gone

    def ws_auth(self, listen_key: Optional[str], token: Optional[str]) -> Tuple[bool, str]:
        """Check a private WS connection's credential: ``(ok, user id or reason)``."""
        if self.rejecting:
            if self.echo_refusals:
                return False, f"authentication rejected for {listen_key or token}"
            return False, "authentication rejected"
        if listen_key is not None:
            exp = self.keys.get(listen_key)
            if exp is None or exp <= self.wall_ms():
                return False, self.key_not_found(listen_key)
            return True, self.user_id
        if token is not None:
            failure = self.check_token(token)
            if failure is not None:
                return False, f"{failure[2]} {token}" if self.echo_refusals else failure[2]
            return True, self.user_id
        return False, "missing credential"
