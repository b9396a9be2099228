"""The private user stream as a state machine: the auth ack, user events, de-duplication.

The socket is accepted when the server's auth ack says ``success: true``. A refused auth, or a
socket closed before any auth ack, asks the shell to check the listenKey over REST
(:class:`~sixmm.protocol.engine.KeyRejected`, once per socket) before anyone concludes that the
credentials are bad; a refused *token* (no listenKey to renew) is terminal
(:class:`~sixmm.protocol.engine.Fail`). A token stream whose sockets keep closing before the
auth ack is reported after :data:`UNAUTHED_REPORT_AFTER` closes in a row, then every
:data:`UNAUTHED_REPORT_EVERY` more (a bare close proves nothing, so it is retried). No auth ack
within ``auth_timeout`` restarts the socket. Replays after a reconnect are dropped when an
event carries an id and an update time (the last :data:`DEDUPE_WINDOW` are remembered).

States (``state``), one table: ``CLOSED -> OPEN`` (awaiting auth) ``-> STREAMING`` (authed)
``-> CLOSED``. Pure: no threads, sockets or clocks (see :mod:`sixmm.protocol.engine`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

from sixmm.config import DEFAULT_ACK_TIMEOUT
from sixmm.errors import AuthError, ConnectionLost, ProtocolError
from sixmm.protocol.engine import (
    Close,
    Deliver,
    EngineBase,
    Fail,
    Gap,
    KeyAccepted,
    KeyRejected,
    Ready,
    Report,
    Restart,
    SocketState,
)
from sixmm.protocol.events import AuthResult, Event, Malformed, Pong, PrivatePush
from sixmm.protocol.frames import RequestIds, decode, encode_ping
from sixmm.protocol.models import AccountUpdate, OrderUpdate, UserEvent, user_event
from sixmm.protocol.redact import scrub

__all__ = ["DEDUPE_WINDOW", "UNAUTHED_REPORT_AFTER", "UNAUTHED_REPORT_EVERY", "UserEngine"]

logger = logging.getLogger(__name__)

UNAUTHED_REPORT_AFTER = 3  # token sockets closed before the auth ack, in a row
UNAUTHED_REPORT_EVERY = 10
DEDUPE_WINDOW = 10_000

Callback = Callable[[Any], Any]


class UserEngine(EngineBase):
    """The user stream over one socket at a time; ``route`` is its registry record and
    ``listen_key`` says whether a renewable listenKey (True) or a bare token (False) is used."""

    def __init__(
        self,
        route: Any,
        *,
        ids: RequestIds,
        deliver: Deliver,
        listen_key: bool,
        lane: str = "user",
        decode: Callable[[bytes], Event] = decode,
        auth_timeout: float = DEFAULT_ACK_TIMEOUT,
        wall_offset: float = 0.0,
    ) -> None:
        super().__init__(deliver, lane, wall_offset)
        self.route = route
        self._ids = ids
        self._listen_key = listen_key
        self._decode = decode
        self._auth_timeout = auth_timeout
        self.on_order: Tuple[Callback, ...] = ()
        self.on_account: Tuple[Callback, ...] = ()
        self.on_event: Tuple[Callback, ...] = ()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._checked_key = False
        self._opened_at: Optional[float] = None
        self.user_id: Optional[str] = None
        self.events = 0
        self.duplicates = 0
        self.auth_failures = 0
        self.malformed = 0
        self.closed_before_auth = 0  # in a row; reset by a successful auth

    @property
    def authed(self) -> bool:
        return self.state is SocketState.STREAMING

    def ping_text(self) -> str:
        return encode_ping(self._ids.next())

    # -- callbacks ----------------------------------------------------------------------

    def add_callbacks(
        self,
        on_order: Optional[Callback],
        on_account: Optional[Callback],
        on_event: Optional[Callback],
    ) -> None:
        if on_order is not None:
            self.on_order += (on_order,)
        if on_account is not None:
            self.on_account += (on_account,)
        if on_event is not None:
            self.on_event += (on_event,)

    def remove_callbacks(self, callbacks: Tuple[Optional[Callback], ...]) -> None:
        for cb in callbacks:
            if cb is None:
                continue
            self.on_order = tuple(c for c in self.on_order if c is not cb)
            self.on_account = tuple(c for c in self.on_account if c is not cb)
            self.on_event = tuple(c for c in self.on_event if c is not cb)

    # -- the socket's side --------------------------------------------------------------

    def opened(self, now: float) -> None:
        """A socket opened: wait for the auth ack (until ``now + auth_timeout``)."""
        self._move(SocketState.OPEN)
        self._checked_key = False
        self._opened_at = now

    def closed(self, reason: str, now: float) -> None:
        """The socket is gone: an authed one opens an outage window; one closed before its
        auth ack is a suspect key (or token)."""
        reason = scrub(reason)
        was = self.state
        self._move(SocketState.CLOSED)
        self._opened_at = None
        if was is SocketState.STREAMING:
            if self.route.gap_start is None:
                last = self.route.last_ts
                self.route.gap_start = last if last is not None else self.wall_ms(now)
        elif was is SocketState.OPEN:
            self.closed_before_auth += 1
            self._key_suspect(f"socket closed before auth ({reason})")
            if not self._listen_key:
                self._token_suspect(reason)

    def tick(self, now: float, last_rx: float = 0.0) -> None:
        """The auth deadline."""
        opened = self._opened_at
        if (
            opened is not None
            and self.state is SocketState.OPEN
            and now - opened > self._auth_timeout
        ):
            self._opened_at = None
            self.actions.append(
                Report(ConnectionLost(f"no auth ack within {self._auth_timeout:.0f}s"))
            )
            self.actions.append(Restart("no auth ack"))

    def next_deadline(self) -> Optional[float]:
        if self._opened_at is not None and self.state is SocketState.OPEN:
            return self._opened_at + self._auth_timeout
        return None

    def receive(self, payload: bytes, now: float) -> None:
        """One inbound data message."""
        event = self._decode(payload)
        cls = event.__class__
        if cls is PrivatePush:
            self._on_push(event, now)  # type: ignore[arg-type]
        elif cls is AuthResult:
            self._on_auth(event, now)  # type: ignore[arg-type]
        elif cls is Pong:
            pass
        elif cls is Malformed:
            self.malformed += 1
            reason = scrub(event.reason)  # type: ignore[union-attr]
            self._report(ProtocolError(f"malformed frame on the user stream ({reason})"), now)
        else:
            logger.debug("user stream: ignoring %s", cls.__name__)

    # -- internals ----------------------------------------------------------------------

    def _token_suspect(self, reason: str) -> None:
        n = self.closed_before_auth - UNAUTHED_REPORT_AFTER
        if n >= 0 and n % UNAUTHED_REPORT_EVERY == 0:
            n += UNAUTHED_REPORT_AFTER
            message = (
                f"the private stream closed before its auth ack {n} times in a row ({reason}); "
                "the token may be invalid or expired (still retrying)"
            )
            logger.warning("user stream: %s", message)
            self.actions.append(Report(ConnectionLost(message)))

    def _on_auth(self, result: AuthResult, now: float) -> None:
        if self.state is not SocketState.OPEN:
            logger.debug("user stream: auth result outside the auth wait ignored")
            return
        if result.success:
            self.closed_before_auth = 0
            self.user_id = result.user_id
            self._opened_at = None
            if self._listen_key:
                self.actions.append(KeyAccepted())
            self._streaming("authenticated")
            self.actions.append(Ready(self.route))
            route = self.route
            if route.gap_start is not None:
                start, route.gap_start = route.gap_start, None
                route.gaps += 1
                self.actions.append(Gap("user", start, self.wall_ms(now)))
            return
        self.auth_failures += 1
        reason = scrub(result.message or "refused")
        logger.warning("user stream: auth refused (%s)", reason)
        if not self._listen_key:  # a token: nothing to renew, the credentials are bad
            self._opened_at = None
            self.actions.append(Fail(AuthError(None, f"private stream auth refused: {reason}")))
            return
        self._key_suspect(f"auth refused: {reason}")
        self.actions.append(Close(f"auth refused: {reason}"))

    def _key_suspect(self, reason: str) -> None:
        """Ask the shell to check the key over REST (once per socket)."""
        if self._listen_key and not self._checked_key:
            self._checked_key = True
            self.actions.append(KeyRejected(reason))

    def _on_push(self, push: PrivatePush, now: float) -> None:
        route = self.route
        route.messages += 1
        self.events += 1
        if push.ts is not None:
            route.last_ts = push.ts
            route.lag_ms = self.wall_ms(now) - push.ts
        model: Any
        try:
            model = user_event(push)
        except ProtocolError as exc:  # reported, and still delivered: never drop a user event
            route.bad_payloads += 1
            self._report(ProtocolError(f"bad {push.event_type} payload: {scrub(str(exc))}"), now)
            model = UserEvent.from_push(push)
        key = getattr(model, "dedupe_key", None)
        if key is not None:
            seen = self._seen
            if key in seen:
                self.duplicates += 1
                return
            seen[key] = None
            if len(seen) > DEDUPE_WINDOW:
                seen.popitem(last=False)
        if isinstance(model, OrderUpdate):
            callbacks = self.on_order or self.on_event
        elif isinstance(model, AccountUpdate):
            callbacks = self.on_account or self.on_event
        else:
            callbacks = self.on_event
        if callbacks:
            self.deliver(self.lane, "user", callbacks, model, False)
        else:
            logger.debug("user event %s with no callback registered", push.event_type)

    def stats(self) -> Dict[str, Any]:
        return {
            "authenticated": self.authed,
            "events": self.events,
            "duplicates": self.duplicates,
            "auth_failures": self.auth_failures,
            "closed_before_auth": self.closed_before_auth,
            "malformed": self.malformed,
        }
