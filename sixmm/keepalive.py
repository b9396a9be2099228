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
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional

from sixmm.config import DEFAULT_LISTEN_KEY_RENEW_INTERVAL, DEFAULT_REPORT_PACING, Backoff
from sixmm.errors import AuthError, ConnectionLost
from sixmm.protocol.redact import remember, scrub
from sixmm.protocol.rest import is_transient
from sixmm.ratelimit import host_of, limiter
from sixmm.rest.client import RestClient

__all__ = ["ListenKeyKeeper"]

logger = logging.getLogger(__name__)

_THREAD_NAME = "sixmm-listenkey"


#: fresh keys refused in a row before ``on_status("dead_on_arrival", ...)`` first fires
DEAD_KEYS_REPORT_AFTER = 3


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
        if renew_interval <= 0:
            raise ValueError("renew_interval must be > 0")
        self._rest = rest
        self._interval = renew_interval
        self._backoff = backoff
        self._on_new_key = on_new_key
        self._on_status = on_status
        self._on_fatal = on_fatal
        self._clock = clock
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._key: Optional[str] = None
        self._stopped = False
        self._fatal: Optional[BaseException] = None
        # Work requested from other threads, consumed by the keeper thread.
        self._check_reason: Optional[str] = None
        self._renew_requested = False
        # Schedule (keeper clock) and counters.
        self._next_renew_at: Optional[float] = None
        self._last_ok_at: Optional[float] = None
        self._failures = 0  # consecutive failed attempts (renew or re-create)
        self._need_new_key = False
        self._renewals = 0
        self._renew_failures = 0
        self._recreations = 0
        base_url = getattr(rest, "base_url", None)  # None: a stand-in client, no limiter
        self._host = host_of(base_url) if isinstance(base_url, str) and base_url else None
        self._unproven = False  # the current key was created and not yet accepted by a stream
        self._dead_in_row = 0  # fresh keys refused on arrival, in a row
        self._dead_total = 0
        self._paced_creations = 0  # creations delayed by the backoff (a storm held off)

    def __repr__(self) -> str:
        with self._lock:
            state = (
                "fatal"
                if self._fatal
                else "stopped"
                if self._stopped
                else ("running" if self._thread is not None else "new")
            )
        return f"ListenKeyKeeper(state={state!r}, renew_interval={self._interval})"

    # ----------------------------------------------------------------- public API

    @property
    def key(self) -> Optional[str]:
        """The current listenKey (``None`` before ``start()`` and after ``stop()``)."""
        with self._lock:
            return self._key

    def start(self) -> str:
        """Create the key (``AuthError``/``ApiError`` propagate) and start the thread.

        Idempotent: a second call returns the current key.
        """
        with self._start_lock:
            with self._lock:
                if self._stopped:
                    raise RuntimeError("ListenKeyKeeper was stopped; create a new one")
                if self._thread is not None and self._key is not None:
                    return self._key
            key = self._create(None)
            now = self._clock()
            with self._lock:
                stopped = self._stopped
                if not stopped:
                    self._key = key
                    self._unproven = True
                    self._last_ok_at = now
                    self._next_renew_at = now + self._interval
                    thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
                    self._thread = thread
                    thread.start()  # under the lock: stop() never sees an unstarted thread
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
            thread = self._thread
        self._stop_event.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, min(timeout / 2, deadline - time.monotonic())))
            if thread.is_alive():
                logger.warning("listenKey thread did not stop within %.1fs", timeout / 2)
        with self._lock:
            key, self._key = self._key, None
            fatal = self._fatal is not None
        if key is not None and not fatal:
            left = deadline - time.monotonic()
            if left > 0.01:
                self._close_quietly(key, "stop", timeout=left)
            else:
                logger.warning("listenKey left to expire: no time left to close it")
        if thread is not None:
            self._emit_status("closed", "keeper stopped")

    def key_rejected(self, reason: str) -> None:
        """The private stream was refused for auth: check the key over REST (renew, else
        re-create). Returns at once; the check runs on the keeper thread."""
        with self._lock:
            if self._stopped or self._fatal is not None:
                return
            self._check_reason = reason or "private stream refused"
        self._wake.set()

    def key_accepted(self) -> None:
        """The private stream authenticated with the current key: it is not dead on arrival."""
        with self._lock:
            self._unproven = False
            self._dead_in_row = 0

    def renew_now(self) -> None:
        """Renew immediately (on the keeper thread) instead of waiting for the schedule."""
        with self._lock:
            if self._stopped or self._fatal is not None:
                return
            self._renew_requested = True
        self._wake.set()

    def stats(self) -> Dict[str, Any]:
        """Counters and timing: renewals, renew_failures, recreations, last_renew_ok (seconds
        since the last successful create/renew, or None), next_renew_in (seconds, or None)."""
        now = self._clock()
        with self._lock:
            return {
                "renewals": self._renewals,
                "renew_failures": self._renew_failures,
                "recreations": self._recreations,
                "consecutive_failures": self._failures,
                "last_renew_ok": None if self._last_ok_at is None else now - self._last_ok_at,
                "next_renew_in": (
                    None
                    if self._next_renew_at is None or self._stopped or self._fatal is not None
                    else max(0.0, self._next_renew_at - now)
                ),
                "has_key": self._key is not None,
                "fatal": self._fatal is not None,
                "dead_on_arrival": self._dead_total,
                "dead_on_arrival_in_row": self._dead_in_row,
                "paced_creations": self._paced_creations,
            }

    # ----------------------------------------------------------------- keeper thread

    def _run(self) -> None:
        self._emit_status("created", "listenKey created")
        try:
            while True:
                self._wake.clear()
                if self._stop_event.is_set():
                    return
                with self._lock:
                    check_reason, self._check_reason = self._check_reason, None
                    renew_requested, self._renew_requested = self._renew_requested, False
                    due_at = self._next_renew_at
                now = self._clock()
                if check_reason is not None:
                    logger.info("private stream refused (%s); checking the listenKey", check_reason)
                with self._lock:
                    paced = self._need_new_key and due_at is not None and now < due_at
                if paced:  # a new key is due after the backoff: a refusal cannot hurry it
                    check_reason = None
                if check_reason is not None or renew_requested or due_at is None or now >= due_at:
                    if not self._work():
                        return
                    continue
                self._wake.wait(max(0.0, due_at - now))
        except Exception as exc:  # a bug: say so loudly rather than die silently
            logger.exception("listenKey keeper thread crashed")
            self._go_fatal(exc)
        finally:
            logger.debug("listenKey keeper thread exits")

    def _work(self) -> bool:
        """Renew (or re-create) once; return False when the thread must end."""
        with self._lock:
            need_new = self._need_new_key
        if need_new:
            return self._recreate()
        return self._renew()

    def _renew(self) -> bool:
        key = self.key
        if key is None:
            return False
        held = 0.0 if self._host is None else limiter().held_for(self._host)
        if held > 0:  # Retry-After from this host: no call before it ends
            with self._lock:
                self._next_renew_at = self._clock() + held
            return True
        try:
            self._rest.renew_listen_key(key, max_retries=0)
        except AuthError as exc:
            self._go_fatal(exc)
            return False
        except Exception as exc:
            if self._stop_event.is_set():
                return False
            if is_transient(exc):
                self._failed(f"renewal failed: {_describe(exc)}")
                return True
            reason = _describe(exc)
            with self._lock:
                self._need_new_key = True
                dead = self._unproven
                if dead:
                    self._unproven = False
                    self._dead_in_row += 1
                    self._dead_total += 1
                in_row = self._dead_in_row
                delay = 0.0 if in_row <= 1 else self._backoff.delay(in_row - 2)
                if delay > 0:
                    self._paced_creations += 1
                self._next_renew_at = self._clock() + delay  # at once the first time
            if not dead:
                logger.warning(
                    "listenKey renewal says the key is gone (%s); creating a new one", reason
                )
                return True
            logger.warning(
                "listenKey refused on arrival (%d in a row: %s); a new one in %.1fs",
                in_row,
                reason,
                delay,
            )
            every = DEFAULT_REPORT_PACING.every
            n = in_row - DEAD_KEYS_REPORT_AFTER
            if n >= 0 and n % every == 0:
                self._emit_status(
                    "dead_on_arrival",
                    f"{in_row} fresh listenKeys in a row were refused on arrival ({reason}); "
                    "creating new ones with backoff",
                )
            return True
        now = self._clock()
        with self._lock:
            self._renewals += 1
            self._failures = 0
            self._last_ok_at = now
            self._next_renew_at = now + self._interval
        logger.debug("listenKey renewed; next renewal in %.0fs", self._interval)
        self._emit_status("renewed", "listenKey renewed")
        return True

    def _recreate(self) -> bool:
        try:
            new_key = self._create(0)
        except AuthError as exc:
            self._go_fatal(exc)
            return False
        except Exception as exc:
            if self._stop_event.is_set():
                return False
            self._failed(f"could not create a new listenKey: {_describe(exc)}")
            return True
        now = self._clock()
        with self._lock:
            stopped = self._stopped
            old_key = self._key
            if not stopped:
                self._key = new_key
                self._unproven = True
                self._need_new_key = False
                self._recreations += 1
                self._failures = 0
                self._last_ok_at = now
                self._next_renew_at = now + self._interval
        if stopped:  # stop() ran meanwhile: do not leave the new key alive
            self._close_quietly(new_key, "stopped while re-creating")
            return False
        logger.warning("listenKey re-created; the private stream must reconnect")
        self._emit_status("recreated", "listenKey was gone; a new one was created")
        self._call("on_new_key", self._on_new_key, new_key)
        if old_key is not None and old_key != new_key:
            self._close_quietly(old_key, "replaced")
        return True

    def _failed(self, reason: str) -> None:
        with self._lock:
            attempt = self._failures
            self._failures += 1
            self._renew_failures += 1
            delay = self._backoff.delay(attempt)
            self._next_renew_at = self._clock() + delay
        logger.warning("listenKey %s; retry %d in %.1fs", reason, attempt + 1, delay)
        self._emit_status("renew_failed", f"{reason}; retrying in {delay:.1f}s")

    def _go_fatal(self, error: BaseException) -> None:
        with self._lock:
            self._fatal = error
            self._next_renew_at = None
        logger.error("listenKey keeper gives up: %s", _describe(error))
        what = "credentials rejected" if isinstance(error, AuthError) else "keeper failed"
        self._emit_status("fatal", f"{what}: {_describe(error)}")
        self._call("on_fatal", self._on_fatal, error)

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
