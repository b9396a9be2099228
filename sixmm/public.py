"""The shell of a public market-data connection around its pure engine.

What the session decides -- subscriptions, acks, routing, resyncs, liveness -- is
:class:`sixmm.protocol.public_engine.PublicEngine`; this adapter feeds it (from the reader,
the heartbeat and the registry's threads, one at a time: see :class:`~sixmm.connection.Session`)
and carries out its actions: sends on the connection, reports to ``on_error``, gap windows to
``on_gap``, refused topics to the registry, silent topics to ``on_state``.

Thread-safety: ``add``/``remove``/``resync`` may be called from any thread; the ``on_*`` hooks
run on the connection's reader thread (``on_tick`` on the heartbeat thread).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

from .config import DEFAULT_ACK_TIMEOUT
from .connection import Connection, Session
from .dispatch import Dispatcher
from .protocol.engine import Refused, TopicNotice
from .protocol.events import Event
from .protocol.frames import RequestIds, decode
from .protocol.liveness import DEFAULT_LIVENESS, Liveness
from .protocol.public_engine import PublicEngine
from .states import GapEvent
from .subscriptions import Route

__all__ = ["PublicSession"]


class PublicSession(Session):
    """Carries a shard of public topics over one :class:`Connection`."""

    engine: PublicEngine

    def __init__(
        self,
        url: str,
        *,
        ids: RequestIds,
        dispatcher: Dispatcher,
        report: Callable[[BaseException], None],
        on_gap: Callable[[str, GapEvent], None],
        on_failed: Callable[[Route], None],
        decode: Callable[[bytes], Event] = decode,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        liveness: Liveness = DEFAULT_LIVENESS,
        on_topic_event: Optional[Callable[[str, str, str], None]] = None,
    ) -> None:
        super().__init__(report, on_gap, clock, dispatcher)
        self._url = url
        self._on_failed = on_failed
        self._on_topic_event = on_topic_event  # (connection, topic, reason) -> on_state
        self.engine = PublicEngine(
            ids=ids,
            deliver=dispatcher.submit,
            decode=decode,
            ack_timeout=ack_timeout,
            liveness=liveness,
            wall_offset=time.time() - clock(),
        )

    def __len__(self) -> int:
        return len(self.engine) + len(self._inbox)

    @property
    def topics(self) -> List[str]:
        return list(self.engine.routes)

    # -- registry side (any thread) -----------------------------------------------------

    def add(self, route: Route) -> None:
        """Desire ``route.topic`` on this connection; subscribe now if the socket is open."""
        route.session = self
        self.submit(lambda: self.engine.add(route, self._clock()))

    def remove(self, route: Route, *, unsubscribe: bool = True) -> None:
        """Stop desiring ``route.topic``; unsubscribe now if the socket is open."""
        if route.session is self:
            route.session = None
        self.submit(lambda: self.engine.remove(route, self._clock(), unsubscribe=unsubscribe))

    def resync(self, route: Route, reason: str) -> None:
        """Rebuild ``route``'s book from a fresh snapshot: unsubscribe + subscribe that topic."""
        self.submit(lambda: self.engine.resync(route, reason, self._clock()))

    # -- connection hooks ---------------------------------------------------------------

    def url(self) -> str:
        return self._url

    def on_action(self, conn: Connection, action: Any) -> None:
        cls = action.__class__
        if cls is Refused:
            route = action.route
            if route.session is self:
                route.session = None
            self._on_failed(route)
        elif cls is TopicNotice:
            if self._on_topic_event is not None:
                self._on_topic_event(conn.name, action.topic, action.reason)
        else:
            super().on_action(conn, action)

    def stats(self) -> Dict[str, Any]:
        return self.engine.stats()
