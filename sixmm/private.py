"""The session of the private user connection: listenKey or token auth, user events.

The URL carries ``?listenKey=`` (created, renewed and replaced by the
:class:`~sixmm.keepalive.ListenKeyKeeper`) or ``?token=`` (a token-only ``RestClient``). The
stream is ready when the server's auth ack says ``success: true``. A refused auth, or a socket
closed before any auth ack, is checked over REST by the keeper (renew, else a new key) before
sixmm concludes that the credentials are bad; only rejected credentials are terminal. A token
stream whose sockets keep closing before the auth ack is retried with backoff (a bare close
proves nothing), and reported to ``on_error`` after 3 such closes in a row, then every 10 more.
Replays after a reconnect are dropped when an event carries an id and an update time.
Every server-provided text (auth refusals, close reasons) is scrubbed of credentials
(:func:`sixmm.protocol.redact.scrub`) before it is logged, raised or reported; the token is
registered with :func:`sixmm.protocol.redact.remember` (the keeper registers each listenKey).

Thread-safety: hooks run on the connection's reader thread; ``add_callbacks`` from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Optional, Tuple
from urllib.parse import urlencode, urlsplit, urlunsplit

from .connection import Connection, Session
from .dispatch import Dispatcher
from .errors import AuthError, ConnectionLost, ProtocolError
from .protocol.events import AuthResult, Event, Malformed, Pong, PrivatePush
from .protocol.frames import RequestIds, decode, encode_ping
from .protocol.models import AccountUpdate, OrderUpdate, UserEvent, user_event
from .protocol.redact import remember, scrub
from .states import GapEvent
from .subscriptions import Callback, Route
from .transport import ConnectionClosed

if TYPE_CHECKING:
    from .keepalive import ListenKeyKeeper
    from .rest.client import RestClient

__all__ = ["UserSession"]

logger = logging.getLogger(__name__)

_UNAUTHED_REPORT_AFTER = 3  # token sockets closed before the auth ack, in a row
_UNAUTHED_REPORT_EVERY = 10

Submit = Callable[[str, str, Any, Any, bool], None]
_DEDUPE_WINDOW = 10_000


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class UserSession(Session):
    """Carries the private user stream over one :class:`Connection`."""

    def __init__(
        self,
        ws_url: str,
        rest: RestClient,
        keeper: Optional[ListenKeyKeeper],
        route: Route,
        *,
        ids: RequestIds,
        dispatcher: Dispatcher,
        report: Callable[[BaseException], None],
        on_gap: Callable[[str, GapEvent], None],
        decode: Callable[[bytes], Event] = decode,
        auth_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ws_url = ws_url
        self._rest = rest
        self._keeper = keeper
        self.route = route
        self._ids = ids
        self._dispatcher = dispatcher
        self._submit: Submit = dispatcher.submit
        self._report = report
        self._on_gap = on_gap
        self._decode = decode
        self._auth_timeout = auth_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._on_order: Tuple[Callback, ...] = ()
        self._on_account: Tuple[Callback, ...] = ()
        self._on_event: Tuple[Callback, ...] = ()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._authed = False
        self._checked_key = False
        self._opened_at: Optional[float] = None
        self._conn: Optional[Connection] = None
        self.user_id: Optional[str] = None
        self.events = 0
        self.duplicates = 0
        self.auth_failures = 0
        self.malformed = 0
        self.closed_before_auth = 0  # in a row; reset by a successful auth

    def bind(self, conn: Connection) -> None:
        self._conn = conn

    def add_callbacks(
        self,
        on_order: Optional[Callback],
        on_account: Optional[Callback],
        on_event: Optional[Callback],
    ) -> None:
        with self._lock:
            if on_order is not None:
                self._on_order += (on_order,)
            if on_account is not None:
                self._on_account += (on_account,)
            if on_event is not None:
                self._on_event += (on_event,)

    def remove_callbacks(self, callbacks: Tuple[Optional[Callback], ...]) -> None:
        with self._lock:
            for cb in callbacks:
                if cb is None:
                    continue
                self._on_order = tuple(c for c in self._on_order if c is not cb)
                self._on_account = tuple(c for c in self._on_account if c is not cb)
                self._on_event = tuple(c for c in self._on_event if c is not cb)

    # -- connection hooks ---------------------------------------------------------------

    def url(self) -> str:
        if self._keeper is not None:
            key = self._keeper.key or self._keeper.start()
            return _with_query(self._ws_url, listenKey=key)
        token = self._rest.token
        if token:
            remember(token)
            return _with_query(self._ws_url, token=token)
        raise AuthError(None, "user() needs a RestClient with api_key/api_secret or a token")

    def on_open(self, conn: Connection) -> None:
        self._submit = self._dispatcher.submit  # the started dispatcher's fast path
        self._authed = False
        self._checked_key = False
        self._opened_at = self._clock()

    def on_closed(self, conn: Connection, reason: str) -> None:
        reason = scrub(reason)
        self._opened_at = None
        if self._authed:
            if self.route.gap_start is None:
                last = self.route.last_ts
                self.route.gap_start = last if last is not None else int(time.time() * 1000)
        else:
            self.closed_before_auth += 1
            self._key_suspect(f"socket closed before auth ({reason})")
            if self._keeper is None:
                self._token_suspect(reason)
        self._authed = False

    def _token_suspect(self, reason: str) -> None:
        n = self.closed_before_auth - _UNAUTHED_REPORT_AFTER
        if n >= 0 and n % _UNAUTHED_REPORT_EVERY == 0:
            n += _UNAUTHED_REPORT_AFTER
            message = (
                f"the private stream closed before its auth ack {n} times in a row ({reason}); "
                "the token may be invalid or expired (still retrying)"
            )
            logger.warning("user stream: %s", message)
            self._report(ConnectionLost(message))

    def on_tick(self, conn: Connection, now: float) -> None:
        opened = self._opened_at
        if opened is not None and not self._authed and now - opened > self._auth_timeout:
            self._opened_at = None
            self._report(ConnectionLost(f"no auth ack within {self._auth_timeout:.0f}s"))
            conn.restart("no auth ack")

    def ping_text(self) -> str:
        return encode_ping(self._ids.next())

    def on_message(self, conn: Connection, payload: bytes) -> None:
        event = self._decode(payload)
        cls = event.__class__
        if cls is PrivatePush:
            self._on_push(conn, event)  # type: ignore[arg-type]
        elif cls is AuthResult:
            self._on_auth(conn, event)  # type: ignore[arg-type]
        elif cls is Pong:
            pass
        elif cls is Malformed:
            self.malformed += 1
            self._report(ProtocolError(f"malformed frame on the user stream ({event.reason})"))  # type: ignore[union-attr]
        else:
            logger.debug("user stream: ignoring %s", cls.__name__)

    # -- internals ----------------------------------------------------------------------

    def _on_auth(self, conn: Connection, result: AuthResult) -> None:
        if result.success:
            self.closed_before_auth = 0  # before _authed: stats() never shows both at once
            self._authed = True
            self.user_id = result.user_id
            if self._keeper is not None:
                self._keeper.key_accepted()
            conn.mark_streaming("authenticated")
            self.route.ready.set()
            if self.route.gap_start is not None:
                start, self.route.gap_start = self.route.gap_start, None
                self.route.gaps += 1
                self._on_gap(conn.name, GapEvent("user", start, int(time.time() * 1000)))
            return
        self.auth_failures += 1
        reason = scrub(result.message or "refused")
        logger.warning("user stream: auth refused (%s)", reason)
        if self._keeper is None:  # a token: nothing to renew, the credentials are bad
            conn.fail(AuthError(None, f"private stream auth refused: {reason}"))
            return
        self._key_suspect(f"auth refused: {reason}")
        raise ConnectionClosed(f"auth refused: {reason}")

    def _key_suspect(self, reason: str) -> None:
        """Let the keeper check the key over REST (once per socket)."""
        if self._keeper is not None and not self._checked_key:
            self._checked_key = True
            self._keeper.key_rejected(reason)

    def _on_push(self, conn: Connection, push: PrivatePush) -> None:
        route = self.route
        route.messages += 1
        self.events += 1
        if push.ts is not None:
            route.last_ts = push.ts
            route.lag_ms = int(time.time() * 1000) - push.ts
        model: Any
        try:
            model = user_event(push)
        except ProtocolError as exc:  # reported, and still delivered: never drop a user event
            route.bad_payloads += 1
            self._report(ProtocolError(f"bad {push.event_type} payload: {exc}"))
            model = UserEvent.from_push(push)
        key = getattr(model, "dedupe_key", None)
        if key is not None:
            seen = self._seen
            if key in seen:
                self.duplicates += 1
                return
            seen[key] = None
            if len(seen) > _DEDUPE_WINDOW:
                seen.popitem(last=False)
        if isinstance(model, OrderUpdate):
            callbacks = self._on_order or self._on_event
        elif isinstance(model, AccountUpdate):
            callbacks = self._on_account or self._on_event
        else:
            callbacks = self._on_event
        if callbacks:
            self._submit(conn.name, "user", callbacks, model, False)
        else:
            logger.debug("user event %s with no callback registered", push.event_type)

    def stats(self) -> Dict[str, Any]:
        return {
            "authenticated": self._authed,
            "events": self.events,
            "duplicates": self.duplicates,
            "auth_failures": self.auth_failures,
            "closed_before_auth": self.closed_before_auth,
            "malformed": self.malformed,
            "listen_key": self._keeper.stats() if self._keeper is not None else None,
        }
