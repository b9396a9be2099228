"""The listenKey lifecycle: create, renew on schedule, re-create when gone, close on stop.

One :class:`ListenKeyKeeper` owns one listenKey and one thread (``sixmm-listenkey``).
Outcomes are reported, never swallowed: every renewal success or failure goes to
``on_status``; a key that the server no longer knows is replaced and the new one handed to
``on_new_key``; rejected credentials end the keeper through ``on_fatal`` (no retry storm).
Keys are created through the process-wide limiter (:mod:`sixmm.ratelimit`, kind
``listen_key``), and a fresh key that is refused before the stream ever accepted it ("dead on
arrival") is replaced once at once, then only after the backoff: a failing key service cannot
start a storm. Rules from PROTOCOL.md §5 and §8. The key itself never appears in logs or status
texts: every server-provided text is scrubbed (:func:`sixmm.protocol.redact.scrub`).

Every decision (schedule, transient vs gone, pacing, holds, giving up, counters, status texts)
is made by the pure :class:`sixmm.protocol.listenkey.ListenKeyMachine`; this module is its
shell: the thread, the lock, the clock, the limiter and the REST calls.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional

from sixmm.config import DEFAULT_LISTEN_KEY_RENEW_INTERVAL, Backoff
from sixmm.errors import AuthError, ConnectionLost
from sixmm.protocol.listenkey import (
    DEAD_KEYS_REPORT_AFTER,
    ActionKind,
    Created,
    FailKind,
    ListenKeyMachine,
)
from sixmm.protocol.redact import remember, scrub
from sixmm.protocol.rest import is_transient
from sixmm.ratelimit import host_of, limiter
from sixmm.rest.client import RestClient
from sixmm.threads import OwnedThread

__all__ = ["ListenKeyKeeper"]

logger = logging.getLogger(__name__)

_THREAD_NAME = "sixmm-listenkey"

__all__ += ["DEAD_KEYS_REPORT_AFTER"]  # re-exported: it lives with the machine


def _describe(error: BaseException) -> str:
    return scrub(f"{type(error).__name__}: {error}")


class ListenKeyKeeper:
    """Keeps one listenKey alive for the private stream.

    ``start()`` creates the key on the calling thread (errors propagate) and starts the keeper
    thread, which renews every ``renew_interval`` seconds. A transient renewal failure
    (5001/5002/5003, HTTP 429/5xx, lost connection) is retried with ``backoff`` forever, each
    failure reported; any other non-zero code means the key is gone: a new key is created,
    the old one closed best effort, and ``on_new_key(new_key)`` is called. An ``AuthError``
    calls ``on_fatal(error)`` and ends the thread. ``stop()`` ends the thread and closes the key.
    Callbacks run on the keeper thread (``on_status("closed", ...)`` on the thread calling
    ``stop()``); exceptions they raise are logged and ignored.

    Status kinds: ``created``, ``renewed``, ``renew_failed``, ``recreated``, ``closed``, ``fatal``,
    ``dead_on_arrival`` (after :data:`DEAD_KEYS_REPORT_AFTER` fresh keys refused in a row,
    then every ``ReportPacing.every`` more; the stream should tell ``on_error``).
    ``key_accepted()`` (the stream authenticated with the current key) ends such a run.

    Thread-safety: all methods may be called from any thread, including from the callbacks.
    """

    def __init__(
        self,
        rest: RestClient,
        *,
        renew_interval: float = DEFAULT_LISTEN_KEY_RENEW_INTERVAL,
        backoff: Backoff = Backoff(initial=1.0, maximum=60.0),  # noqa: B008 (frozen value)
        on_new_key: Callable[[str], None],
        on_status: Callable[[str, str], None],
        on_fatal: Callable[[BaseException], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._machine = ListenKeyMachine(renew_interval=renew_interval, backoff=backoff)
        self._rest = rest
        self._interval = renew_interval
        self._on_new_key = on_new_key
        self._on_status = on_status
        self._on_fatal = on_fatal
        self._clock = clock
        self._lock = threading.Lock()  # guards the machine
        self._start_lock = threading.Lock()
        self._owner = OwnedThread(_THREAD_NAME, self._run)
        self._stop_event = self._owner.stopping
        self._wake = self._owner.wake
        self._stopped = False  # stop() was called (also before start)
        base_url = getattr(rest, "base_url", None)  # None: a stand-in client, no limiter
        self._host = host_of(base_url) if isinstance(base_url, str) and base_url else None

    def __repr__(self) -> str:
        with self._lock:
            state = (
                "fatal"
                if self._machine.fatal
                else "stopped"
                if self._stopped
                else ("running" if self._owner.started else "new")
            )
        return f"ListenKeyKeeper(state={state!r}, renew_interval={self._interval})"

    # ----------------------------------------------------------------- public API

    @property
    def key(self) -> Optional[str]:
        """The current listenKey (``None`` before ``start()`` and after ``stop()``)."""
        with self._lock:
            return self._machine.key

    def start(self) -> str:
        """Create the key (``AuthError``/``ApiError`` propagate) and start the thread.

        Idempotent: a second call returns the current key.
        """
        with self._start_lock:
            with self._lock:
                if self._stopped:
                    raise RuntimeError("ListenKeyKeeper was stopped; create a new one")
                key = self._machine.key
                if self._owner.started and key is not None:
                    return key
            key = self._create(None)
            now = self._clock()
            with self._lock:
                stopped = self._stopped
                if not stopped:
                    self._machine.created(key, now)
                    self._owner.start()  # under the lock: stop() never sees it unstarted
            if stopped:  # stop() ran while the key was being created: do not leak it
                self._close_quietly(key, "stopped while starting")
                raise RuntimeError("ListenKeyKeeper was stopped while starting")
            logger.info("listenKey created; renewing every %.0fs", self._interval)
            return key

    def interrupt(self) -> None:
        """End any wait of the keeper (a queued key creation, the schedule) without stopping
        it yet: the first step of a bounded stop. Non-blocking; idempotent."""
        self._stop_event.set()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (bounded join, never joins itself) and close the key best effort.

        ``timeout`` bounds the whole stop, the ``DELETE`` of the key included. Idempotent;
        safe from any thread, including the keeper's own callbacks.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._machine.stop()
            started = self._owner.started
        self._owner.stop(max(0.0, min(timeout / 2, deadline - time.monotonic())))
        with self._lock:
            key = self._machine.release_key()
        if key is not None:
            left = deadline - time.monotonic()
            if left > 0.01:
                self._close_quietly(key, "stop", timeout=left)
            else:
                logger.warning("listenKey left to expire: no time left to close it")
        if started:
            self._emit_status("closed", "keeper stopped")

    def key_rejected(self, reason: str) -> None:
        """The private stream was refused for auth: check the key over REST (renew, else
        re-create). Returns at once; the check runs on the keeper thread."""
        with self._lock:
            if self._machine.ended:
                return
            self._machine.key_rejected(reason, self._clock())
        logger.info(
            "private stream refused (%s); checking the listenKey",
            scrub(reason or "private stream refused"),
        )
        self._wake.set()

    def key_accepted(self) -> None:
        """The private stream authenticated with the current key: it is not dead on arrival."""
        with self._lock:
            self._machine.key_accepted()

    def renew_now(self) -> None:
        """Renew immediately (on the keeper thread) instead of waiting for the schedule."""
        with self._lock:
            self._machine.renew_now()
        self._wake.set()

    def stats(self) -> Dict[str, Any]:
        """Counters and timing: renewals, renew_failures, recreations, consecutive_failures,
        last_renew_ok (seconds since the last successful create/renew, or None),
        next_renew_in (seconds, or None), has_key, fatal, dead_on_arrival(_in_row),
        paced_creations."""
        now = self._clock()
        with self._lock:
            return self._machine.stats(now)

    # ----------------------------------------------------------------- keeper thread

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                self._flush()
                now = self._clock()
                with self._lock:
                    action = self._machine.next_action(now)
                    deadline = self._machine.next_deadline()
                if action.kind is ActionKind.CLOSE:  # a replaced key: closed even when stopping
                    if action.key is not None:
                        self._close_quietly(action.key, "replaced")
                    with self._lock:
                        self._machine.old_key_closed()
                    continue
                if self._stop_event.is_set() or action.kind is ActionKind.END:
                    return
                if action.kind is ActionKind.WAIT:
                    self._wake.wait(None if deadline is None else max(0.0, deadline - now))
                elif action.kind is ActionKind.RENEW:
                    self._renew(action.key)
                else:
                    self._recreate()
        except Exception as exc:  # a bug: say so loudly rather than die silently
            logger.exception("listenKey keeper thread crashed")
            with self._lock:
                self._machine.crashed(_describe(exc))
            self._flush(exc)
        finally:
            logger.debug("listenKey keeper thread exits")

    def _flush(self, error: Optional[BaseException] = None) -> None:
        """Hand the machine's notices to ``on_status`` (and ``on_fatal`` after a fatal)."""
        with self._lock:
            notices = self._machine.drain()
        for kind, text in notices:
            self._emit_status(kind, text)
            if kind == "fatal" and error is not None:
                self._call("on_fatal", self._on_fatal, error)

    def _renew(self, key: Optional[str]) -> None:
        if key is None:
            return
        held = 0.0 if self._host is None else limiter().held_for(self._host)
        if held > 0:  # Retry-After from this host: no call before it ends
            with self._lock:
                self._machine.held(self._clock() + held)
            return
        try:
            self._rest.renew_listen_key(key, max_retries=0)
        except AuthError as exc:
            with self._lock:
                self._machine.renew_failed(FailKind.AUTH, _describe(exc), self._clock())
            self._flush(exc)
            return
        except Exception as exc:
            if self._stop_event.is_set():
                return
            kind = FailKind.TRANSIENT if is_transient(exc) else FailKind.GONE
            with self._lock:
                self._machine.renew_failed(kind, _describe(exc), self._clock())
            return
        with self._lock:
            self._machine.renewed(self._clock())

    def _recreate(self) -> None:
        try:
            new_key = self._create(0)
        except AuthError as exc:
            with self._lock:
                self._machine.create_failed(FailKind.AUTH, _describe(exc), self._clock())
            self._flush(exc)
            return
        except Exception as exc:
            if self._stop_event.is_set():
                return
            with self._lock:
                self._machine.create_failed(FailKind.TRANSIENT, _describe(exc), self._clock())
            return
        with self._lock:
            outcome = self._machine.created(new_key, self._clock())
        if outcome is Created.DISCARD:  # stop() ran meanwhile: do not leave the new key alive
            self._close_quietly(new_key, "stopped while re-creating")
            return
        self._flush()
        self._call("on_new_key", self._on_new_key, new_key)

    # ----------------------------------------------------------------- helpers

    def _create(self, max_retries: Optional[int]) -> str:
        """One key creation through the process-wide limiter (interrupted by stop)."""
        if self._host is not None and not limiter().acquire(
            self._host, "listen_key", self._stop_event
        ):
            raise ConnectionLost("listenKey creation abandoned: stopping")
        key = self._rest.create_listen_key(max_retries=max_retries)
        remember(key)  # RestClient does too; any stand-in client is covered as well
        return key

    def _close_quietly(self, key: str, why: str, timeout: Optional[float] = None) -> None:
        try:
            self._rest.close_listen_key(key, max_retries=0, timeout=timeout)
        except Exception as exc:
            logger.warning("closing listenKey (%s) failed: %s", why, _describe(exc))
        else:
            logger.debug("listenKey closed (%s)", why)

    def _emit_status(self, kind: str, reason: str) -> None:
        self._call("on_status", self._on_status, kind, reason)

    @staticmethod
    def _call(name: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("listenKey %s callback raised", name)
