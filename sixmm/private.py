"""The shell of the private user connection: listenKey or token auth, user events.

What the stream decides (the auth ack, refusals, de-duplication, routing of user events) is
:class:`sixmm.protocol.user_engine.UserEngine`; this adapter builds the URL, hands key
suspicions and acceptances to the keeper, and carries out the engine's actions.

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

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlencode, urlsplit, urlunsplit

from .config import DEFAULT_ACK_TIMEOUT
from .connection import Connection, Session
from .dispatch import Dispatcher
from .errors import AuthError
from .protocol.engine import KeyAccepted, KeyRejected
from .protocol.events import Event
from .protocol.frames import RequestIds, decode
from .protocol.redact import remember
from .protocol.user_engine import UserEngine
from .states import GapEvent
from .subscriptions import Callback, Route

if TYPE_CHECKING:
    from .keepalive import ListenKeyKeeper
    from .rest.client import RestClient

__all__ = ["UserSession"]


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class UserSession(Session):
    """Carries the private user stream over one :class:`Connection`."""

    engine: UserEngine

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
        auth_timeout: float = DEFAULT_ACK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(report, on_gap, clock, dispatcher)
        self._ws_url = ws_url
        self._rest = rest
        self._keeper = keeper
        self.route = route
        self.engine = UserEngine(
            route,
            ids=ids,
            deliver=dispatcher.submit,
            listen_key=keeper is not None,
            decode=decode,
            auth_timeout=auth_timeout,
            wall_offset=time.time() - clock(),
        )

    @property
    def user_id(self) -> Optional[str]:
        return self.engine.user_id

    def add_callbacks(
        self,
        on_order: Optional[Callback],
        on_account: Optional[Callback],
        on_event: Optional[Callback],
    ) -> None:
        self.submit(lambda: self.engine.add_callbacks(on_order, on_account, on_event))

    def remove_callbacks(self, callbacks: Tuple[Optional[Callback], ...]) -> None:
        self.submit(lambda: self.engine.remove_callbacks(callbacks))

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

    def on_action(self, conn: Connection, action: Any) -> None:
        cls = action.__class__
        if cls is KeyRejected:
            if self._keeper is not None:
                self._keeper.key_rejected(action.reason)
        elif cls is KeyAccepted:
            if self._keeper is not None:
                self._keeper.key_accepted()
        else:
            super().on_action(conn, action)

    def stats(self) -> Dict[str, Any]:
        return {
            **self.engine.stats(),
            "listen_key": self._keeper.stats() if self._keeper is not None else None,
        }
