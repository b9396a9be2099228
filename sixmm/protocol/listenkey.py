"""The listenKey lifecycle as one pure state machine: every decision, no I/O.

:class:`ListenKeyMachine` decides when to renew, when a key is gone and must be re-created,
how fast fresh keys refused on arrival may be replaced (the backoff), how long a Retry-After
hold lasts, when the keeper gives up, and what to report. The shell
(:class:`sixmm.keepalive.ListenKeyKeeper`) owns the thread, the clock and the REST calls: it
asks :meth:`ListenKeyMachine.next_action`, does what it says, feeds the outcome back and
sleeps until :meth:`ListenKeyMachine.next_deadline`.

States and the allowed transitions are one table (:data:`TRANSITIONS`); anything else raises
:class:`IllegalTransition`:

=============  ==============================================================
``NEW``        no key yet: CREATE
``ALIVE``      a key, renewed on schedule (transient failures retried with backoff)
``NEEDS_KEY``  the key is gone: CREATE at the deadline (paced after dead-on-arrival keys)
``FATAL``      credentials rejected or the keeper crashed: END
``STOPPED``    stopped: END (the shell closes the key it takes with :meth:`release_key`)
=============  ==============================================================

Pure: no sockets, threads, clocks or REST; callers pass ``now`` (seconds, monotonic). Keys
never appear in any text it produces (notices, logs, repr).
"""

from __future__ import annotations

import enum
import logging
import random
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

import attrs

from sixmm.config import DEFAULT_REPORT_PACING, Backoff

__all__ = [
    "DEAD_KEYS_REPORT_AFTER",
    "TRANSITIONS",
    "Action",
    "ActionKind",
    "Created",
    "FailKind",
    "IllegalTransition",
    "ListenKeyMachine",
    "State",
]

logger = logging.getLogger(__name__)

#: fresh keys refused in a row before the ``dead_on_arrival`` notice first fires
DEAD_KEYS_REPORT_AFTER = 3


class State(enum.Enum):
    NEW = "new"
    ALIVE = "alive"
    NEEDS_KEY = "needs_key"
    FATAL = "fatal"
    STOPPED = "stopped"


#: state -> states it may move to (staying put is listed where it is allowed)
TRANSITIONS: Mapping[State, FrozenSet[State]] = {
    State.NEW: frozenset({State.ALIVE, State.FATAL, State.STOPPED}),
    State.ALIVE: frozenset({State.ALIVE, State.NEEDS_KEY, State.FATAL, State.STOPPED}),
    State.NEEDS_KEY: frozenset({State.ALIVE, State.NEEDS_KEY, State.FATAL, State.STOPPED}),
    State.FATAL: frozenset({State.FATAL, State.STOPPED}),
    State.STOPPED: frozenset({State.STOPPED}),
}


class IllegalTransition(RuntimeError):
    """An event that the current state does not allow (a bug in the shell)."""


class FailKind(enum.Enum):
    TRANSIENT = "transient"  # retry the same thing with backoff
    GONE = "gone"  # the server no longer knows the key: create a new one
    AUTH = "auth"  # credentials rejected: give up


class ActionKind(enum.Enum):
    CREATE = "create"
    RENEW = "renew"
    CLOSE = "close"  # close the replaced key (``Action.key``), then :meth:`old_key_closed`
    WAIT = "wait"
    END = "end"


class Created(enum.Enum):
    FIRST = "first"  # the first key
    REPLACED = "replaced"  # a new key for a gone one: hand it to ``on_new_key``
    DISCARD = "discard"  # stopped meanwhile: the shell must close this key at once


@attrs.frozen(slots=True)
class Action:
    kind: ActionKind
    key: Optional[str] = attrs.field(default=None, repr=False)


_END = Action(ActionKind.END)
_WAIT = Action(ActionKind.WAIT)


class ListenKeyMachine:
    """Decisions of the listenKey keeper (see the module docstring). Not thread-safe: the
    shell feeds it under its lock."""

    def __init__(
        self,
        *,
        renew_interval: float,
        backoff: Backoff,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if renew_interval <= 0:
            raise ValueError("renew_interval must be > 0")
        self.interval = renew_interval
        self._backoff = backoff
        self._rand = rand
        self._state = State.NEW
        self._key: Optional[str] = None
        self._old_key: Optional[str] = None  # replaced, still to be closed
        self._notices: List[Tuple[str, str]] = []
        self._deadline: Optional[float] = None
        self._check = False  # the stream was refused: check the key now
        self._renew_requested = False
        self._unproven = False  # created and not yet accepted by a stream
        self._last_ok_at: Optional[float] = None
        self._failures = 0  # consecutive failed attempts (renew or re-create)
        self._renewals = 0
        self._renew_failures = 0
        self._recreations = 0
        self._dead_in_row = 0
        self._dead_total = 0
        self._paced_creations = 0
        self._fatal = False

    def __repr__(self) -> str:
        return (
            f"ListenKeyMachine(state={self._state.value!r}, has_key={self._key is not None}, "
            f"failures={self._failures}, dead_in_row={self._dead_in_row})"
        )

    # ----------------------------------------------------------------- queries

    @property
    def state(self) -> State:
        return self._state

    @property
    def key(self) -> Optional[str]:
        return self._key

    @property
    def fatal(self) -> bool:
        """True once the machine gave up (stays True after ``stop()``)."""
        return self._fatal

    @property
    def ended(self) -> bool:
        return self._state in (State.FATAL, State.STOPPED)

    def next_action(self, now: float) -> Action:
        """What the shell must do now. Answering RENEW or CREATE takes the pending requests
        (``renew_now``, ``key_rejected``): a request made during the call counts again."""
        if self._old_key is not None:  # a replaced key is closed even after stop
            return Action(ActionKind.CLOSE, self._old_key)
        if self.ended:
            return _END
        if self._state is State.NEW:
            return Action(ActionKind.CREATE)
        due = self._deadline is None or now >= self._deadline
        if self._state is State.NEEDS_KEY:
            self._check = False  # a refusal cannot hurry a paced creation
            if due or self._renew_requested:
                self._renew_requested = False
                return Action(ActionKind.CREATE)
            return _WAIT
        if due or self._check or self._renew_requested:
            self._check = self._renew_requested = False
            return Action(ActionKind.RENEW, self._key)
        return _WAIT

    def next_deadline(self) -> Optional[float]:
        """When to wake next (``None``: not before an event)."""
        if self.ended or self._state is State.NEW:
            return None
        return self._deadline

    def drain(self) -> List[Tuple[str, str]]:
        """The status notices ``(kind, text)`` since the last drain, oldest first."""
        out, self._notices = self._notices, []
        return out

    def stats(self, now: float) -> Dict[str, Any]:
        """The keeper's counters (see :meth:`sixmm.keepalive.ListenKeyKeeper.stats`)."""
        return {
            "renewals": self._renewals,
            "renew_failures": self._renew_failures,
            "recreations": self._recreations,
            "consecutive_failures": self._failures,
            "last_renew_ok": None if self._last_ok_at is None else now - self._last_ok_at,
            "next_renew_in": (
                None if self._deadline is None or self.ended else max(0.0, self._deadline - now)
            ),
            "has_key": self._key is not None,
            "fatal": self._fatal,
            "dead_on_arrival": self._dead_total,
            "dead_on_arrival_in_row": self._dead_in_row,
            "paced_creations": self._paced_creations,
        }

    # ----------------------------------------------------------------- events

    def created(self, key: str, now: float) -> Created:
        """A key was created (the first one, or a replacement)."""
        if self._state is State.STOPPED:
            return Created.DISCARD
        if self._state not in (State.NEW, State.NEEDS_KEY):
            raise IllegalTransition(f"created in state {self._state.value}")
        first = self._state is State.NEW
        old = self._key
        self._move(State.ALIVE)
        self._key = key
        self._unproven = True
        self._failures = 0
        self._last_ok_at = now
        self._deadline = now + self.interval
        if first:
            self._notice("created", "listenKey created")
            return Created.FIRST
        self._recreations += 1
        if old is not None and old != key:
            self._old_key = old
        logger.warning("listenKey re-created; the private stream must reconnect")
        self._notice("recreated", "listenKey was gone; a new one was created")
        return Created.REPLACED

    def create_failed(self, kind: FailKind, reason: str, now: float) -> None:
        """A re-creation failed (``reason`` already scrubbed of server secrets)."""
        if self._state is State.STOPPED:
            return
        self._expect(State.NEEDS_KEY, "create_failed")
        if kind is FailKind.AUTH:
            self._give_up(f"credentials rejected: {reason}")
            return
        self._failed(f"could not create a new listenKey: {reason}", now)

    def renewed(self, now: float) -> None:
        if self._state is State.STOPPED:
            return
        self._expect(State.ALIVE, "renewed")
        self._move(State.ALIVE)
        self._renewals += 1
        self._failures = 0
        self._last_ok_at = now
        self._deadline = now + self.interval
        logger.debug("listenKey renewed; next renewal in %.0fs", self.interval)
        self._notice("renewed", "listenKey renewed")

    def renew_failed(self, kind: FailKind, reason: str, now: float) -> None:
        if self._state is State.STOPPED:
            return
        self._expect(State.ALIVE, "renew_failed")
        if kind is FailKind.AUTH:
            self._give_up(f"credentials rejected: {reason}")
            return
        if kind is FailKind.TRANSIENT:
            self._failed(f"renewal failed: {reason}", now)
            return
        self._move(State.NEEDS_KEY)
        dead = self._unproven
        if dead:
            self._unproven = False
            self._dead_in_row += 1
            self._dead_total += 1
        in_row = self._dead_in_row
        delay = 0.0 if in_row <= 1 else self._backoff.delay(in_row - 2, self._rand)
        if delay > 0:
            self._paced_creations += 1
        self._deadline = now + delay  # at once the first time
        reason = self._safe(reason)
        if not dead:
            logger.warning(
                "listenKey renewal says the key is gone (%s); creating a new one", reason
            )
            return
        logger.warning(
            "listenKey refused on arrival (%d in a row: %s); a new one in %.1fs",
            in_row,
            reason,
            delay,
        )
        n = in_row - DEAD_KEYS_REPORT_AFTER
        if n >= 0 and n % DEFAULT_REPORT_PACING.every == 0:
            self._notice(
                "dead_on_arrival",
                f"{in_row} fresh listenKeys in a row were refused on arrival ({reason}); "
                "creating new ones with backoff",
            )

    def key_rejected(self, reason: str, now: float) -> None:
        """The private stream was refused for auth: check the key (renew, else re-create).
        Ignored while a paced creation waits for its deadline."""
        if self.ended:
            return
        if self._state is State.NEEDS_KEY and self._deadline is not None and now < self._deadline:
            return
        self._check = True

    def key_accepted(self) -> None:
        """The stream authenticated with the current key: it is not dead on arrival."""
        self._unproven = False
        self._dead_in_row = 0

    def renew_now(self) -> None:
        if not self.ended:
            self._renew_requested = True

    def held(self, until: float) -> None:
        """A Retry-After hold on the host: no renewal before ``until``."""
        if self.ended:
            return
        self._expect(State.ALIVE, "held")
        self._deadline = until

    def old_key_closed(self) -> None:
        """The replaced key was closed (or the attempt failed: it is not retried)."""
        self._old_key = None

    def crashed(self, reason: str) -> None:
        """The shell hit a bug: give up loudly."""
        if self._state is not State.STOPPED:
            self._give_up(f"keeper failed: {reason}")

    def stop(self) -> None:
        self._move(State.STOPPED)
        self._deadline = None

    def release_key(self) -> Optional[str]:
        """Forget the key; return it when the shell should close it (not after a fatal)."""
        key, self._key = self._key, None
        return None if self._fatal else key

    # ----------------------------------------------------------------- internals

    def _move(self, to: State) -> None:
        if to not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"{self._state.value} -> {to.value}")
        self._state = to

    def _expect(self, state: State, event: str) -> None:
        if self._state is not state:
            raise IllegalTransition(f"{event} in state {self._state.value}")

    def _failed(self, reason: str, now: float) -> None:
        self._move(self._state)
        attempt = self._failures
        self._failures += 1
        self._renew_failures += 1
        delay = self._backoff.delay(attempt, self._rand)
        self._deadline = now + delay
        reason = self._safe(reason)
        logger.warning("listenKey %s; retry %d in %.1fs", reason, attempt + 1, delay)
        self._notice("renew_failed", f"{reason}; retrying in {delay:.1f}s")

    def _give_up(self, text: str) -> None:
        self._move(State.FATAL)
        self._fatal = True
        self._deadline = None
        text = self._safe(text)
        logger.error("listenKey keeper gives up: %s", text)
        self._notice("fatal", text)

    def _safe(self, text: str) -> str:
        for key in (self._key, self._old_key):
            if key:
                text = text.replace(key, "***")
        return text

    def _notice(self, kind: str, text: str) -> None:
        self._notices.append((kind, self._safe(text)))
