"""The 6MM REST client: one ``requests.Session``, JWT or HMAC auth, server-time offset, retries.

Only what the streams need is wrapped (time, listenKey lifecycle); ``request()`` reaches every
other endpoint. Rules (PROTOCOL.md §6, §8): the envelope's ``code`` is checked first (business
errors come with HTTP 200); HTTP 401 and codes 1001-1004 raise :class:`AuthError`; the
tolerance-window error (known by its message text) re-syncs the clock offset and retries once
with a fresh signature; rate limits (HTTP 429, code 5003) and server errors (5001, 5002,
HTTP 5xx) are retried with backoff for idempotent methods only (never ``POST``).
No exception or log line carries the signature, secret, token or a listenKey.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlencode

import requests
from requests.auth import AuthBase

from sixmm import logscrub
from sixmm.config import DEFAULT_REST_TIMEOUT, DEFAULT_REST_URL, Backoff
from sixmm.errors import ApiError, AuthError, ConnectionLost, parse_retry_after
from sixmm.protocol import redact
from sixmm.protocol.rest import (
    envelope_message,
    is_auth_failure,
    is_tolerance_message,
    is_transient,
)
from sixmm.ratelimit import RATE_LIMIT_STATUSES, host_of, limiter
from sixmm.rest.auth import HmacAuth, TokenAuth

__all__ = ["RestClient", "is_transient"]

logger = logging.getLogger(__name__)

LISTEN_KEY_PATH = "/v1/private/user/listen-key"
TIME_PATH = "/v1/time"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Longest honoured ``Retry-After`` (seconds), whatever the server asks.
MAX_RETRY_AFTER = 10.0

Params = Union[Mapping[str, Any], Sequence[Tuple[str, Any]], None]
Body = Union[Mapping[str, Any], Sequence[Any], str, bytes, None]

_QUERY_IN_TEXT = re.compile(r"\?[^\s'\")]*")


def _redact_key(key: Optional[str]) -> str:
    """A listenKey for humans: at most its first 4 characters."""
    if not key:
        return "<none>"
    return key[: min(4, len(key) // 4)] + "…"


def _encode_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _encode_query(params: Params) -> str:
    """Encode params in the given order (the server does not reorder; we sign what we send)."""
    if not params:
        return ""
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    for name, _ in items:
        if name in ("timestamp", "signature"):
            raise ValueError(f"{name!r} is added by the signer; do not pass it")
    return urlencode([(k, _encode_scalar(v)) for k, v in items], quote_via=quote, safe="")


def _encode_body(body: Body) -> Optional[bytes]:
    """The exact body bytes to send (and sign): compact JSON for data, str/bytes as given."""
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class RestClient:
    """A small client for the 6MM REST API.

    Give ``api_key``/``api_secret`` (HMAC signing) or ``token`` (JWT bearer) for private
    endpoints; public endpoints need neither. With both, HMAC is used for signed calls.
    Every call has a timeout; ``close()`` (or leaving the ``with`` block) interrupts any
    backoff wait and closes the session.

    Thread-safety: safe to share between threads (the keepalive thread and the user's thread);
    counters and the clock offset are guarded by a lock, the session pool is thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        api_secret: Optional[str] = None,
        token: Optional[str] = None,
        base_url: str = DEFAULT_REST_URL,
        timeout: float = DEFAULT_REST_TIMEOUT,
        session: Optional[requests.Session] = None,
        retry_backoff: Backoff = Backoff(initial=0.5, maximum=5.0),  # noqa: B008 (frozen value)
        max_retries: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (api_key is None) != (api_secret is None):
            raise ValueError("api_key and api_secret must be given together")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._retry_backoff = retry_backoff
        self._max_retries = max_retries
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._offset_ms = 0
        self._stats: Dict[str, int] = {
            "calls": 0,
            "http_requests": 0,
            "errors": 0,
            "retries": 0,
            "resyncs": 0,
            "time_syncs": 0,
        }
        self._token = token or None
        self._secrets: List[str] = [s for s in (api_secret, token) if s]
        for secret in (api_key, api_secret, token):
            redact.remember(secret)  # scrubbed from every text in the process from now on
        self._host = host_of(self._base_url)
        logscrub.install()
        self._auth: Optional[AuthBase]
        if api_key is not None and api_secret is not None:
            self._auth = HmacAuth(api_key, api_secret, self._now_ms)
            self._auth_kind: Optional[str] = "hmac"
        elif token:
            self._auth = TokenAuth(token)
            self._auth_kind = "token"
        else:
            self._auth = None
            self._auth_kind = None
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        #: Called after every HTTP attempt with ``{"method","path","http","code","ms"}`` (plus
        #: ``"data"`` for ``/v1/time``); no query, header or body: no credential. A recording
        #: manager sets it (``StreamManager(record=...)``). Must return quickly.
        self.on_call: Optional[Callable[[Dict[str, Any]], None]] = None

    # ----------------------------------------------------------------- properties

    @property
    def base_url(self) -> str:
        """The REST base URL, without a trailing slash."""
        return self._base_url

    @property
    def token(self) -> Optional[str]:
        """The JWT given at construction (for ``?token=`` private streams), or ``None``."""
        return self._token

    @property
    def auth_kind(self) -> Optional[str]:
        """``"hmac"``, ``"token"`` or ``None`` (public endpoints only)."""
        return self._auth_kind

    @property
    def time_offset_ms(self) -> int:
        """The last measured ``server - local`` clock offset in milliseconds."""
        with self._lock:
            return self._offset_ms

    def __repr__(self) -> str:
        key = ""
        if isinstance(self._auth, HmacAuth):
            key = f", api_key={self._auth.api_key[:4]!r}…"
        return f"RestClient(base_url={self._base_url!r}, auth={self._auth_kind!r}{key})"

    def stats(self) -> Dict[str, Any]:
        """Counters: calls, http_requests, errors, retries, resyncs, time_syncs, time_offset_ms."""
        with self._lock:
            out: Dict[str, Any] = dict(self._stats)
            out["time_offset_ms"] = self._offset_ms
        return out

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop any backoff wait and close the session (if this client created it). Idempotent."""
        self._closed.set()
        if self._own_session:
            self._session.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- endpoints

    def server_time(self) -> int:
        """The exchange's time in milliseconds (``GET /v1/time`` → ``timestampMs``)."""
        data = self.request("GET", TIME_PATH, signed=False)
        if isinstance(data, Mapping):
            for name, scale in (("timestampMs", 1), ("timestamp", 1000)):
                value = data.get(name)
                if value is not None and not isinstance(value, bool):
                    try:
                        return int(value) * scale
                    except (TypeError, ValueError):
                        pass
        raise ApiError(None, "GET /v1/time returned no usable timestampMs")

    def sync_time(self) -> int:
        """Measure and store ``offset = server ms - local ms`` (midpoint of the request)."""
        start = self._clock()
        server_ms = self.server_time()
        end = self._clock()
        offset = server_ms - round((start + end) / 2 * 1000)
        with self._lock:
            self._offset_ms = offset
            self._stats["time_syncs"] += 1
        logger.debug("REST clock offset %+d ms (round trip %.1f ms)", offset, (end - start) * 1e3)
        return offset

    def create_listen_key(
        self, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> str:
        """Create a listenKey for the private stream (``POST``; never retried here). The key
        is registered with :func:`sixmm.protocol.redact.remember` before it is returned."""
        data = self.request("POST", LISTEN_KEY_PATH, max_retries=max_retries, timeout=timeout)
        key = data.get("listenKey") if isinstance(data, Mapping) else None
        if not isinstance(key, str) or not key:
            raise ApiError(None, "listen-key response carried no listenKey")
        redact.remember(key)
        return key

    def renew_listen_key(
        self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        """Extend ``key``'s validity (``PUT``). A non-zero code usually means the key is gone."""
        self.request(
            "PUT",
            LISTEN_KEY_PATH,
            body={"listenKey": key},
            max_retries=max_retries,
            timeout=timeout,
        )

    def close_listen_key(
        self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        """Invalidate ``key`` (``DELETE``); ``timeout`` bounds it (default: the client's)."""
        self.request(
            "DELETE",
            LISTEN_KEY_PATH,
            body={"listenKey": key},
            max_retries=max_retries,
            timeout=timeout,
        )

    # ----------------------------------------------------------------- core

    def request(
        self,
        method: str,
        path: str,
        params: Params = None,
        body: Body = None,
        signed: bool = True,
        *,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Call ``method path`` and return the envelope's ``data``.

        ``params`` go into the query in the given order; ``body`` (a dict/list) is sent as
        compact JSON, a ``str``/``bytes`` body as is. ``signed=True`` needs credentials
        (``AuthError`` otherwise, before any network call). Raises ``ApiError``/``AuthError``
        for error envelopes, ``ConnectionLost`` for network failures and timeouts.
        ``timeout`` bounds this call (each attempt's connect and read) instead of the
        client's. While the host holds us off (a ``Retry-After`` seen by any client in the
        process, :mod:`sixmm.ratelimit`), the call waits if the hold ends within the timeout,
        else it fails at once (code 5003, ``retry_after`` set) without sending anything.
        """
        method = method.upper()
        if not path.startswith("/"):
            path = "/" + path
        retries = self._max_retries if max_retries is None else max_retries
        with self._lock:
            self._stats["calls"] += 1
        try:
            if signed and self._auth is None:
                raise AuthError(None, f"{method} {path} needs credentials (api key or token)")
            if self._closed.is_set():
                raise ConnectionLost(f"{method} {path}: RestClient is closed")
            path, _, inline_query = path.partition("?")
            query = "&".join(q for q in (inline_query, _encode_query(params)) if q)
            raw_body = _encode_body(body)
            budget = self._timeout if timeout is None else max(0.001, timeout)
            return self._call(method, path, query, raw_body, signed, retries, body, budget)
        except Exception:
            with self._lock:
                self._stats["errors"] += 1
            raise

    def _call(
        self,
        method: str,
        path: str,
        query: str,
        raw_body: Optional[bytes],
        signed: bool,
        retries: int,
        body: Body,
        timeout: float,
    ) -> Any:
        secrets = list(self._secrets)
        if isinstance(body, Mapping):
            key = body.get("listenKey")
            if isinstance(key, str) and key:
                secrets.append(key)
        resynced = False
        attempt = 0
        while True:
            try:
                return self._attempt(method, path, query, raw_body, signed, secrets, timeout)
            except ApiError as exc:
                if self._is_tolerance_error(exc):
                    if resynced or not signed or self._auth_kind != "hmac":
                        raise
                    resynced = True
                    logger.warning(
                        "REST %s %s: timestamp outside tolerance; re-syncing clock", method, path
                    )
                    with self._lock:
                        self._stats["resyncs"] += 1
                    self.sync_time()
                    continue
                if not self._retryable(method, exc) or attempt >= retries:
                    raise
                delay = self._retry_delay(attempt, exc)
                attempt += 1
                with self._lock:
                    self._stats["retries"] += 1
                logger.warning(
                    "REST %s %s failed (%s); retry %d/%d in %.2fs",
                    method,
                    path,
                    exc,
                    attempt,
                    retries,
                    delay,
                )
                if self._closed.wait(delay):
                    raise ConnectionLost(
                        f"{method} {path}: RestClient closed during retry"
                    ) from exc

    def _attempt(
        self,
        method: str,
        path: str,
        query: str,
        raw_body: Optional[bytes],
        signed: bool,
        secrets: List[str],
        timeout: float,
    ) -> Any:
        held = limiter().held_for(self._host)
        if held > 0 and (held > timeout or self._closed.wait(held)):
            error = ApiError(
                5003,
                f"{method} {path}: not sent, {self._host} asked us to wait {held:.1f}s more"
                " (Retry-After)",
                None,
                429,
            )
            error.retry_after = held
            raise error
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id, "Accept": "application/json"}
        if raw_body is not None:
            headers["Content-Type"] = "application/json"
        url = self._base_url + path + ("?" + query if query else "")
        with self._lock:
            self._stats["http_requests"] += 1
        started = time.monotonic()
        failure = ""
        try:
            response = self._session.request(
                method,
                url,
                data=raw_body,
                headers=headers,
                auth=self._auth if signed else None,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            failure = f"timed out after {timeout:g}s"
        except requests.RequestException as exc:
            reason = _QUERY_IN_TEXT.sub("?…", _scrub(str(exc), secrets))
            failure = f"{type(exc).__name__}: {reason}"
        if failure:
            # raised outside the except block: the original exception (its text carries the
            # signed URL) is not kept as __context__ either
            self._log(method, path, None, None, started, request_id)
            raise ConnectionLost(f"{method} {path}: {failure} (requestId={request_id})")
        try:
            return self._parse(method, path, response, request_id, secrets, started)
        finally:
            response.close()

    def _parse(
        self,
        method: str,
        path: str,
        response: requests.Response,
        request_id: str,
        secrets: List[str],
        started: float,
    ) -> Any:
        status = response.status_code
        try:
            payload = json.loads(response.content) if response.content else None
        except ValueError:
            payload = None
            parsed = False
        else:
            parsed = isinstance(payload, dict)
        if not parsed:
            self._log(method, path, status, None, started, request_id)
            if 200 <= status < 300 and response.content and payload is not None:
                return payload  # valid JSON without an envelope: hand it back as is
            text = f"{method} {path}: non-JSON response (HTTP {status})"
            plain: ApiError
            if status == 401:
                plain = AuthError(None, text, request_id, status)
            else:
                plain = ApiError(None, text, request_id, status)
            raise self._rate_limited(plain, response, method, path)
        assert isinstance(payload, dict)
        echoed = payload.get("requestId")
        rid = str(echoed) if echoed is not None else request_id
        code = _as_int(payload.get("code"))
        self._log(method, path, status, code, started, rid, payload.get("data"))
        if code == 0 and 200 <= status < 300:
            return payload.get("data")
        if code is None and 200 <= status < 300 and "code" not in payload:
            return payload  # no envelope at all: hand it back as is
        raw_message = envelope_message(payload)
        message = _scrub(str(raw_message) if raw_message is not None else "", secrets)
        if not message:
            message = f"{method} {path} failed"
        error: ApiError
        if is_tolerance_message(message):
            error = ApiError(code, message, rid, status)  # a clock problem, never terminal
        elif is_auth_failure(code, status):
            error = AuthError(code, message, rid, status)
        else:
            error = ApiError(code, message, rid, status)
        raise self._rate_limited(error, response, method, path)

    # ----------------------------------------------------------------- helpers

    def _rate_limited(
        self, error: ApiError, response: requests.Response, method: str, path: str
    ) -> ApiError:
        """Note ``Retry-After`` on ``error``; a 429/418/503 with it holds the host for every
        client and connection in the process."""
        retry_after = _retry_after(response.headers.get("Retry-After"))
        error.retry_after = retry_after
        if retry_after is not None and response.status_code in RATE_LIMIT_STATUSES:
            limiter().hold(
                self._host, retry_after, f"REST {method} {path} HTTP {response.status_code}"
            )
        return error

    def _now_ms(self) -> int:
        with self._lock:
            offset = self._offset_ms
        return int(self._clock() * 1000) + offset

    @staticmethod
    def _is_tolerance_error(exc: ApiError) -> bool:
        return is_tolerance_message(exc.message)

    @staticmethod
    def _retryable(method: str, exc: ApiError) -> bool:
        return method in IDEMPOTENT_METHODS and is_transient(exc)

    def _retry_delay(self, attempt: int, exc: ApiError) -> float:
        retry_after = exc.retry_after
        if retry_after is not None:
            # at least the hold (the next attempt waits for it anyway), at most our budget
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER, self._retry_backoff.maximum)
        return self._retry_backoff.delay(attempt)

    def _log(
        self,
        method: str,
        path: str,
        status: Optional[int],
        code: Optional[int],
        started: float,
        request_id: str,
        data: Any = None,
    ) -> None:
        hook = self.on_call
        if hook is not None:
            call: Dict[str, Any] = {
                "method": method,
                "path": path,
                "http": status,
                "code": code,
                "ms": round((time.monotonic() - started) * 1e3, 3),
            }
            if path == "/v1/time" and isinstance(data, dict):
                call["data"] = data
            try:
                hook(call)
            except Exception:  # a recorder must never break a REST call
                logger.exception("REST on_call hook failed")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "REST %s %s -> http=%s code=%s %.1fms requestId=%s",
                method,
                path,
                status,
                code,
                (time.monotonic() - started) * 1e3,
                request_id,
            )


def _as_int(value: Any) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_retry_after = parse_retry_after


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """Remove any known secret (api secret, token, listenKey) and anything that looks like a
    credential (:func:`sixmm.protocol.redact.scrub`) from server-provided text."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, _redact_key(secret))
    return redact.scrub(text)
