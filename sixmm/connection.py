"""One WebSocket connection and the one thread that owns it.

The thread runs a single loop — connect, let the session (re)subscribe, read until the socket
dies or goes stale, back off, repeat — with a ``finally`` that always leaves the connection
``CLOSED``. Reconnecting never happens inside a callback or by recursion. What the connection
carries (public topics, the private user stream) is decided by its :class:`Session`.

Thread-safety: ``start``, ``stop``, ``restart``, ``send`` and ``stats`` may be called from any
thread (``stop`` even from this connection's own thread, inside a callback).
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Optional

from .dispatch import Dispatcher
from .errors import AuthError, ConnectionLost, HandshakeRejected, ProtocolError
from .protocol.engine import Close, Fail, Gap, Ready, Report, Restart, Send, Streaming
from .protocol.framing import CLOSE_NORMAL, FrameError
from .protocol.reconnect import GiveUp
from .protocol.redact import scrub
from .ratelimit import ConnectGate
from .settings import Settings
from .states import ConnState, GapEvent, check_transition
from .supervisor import Health
from .tap import Tap
from .threads import OwnedThread
from .transport import ConnectionClosed, FrameTimeout, Transport

#: the longest a reader waits for its processing turn (see Connection._read_loop)
TURN_WAIT = 0.02
#: frames at least this large are fed with the cyclic collector paused (Session.on_message)
QUIET_GC_BYTES = 16384
#: a reader busy with large frames lets other threads run this often (Connection._read_frames)
YIELD_AFTER = 0.004
#: ... for this long (a sleep with the GIL released, long enough for a waiting thread to wake)
YIELD_FOR = 0.0002
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable
_monotonic, _sleep = time.monotonic, time.sleep  # real time (any injected clock aside)

__all__ = ["Connection", "Session"]

logger = logging.getLogger(__name__)


class Session:
    """What a connection carries: a shell around one pure session engine
    (:mod:`sixmm.protocol.engine`). Subclasses set ``engine`` and implement :meth:`url` and
    the hooks; the hooks run on the reader thread (``on_tick`` on the heartbeat thread).

    The engine is touched by one thread at a time, under :attr:`lock`. The reader holds it
    while it feeds the engine the frames of one socket read; another thread's request (a
    subscribe, a tick) is applied at once if the lock is free, else queued and applied by the
    holder right after it lets go (:meth:`pump`) -- so no thread ever waits for the lock, and
    an inline callback that subscribes (on the reader) cannot deadlock against a registration
    on another thread.
    """

    engine: Any

    def __init__(
        self,
        report: Callable[[BaseException], None],
        on_gap: Callable[[str, GapEvent], None],
        clock: Callable[[], float] = time.monotonic,
        dispatcher: Optional[Dispatcher] = None,
    ) -> None:
        self._dispatcher = dispatcher  # the engine's deliver sink is its submit
        self._report_error = report
        self._on_gap = on_gap
        self._clock = clock
        self.lock = threading.RLock()
        self._inbox: Deque[Callable[[], Any]] = collections.deque()
        self._conn: Optional[Connection] = None
        self._wall_offset = time.time() - time.monotonic()
        #: The engine's next deadline as of the supervisor's last turn (None: none pending).
        self.due: Optional[float] = None

    def bind(self, conn: Connection) -> None:
        """``conn`` carries this session: the engine's deliveries go to its lane."""
        self._conn = conn
        self.engine.lane = conn.name

    def url(self) -> str:
        """The URL to connect to (called before every attempt; may do blocking REST work and
        raise :class:`ConnectionLost`, ``ApiError`` or a terminal :class:`AuthError`)."""
        raise NotImplementedError

    def on_open(self, conn: Connection) -> None:
        """The socket is open: (re)subscribe, or wait for the auth ack."""
        if self._dispatcher is not None:  # the started dispatcher's fast path
            self.engine.deliver = self._dispatcher.submit
        with self.lock:
            self.engine.wall_offset = time.time() - self._clock()
            self.engine.opened(self._clock())
            self.apply(conn)
        self.pump()

    def on_message(self, conn: Connection, payload: bytes) -> None:
        """One inbound data message (the hot path; the reader holds :attr:`lock`). The
        reader loop (``Connection._read_frames``) does the same for a small frame inline."""
        engine = self.engine
        if len(payload) < QUIET_GC_BYTES or not _gc_isenabled():
            engine.receive(payload, self._clock())
        else:
            # A large frame (a snapshot) decodes into thousands of small lists that live
            # until its levels are checked and loaded (untracked, in C). Young collections
            # in between would promote them, and enough promotions start a full collection
            # of the whole process with the GIL held (10-30 ms each, several per resync
            # storm: a GUI's missed ticks). Paused, the collector runs after, on less. (Inline
            # callbacks for this frame run inside the pause too; nothing is lost, only later.)
            _gc_disable()
            try:
                engine.receive(payload, self._clock())
            finally:
                _gc_enable()
        if engine.actions:
            self.apply(conn)

    def on_closed(self, conn: Connection, reason: str) -> None:
        """The socket is gone (any reason): mark books unsynced, note the outage start."""
        with self.lock:
            self.engine.closed(reason, self._clock())
            self.apply(conn)
        self.pump()

    def on_tick(self, conn: Connection, now: float) -> None:
        """The supervisor's turn (at least once a second): the engine's deadlines. They are
        read under the lock: the reader may be changing what they are computed from; the
        next one is left in :attr:`due` for the supervisor to wake for."""
        engine = self.engine

        def tick() -> None:
            deadline = engine.next_deadline()
            if deadline is not None and now >= deadline:
                engine.tick(now, conn.last_rx)
                deadline = engine.next_deadline()
            self.due = deadline

        self.submit(tick)

    def ping_text(self) -> str:
        return str(self.engine.ping_text())

    # -- one thread at a time -----------------------------------------------------------

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (which feeds the engine) under the lock: now if it is free, else right
        after its holder lets go. Any thread."""
        self._inbox.append(fn)
        self.pump()

    def pump(self) -> None:
        """Apply queued requests if nobody holds the lock (every holder calls this after
        letting go, so nothing queued is left behind)."""
        inbox = self._inbox
        while inbox:
            if not self.lock.acquire(blocking=False):
                return  # the holder pumps when it lets go
            try:
                while inbox:
                    inbox.popleft()()
                    if self.engine.actions and self._conn is not None:
                        self.apply(self._conn)
            finally:
                self.lock.release()

    def apply(self, conn: Connection) -> None:
        """Carry out what the engine said (lock held)."""
        close: Optional[str] = None
        for action in self.engine.take():
            cls = action.__class__
            if cls is Send:
                conn.send(action.text)
            elif cls is Report:
                self._report_error(action.error)
            elif cls is Streaming:
                conn.mark_streaming(action.reason)
            elif cls is Close:
                close = action.reason
            else:
                self.on_action(conn, action)
        if close is not None:
            raise ConnectionClosed(close)

    def on_action(self, conn: Connection, action: Any) -> None:
        """The actions that are not about the socket (subclasses add their own)."""
        cls = action.__class__
        if cls is Ready:
            action.route.ready.set()
        elif cls is Gap:
            self._on_gap(conn.name, GapEvent(action.topic, action.start, action.end))
        elif cls is Restart:
            conn.restart(action.reason)
        elif cls is Fail:
            conn.fail(action.error)
        else:  # pragma: no cover - a new action without a handler is a bug
            raise TypeError(f"unhandled session action {action!r}")


StateListener = Callable[["Connection", ConnState, str], None]


class Connection:
    """A self-healing WebSocket connection: named thread ``sixmm-<name>``.

    ``stale_after`` seconds without a *completed* inbound frame (data, ping, pong, close) make
    the reader drop the socket and reconnect: a frame that starts but does not complete within
    ``stale_after`` is silence, however many of its bytes trickle in. Time spent in inline
    callbacks does not count as silence: the clock only runs while the reader is waiting on
    the socket. ``connect_timeout`` bounds each whole attempt (TCP + TLS + upgrade), and
    :meth:`stop` aborts an attempt in any phase.
    """

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        settings: Settings,
        on_state: StateListener,
        report: Callable[[BaseException], None] = lambda exc: None,
        clock: Callable[[], float] = time.monotonic,
        tap: Optional[Tap] = None,
        gate: Optional[ConnectGate] = None,
        health: Optional[Health] = None,
        turn: Optional[threading.Lock] = None,
    ) -> None:
        self.name = name
        self.session = session
        self.settings = settings
        self._on_state = on_state
        self._report = report
        self._clock = clock
        self._tap = tap
        self._gate = gate
        #: the manager's processing turn, shared by its connections (None: not shared)
        self._turn = turn
        #: staleness, reconnect and report decisions (the supervisor's rule book)
        self.health = health if health is not None else Health(settings)
        self._owner = OwnedThread(f"sixmm-{name}", self._run)
        self._stop = self._owner.stopping
        self._wake = self._owner.wake
        self._terminal: Optional[BaseException] = None
        self._transport: Optional[Transport] = None
        self._pending: Optional[Transport] = None  # the transport being opened
        self.state = ConnState.IDLE
        # statistics (written by the reader thread only)
        self.messages = 0
        self.yields = 0  # pauses to let other threads run (a storm of large frames)
        self.connects = 0
        self.reconnects = 0
        self.failed_attempts = 0
        self.last_reason = ""
        self.connected_since: Optional[float] = None
        self._bytes_closed = 0  # bytes of previous sockets
        self.last_rx = clock()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        self._owner.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket and join the thread within ``timeout`` (idempotent; never joins
        itself when called from a callback on this connection's thread)."""
        self._stop.set()
        self._abort_all()
        self._owner.stop(timeout)

    def restart(self, reason: str) -> None:
        """Drop the current socket and reconnect, e.g. with a new key: at once the first
        time; until a socket has lived ``stable_after`` seconds, every further reconnect goes
        through the backoff (a key refused on arrival cannot start a storm)."""
        reason = scrub(reason)
        logger.info("connection %s: restarting (%s)", self.name, reason)
        self.health.restart()
        self.last_reason = reason
        self._wake.set()
        transport = self._transport
        if transport is not None:
            transport.abort()

    def fail(self, error: BaseException) -> None:
        """Stop for good with a terminal error (e.g. rejected credentials): state ``LOST``."""
        self._terminal = error
        self._stop.set()
        self._wake.set()
        self._abort_all()

    def _abort_all(self) -> None:
        """Abort the open transport and the one being opened, if any (any thread)."""
        for transport in (self._pending, self._transport):
            if transport is not None:
                transport.abort()

    @property
    def alive(self) -> bool:
        """True while the reader thread runs."""
        return self._owner.alive

    @property
    def is_open(self) -> bool:
        """True while a socket is open (subscriptions can be sent)."""
        return self._transport is not None

    # -- used by sessions and the heartbeat ---------------------------------------------

    def send(self, text: str) -> bool:
        """Send a text frame if the socket is open; False if it is not (the session replays
        its desired state on the next connect anyway)."""
        transport = self._transport
        if transport is None:
            return False
        try:
            transport.send_text(text)
        except ConnectionClosed as exc:
            logger.info("connection %s: %s", self.name, exc)
            transport.abort()
            return False
        if self._tap is not None:
            self._tap.sent(self.name, text)
        return True

    def ping(self) -> None:
        """Send a websocket-protocol ping (the heartbeat thread calls this)."""
        transport = self._transport
        if transport is not None:
            try:
                transport.ping()
            except ConnectionClosed:
                transport.abort()

    def mark_streaming(self, reason: str) -> None:
        """The session saw the server accept us (ack or auth): state ``CONNECTED``."""
        if self.state is ConnState.OPEN:
            self._set_state(ConnState.STREAMING, reason)

    @property
    def paced_restarts(self) -> int:
        """Restarts refused an immediate reconnect (a storm held off)."""
        return self.health.paced_restarts

    @property
    def bytes_in(self) -> int:
        transport = self._transport
        return self._bytes_closed + (transport.bytes_in if transport is not None else 0)

    def stats(self) -> Dict[str, Any]:
        """Counters for ``StreamManager.stats()``."""
        now = self._clock()
        return {
            "state": self.state.name,
            "messages": self.messages,
            "yields": self.yields,
            "bytes": self.bytes_in,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "failed_attempts": self.failed_attempts,
            "last_frame_age": round(now - self.last_rx, 3),
            "connected_for": round(now - self.connected_since, 3) if self.connected_since else None,
            "last_reason": self.last_reason,
        }

    # -- the loop -----------------------------------------------------------------------

    def _set_state(self, new: ConnState, reason: str) -> None:
        check_transition(self.state, new)
        self.state = new
        self.last_reason = reason
        logger.log(
            logging.INFO if new is not ConnState.CONNECTING else logging.DEBUG,
            "connection %s: %s (%s)",
            self.name,
            new.value,
            reason,
        )
        try:
            self._on_state(self, new, reason)
        except Exception:  # the listener is ours, but never let it kill the reader
            logger.exception("state listener failed on %s", self.name)

    def _run(self) -> None:
        health = self.health
        reason = "starting"
        try:
            while not self._stop.is_set():
                health.connecting()
                self._set_state(ConnState.CONNECTING, reason)
                if self._gate is not None and not self._gate.wait(self._stop):
                    break  # stopped while queued for a connect token (sixmm.ratelimit)
                opened_at: Optional[float] = None
                url = ""
                try:
                    url = self.session.url()
                    transport = self._open(url)
                except AuthError as exc:
                    self._terminal = exc
                    reason = f"credentials rejected: {exc}"
                    break
                except Exception as exc:  # REST trouble while building the URL included
                    reason = f"connect failed: {exc}"
                    self.failed_attempts += 1
                    self._connect_failed(exc, reason)
                    if self._tap is not None:
                        self._tap.connect_failed(self.name, reason)
                else:
                    reason, opened_at = self._serve(transport, url)
                if self._stop.is_set():
                    break
                held = self._gate.held_for() if self._gate is not None else 0.0
                if opened_at is not None:
                    decision = health.after_socket(opened_at, self._clock(), held)
                else:
                    decision = health.after_failure(self._clock(), held)
                if isinstance(decision, GiveUp):
                    reason = f"gave up after {decision.attempts} attempts: {reason}"
                    self._terminal = ConnectionLost(reason)
                    break
                if decision.immediate:
                    self._set_state(ConnState.BACKOFF, f"{reason}; reconnecting now")
                    self._wake.clear()
                    continue
                self._set_state(ConnState.BACKOFF, f"{reason}; retry in {decision.delay:.2f}s")
                self._backoff_wait(decision.delay)
        except BaseException as exc:  # a bug in sixmm: log it, never die silently
            logger.exception("connection %s: reader loop crashed", self.name)
            reason = f"internal error: {exc!r}"
            self._terminal = exc
        finally:
            terminal = self._terminal
            if terminal is not None and not isinstance(terminal, (KeyboardInterrupt, SystemExit)):
                self._report(terminal)
            if self._terminal is None:
                reason = "stopped"
            self._set_state(ConnState.CLOSED, reason)

    def _open(self, url: str) -> Transport:
        """Open a transport to ``url`` within ``connect_timeout``; :meth:`stop` aborts it."""
        settings = self.settings
        transport = Transport(
            url,
            timeout=settings.connect_timeout,
            ca_certs=settings.ca_certs,
            max_frame_bytes=settings.max_frame_bytes,
        )
        self._pending = transport
        try:
            if self._stop.is_set():  # stop() came before _pending was visible to it
                transport.abort()
            transport.open()
        finally:
            self._pending = None
        return transport

    def _backoff_wait(self, delay: float) -> None:
        """Wait ``delay`` seconds; ``stop()`` ends it, and so does a ``restart()`` while the
        one immediate retry is unused."""
        end = time.monotonic() + delay
        health = self.health
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(left)
            self._wake.clear()
            if health.cut_short():
                return
        if not self._stop.is_set():
            health.wait_over()

    def _connect_failed(self, error: BaseException, reason: str) -> None:
        """Hold the host on a rate-limit refusal; report the failure to ``on_error``, paced:
        the first, on a change of reason, then every N-th (``ReportPacing``)."""
        if self._gate is not None:
            self._gate.rejected(error)
        if self.health.report_failure(reason):
            if isinstance(error, HandshakeRejected):
                self._report(error)  # its text is sixmm's own; .status/.retry_after for users
            else:
                self._report(ConnectionLost(scrub(reason)))

    def _serve(self, transport: Transport, url: str) -> tuple[str, float]:
        """Run one socket until it ends; return (why it ended, when it opened)."""
        opened_at = self._clock()
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self.connected_since = opened_at
        self._transport = transport
        reason = "closed"
        close_code = CLOSE_NORMAL
        try:
            if self._stop.is_set():  # stop() raced with connect: it could not abort us
                return "stopped", opened_at
            self._set_state(ConnState.OPEN, "socket open")
            if self._tap is not None:
                self._tap.opened(self.name, url)
            transport.settimeout(min(1.0, self.settings.stale_after / 4))
            self.last_rx = self._clock()
            self.session.on_open(self)
            reason = self._read_loop(transport)
        except ConnectionClosed as exc:
            reason = str(exc)
        except ProtocolError as exc:
            if isinstance(exc, FrameError):
                close_code = exc.code
            reason = f"protocol error: {exc}"
            self._report(exc)
        except Exception as exc:
            logger.exception("connection %s: error while reading", self.name)
            reason = f"error: {type(exc).__name__}: {exc}"
        finally:
            self._transport = None
            self._bytes_closed += transport.bytes_in
            self.connected_since = None
            transport.close(close_code)
            if self._tap is not None:
                self._tap.closed(self.name, reason)
            try:
                self.session.on_closed(self, reason)
            except Exception:
                logger.exception("connection %s: session close hook failed", self.name)
        if self._stop.is_set():
            reason = "stopped"
        return reason, opened_at

    def _read_loop(self, transport: Transport) -> str:
        """Move bytes from the socket into the decoder and messages to the session until the
        socket ends, stop() is called, or no frame completes within ``stale_after``.

        The session's lock is held while the frames of one socket read are fed to it, and let
        go (and queued requests applied) before the next read."""
        session = self.session
        lock = session.lock
        turn = self._turn
        if turn is None:
            try:
                return self._read_frames(transport, lock.acquire, lock.release, session.pump)
            finally:
                if lock._is_owned():  # type: ignore[attr-defined]
                    lock.release()
        # The readers of one manager take turns feeding their sessions. Under the GIL they
        # cannot run Python at the same time anyway; without turns, two CPU-bound readers
        # (a resync storm) hand the GIL to each other at every socket read and a GUI's main
        # thread, which only asks for the GIL after a 5 ms switch interval, loses the race to
        # them again and again (40 ms ticks). A reader waiting for its turn waits on a lock,
        # with the GIL released. The wait is bounded: a callback blocking on one connection
        # delays another's reads by at most TURN_WAIT each.
        acquire, release = turn.acquire, turn.release
        mine = [False]

        def hold() -> None:
            mine[0] = acquire(True, TURN_WAIT)
            lock.acquire()

        def let_go() -> None:
            lock.release()
            if mine[0]:
                mine[0] = False
                release()

        try:
            return self._read_frames(transport, hold, let_go, session.pump)
        finally:
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()
            if mine[0]:
                mine[0] = False
                release()

    def _read_frames(
        self,
        transport: Transport,
        hold: Callable[[], Any],
        let_go: Callable[[], None],
        pump: Callable[[], None],
    ) -> str:
        session = self.session
        on_message = session.on_message
        # Session.on_message's common case (a frame under QUIET_GC_BYTES) is inlined below:
        # the engine's receive is then the one Python call per frame
        engine = session.engine
        receive = engine.receive
        apply = session.apply
        session_clock = session._clock
        next_frame = transport.decoder.next_frame
        fill = transport.fill
        control = transport.control
        clock = self._clock
        stop = self._stop
        stale = self.health.stale
        tap = self._tap
        completed = False  # a frame completed since the clock was last read
        held = False
        yielded_at = _monotonic()
        while not stop.is_set():
            item = next_frame()
            if item is None:  # the buffer holds no complete frame: read the socket
                if held:
                    held = False
                    let_go()
                    pump()
                now = clock()
                if completed:
                    completed = False
                    self.last_rx = now
                else:
                    why = stale(now, self.last_rx)
                    if why is not None:
                        return why
                try:
                    fill()
                except FrameTimeout:
                    pass
                continue
            completed = True
            opcode, payload = item
            if opcode > 2:  # ping, pong, close
                control(opcode, payload)
                continue
            self.messages += 1
            if not held:
                hold()
                held = True
            if tap is not None:  # under the lock: recorded in the order the session saw it
                tap.received(self.name, payload)
            if len(payload) < QUIET_GC_BYTES:
                receive(payload, session_clock())
                if engine.actions:
                    apply(self)
            else:
                on_message(self, payload)
                # A storm of large frames (snapshots) keeps the data ready: this thread gives
                # the GIL up at every socket read, but takes it back before a waiting thread
                # wakes, and every such hand-over restarts that thread's switch interval (5 ms)
                # before it may ask for the GIL: a GUI's main thread waited 40 ms and more.
                # A real pause, its turn still held (the other readers wait), lets it run.
                if _monotonic() - yielded_at > YIELD_AFTER:
                    _sleep(YIELD_FOR)
                    yielded_at = _monotonic()
                    self.yields += 1
        return "stopped"
