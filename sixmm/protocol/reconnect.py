"""The reconnect decisions of one connection: when to try again, and when to give up.

A connection's thread asks :meth:`ReconnectPolicy.after_socket` / :meth:`after_failure` what
to do once a socket ended or an attempt failed, and gets a :class:`Retry` (wait ``delay``
seconds, then connect) or a :class:`GiveUp`. The rules:

- failures in a row walk the :class:`~sixmm.config.Backoff` (``attempt`` 0, 1, 2, ...); a socket
  that lived ``stable_after`` seconds resets the walk;
- a :meth:`restart` (a new listenKey, a missing auth ack) reconnects at once -- once: until a
  socket has lived ``stable_after`` seconds, every further restart goes through the backoff,
  so a key refused on arrival cannot start a storm (``paced_restarts`` counts those);
- a host held by a rate-limit refusal (``held_for``) is never tried before the hold ends;
- ``Backoff.max_attempts`` failures in a row give up (state ``LOST``).

Pure: no threads or clocks; ``now`` is passed in, and the jitter draw is injectable
(``rand``) so a simulation replays the same delays for the same seed.
"""

from __future__ import annotations

import random
from typing import Callable, Optional, Union

import attrs

from sixmm.config import Backoff

__all__ = ["GiveUp", "ReconnectPolicy", "Retry"]


@attrs.frozen(slots=True)
class Retry:
    """Connect again after ``delay`` seconds (0: at once; ``immediate``: a restart's one
    immediate retry)."""

    delay: float
    immediate: bool = False


@attrs.frozen(slots=True)
class GiveUp:
    """Stop for good: ``attempts`` failures in a row used up the backoff."""

    attempts: int


Decision = Union[Retry, GiveUp]


class ReconnectPolicy:
    """The reconnect state of one connection (see the module docstring)."""

    def __init__(
        self,
        backoff: Backoff,
        stable_after: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = backoff
        self.stable_after = stable_after
        self._rand = rand
        self.attempt = 0  # failures since the last stable socket
        self.immediate_used = False  # the one immediate retry since the last stable socket
        self.restart_pending = False
        self.paced_restarts = 0

    def restart(self) -> None:
        """Ask for a reconnect at once (any thread: it only sets a flag)."""
        self.restart_pending = True

    def after_socket(self, opened_at: float, now: float, held_for: float = 0.0) -> Decision:
        """A socket that opened at ``opened_at`` ended at ``now``."""
        if now - opened_at >= self.stable_after:
            self.attempt = 0
            self.immediate_used = False
        return self._next(held_for)

    def after_failure(self, held_for: float = 0.0) -> Decision:
        """An attempt failed before a socket opened."""
        return self._next(held_for)

    def _next(self, held_for: float) -> Decision:
        if self.restart_pending:
            self.restart_pending = False
            if not self.immediate_used:
                self.immediate_used = True
                return Retry(0.0, immediate=True)
            self.paced_restarts += 1
        if self.backoff.exhausted(self.attempt):
            return GiveUp(self.attempt)
        delay = max(self.backoff.delay(self.attempt, self._rand), held_for)
        self.attempt += 1
        return Retry(delay)

    def cut_short(self) -> bool:
        """During a backoff wait: True if a restart may end the wait now (the one immediate
        retry); a restart that must wait is left pending and counted when the wait ends."""
        if self.restart_pending and not self.immediate_used:
            self.restart_pending = False
            self.immediate_used = True
            return True
        return False

    def wait_over(self) -> None:
        """A backoff wait ended: a restart that waited for it is served by the next attempt."""
        if self.restart_pending:
            self.restart_pending = False
            self.paced_restarts += 1

    def bound(self, attempt: Optional[int] = None) -> float:
        """The longest delay the backoff allows for ``attempt`` (default: the last one)."""
        n = self.attempt - 1 if attempt is None else attempt
        return self.backoff.cap(max(0, n))
