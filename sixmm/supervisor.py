"""The reconnect supervisor: health, staleness and backoff decisions for every connection,
and the thread that keeps servers talking and engines' deadlines met.

- :class:`Health` is one connection's record and rule book: when a silent socket is stale
  (``stale_after`` without a completed frame), what to do after a socket ended or an attempt
  failed (wait ``delay``, reconnect at once, or give up: :class:`~sixmm.protocol.reconnect.
  ReconnectPolicy`), which connect failures reach ``on_error`` (:class:`~sixmm.pacing.Pacer`),
  and when the next attempt is due. Pure bookkeeping: the connection's own thread asks it at
  each turn of its loop (it is the one thread that touches its socket), ``stats()`` reads it.
- :class:`Supervisor` owns the ``sixmm-heartbeat`` thread. Every ``ping_interval`` it sends each
  open connection an application ``ping`` op and a websocket ping, so a healthy server always
  has something to answer. It gives each session's engine a turn at least once a second
  and wakes early for the earliest deadline the engines named at their last turn (an
  unanswered subscribe, a book waiting for its snapshot, a silent topic), so a deadline is
  met when it falls, not up to a second later.

Design note: DESIGN.md sketched one supervisor thread that also reconnects. Here each
connection's thread runs its own reconnect loop (kazoo/paho style: one loop with a
``finally``), so a dead socket's owner is the only thread that touches it; the decisions that
loop carries out are made here.

Thread-safety: ``Supervisor.start``/``stop`` from any thread, ``stop`` never joins itself; a
``Health`` belongs to its connection's thread (``restart`` from any thread only sets a flag).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional

from .config import DEFAULT_PING_INTERVAL
from .pacing import Pacer
from .protocol.reconnect import Decision, GiveUp, ReconnectPolicy
from .settings import Settings
from .threads import OwnedThread

if TYPE_CHECKING:  # the connections import Health from here
    from .connection import Connection

__all__ = ["Health", "Heartbeat", "Supervisor"]

logger = logging.getLogger(__name__)


class Health:
    """One connection's health and the decisions made from it (see the module docstring)."""

    __slots__ = ("next_attempt_at", "pacer", "policy", "stale_after")

    def __init__(self, settings: Settings) -> None:
        self.stale_after = settings.stale_after
        self.policy = ReconnectPolicy(settings.backoff, settings.stable_after)
        self.pacer = Pacer(settings.report_pacing)  # connect failures reported to on_error
        self.next_attempt_at: Optional[float] = None

    # -- staleness ------------------------------------------------------------------------

    def stale(self, now: float, last_rx: float) -> Optional[str]:
        """Why the socket must go, if nothing completed for ``stale_after`` seconds."""
        if now - last_rx > self.stale_after:
            return f"stale: no frame for {self.stale_after:.1f}s"
        return None

    # -- reconnect decisions --------------------------------------------------------------

    def after_socket(self, opened_at: float, now: float, held_for: float = 0.0) -> Decision:
        """A socket that opened at ``opened_at`` ended at ``now``: the failures in a row end."""
        self.pacer.reset()
        return self._planned(self.policy.after_socket(opened_at, now, held_for), now)

    def after_failure(self, now: float, held_for: float = 0.0) -> Decision:
        """An attempt failed before a socket opened."""
        return self._planned(self.policy.after_failure(held_for), now)

    def report_failure(self, reason: str) -> bool:
        """Count one connect failure; True when this one goes to ``on_error``."""
        return self.pacer.should_report(reason)

    def restart(self) -> None:
        """Reconnect at once (once until a socket lives ``stable_after``); any thread."""
        self.policy.restart()

    def cut_short(self) -> bool:
        """During a backoff wait: True if a restart may end the wait now."""
        return self.policy.cut_short()

    def wait_over(self) -> None:
        self.policy.wait_over()

    def connecting(self) -> None:
        """An attempt begins: nothing is scheduled any more."""
        self.next_attempt_at = None

    def _planned(self, decision: Decision, now: float) -> Decision:
        if isinstance(decision, GiveUp):
            self.next_attempt_at = None
        else:
            self.next_attempt_at = now + decision.delay
        return decision

    @property
    def paced_restarts(self) -> int:
        """Restarts refused an immediate reconnect (a storm held off)."""
        return self.policy.paced_restarts

    def stats(self, now: float) -> Dict[str, object]:
        """``failures_in_row``, ``next_attempt_in`` (seconds, or None), ``paced_restarts``."""
        due = self.next_attempt_at
        return {
            "failures_in_row": self.policy.attempt,
            "next_attempt_in": None if due is None else round(max(0.0, due - now), 3),
            "paced_restarts": self.policy.paced_restarts,
        }


class Supervisor:
    """Owner of the ``sixmm-heartbeat`` thread: pings, and the engines' deadlines."""

    def __init__(
        self,
        connections: Callable[[], Iterable[Connection]],
        send_ping: Callable[[Connection], None],
        *,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connections = connections
        self._send_ping = send_ping
        self._ping_interval = ping_interval
        self._tick = min(tick, ping_interval)
        self._clock = clock
        self._owner = OwnedThread("sixmm-heartbeat", self._run)
        self._stop = self._owner.stopping
        self._last_ping: Dict[str, float] = {}
        self.pings_sent = 0
        self.engine_turns = 0  # deadline checks handed to engines

    def start(self) -> None:
        """Start the thread (idempotent)."""
        self._owner.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join within ``timeout`` (idempotent)."""
        self._owner.stop(timeout)

    def _run(self) -> None:
        wait = self._tick
        while not self._stop.wait(wait):
            now = self._clock()
            soonest = now + self._tick
            for conn in list(self._connections()):
                try:
                    due = self._visit(conn, now)
                except Exception:
                    logger.exception("heartbeat failed on connection %s", conn.name)
                    continue
                if due is not None and due < soonest:
                    soonest = due
            wait = max(0.01, soonest - self._clock())

    def _visit(self, conn: Connection, now: float) -> Optional[float]:
        """Ping ``conn`` when due and give its engine its turn; the next time to look."""
        if not conn.is_open:
            self._last_ping.pop(conn.name, None)
            return None
        last = self._last_ping.setdefault(conn.name, now)
        if now - last >= self._ping_interval:
            self._last_ping[conn.name] = now
            last = now
            self._send_ping(conn)
            conn.ping()
            self.pings_sent += 1
        session = conn.session
        session.on_tick(conn, now)  # the engine acts only on what is due
        self.engine_turns += 1
        due = session.due  # as the engine said at its turn (now, or just after)
        next_ping = last + self._ping_interval
        return next_ping if due is None or next_ping < due else due


#: The name this thread's owner had before it made the reconnect decisions too.
Heartbeat = Supervisor
