"""Replaying a recording through the very code a live session runs.

:class:`ReplayManager` is a :class:`~sixmm.StreamManager` whose connections are
:class:`ReplayConnection` objects: instead of a socket, one driver thread (``sixmm-replay``)
reads the recording and feeds each recorded open, frame and close to the same
:class:`~sixmm.public.PublicSession` / :class:`~sixmm.private.UserSession` objects, with the
same decoding, routing, book checks and dispatcher. So a gap or a drop in the recording gives
the same unsynced window and the same resync, and callbacks receive the same models in the
same order.

What replay has to translate:

- **Request ids.** The replayed sessions make their own request ids; each recorded ack is
  rewritten to the id of the replayed request with the same op that awaits its topics (first
  come, first served: deterministic).
- **Clocks.** The sessions' clock is the recording's clock (``mono`` of the event being fed),
  so ack deadlines, report pacing and late-push windows behave as recorded; gap windows use
  the recorded receive times.
- **Topics to connections.** A topic is placed on the replayed connection with the name of the
  recorded connection that subscribed it (a topic the recording never subscribed gets a
  connection that never opens: its callbacks are simply never called).
- **Heartbeat.** None: pings and ack timeouts would depend on real time.

Thread-safety: as :class:`~sixmm.StreamManager`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from json.decoder import scanstring as _scanstring  # type: ignore[attr-defined]
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import attrs

from .connection import QUIET_GC_BYTES, Connection
from .errors import ProtocolError
from .manager import StreamManager
from .private import UserSession
from .protocol._speedups import load
from .public import PublicSession
from .recording import FORMAT, VERSION, open_text
from .states import ConnState, GapEvent
from .threads import OwnedThread
from .transport import ConnectionClosed

__all__ = ["RecordingError", "ReplayConnection", "ReplayManager", "read_recording"]

logger = logging.getLogger(__name__)


class RecordingError(ProtocolError):
    """The file is not a sixmm recording (or of a newer format version)."""


def read_recording(path: str) -> Tuple[Dict[str, Any], Iterator[Dict[str, Any]], Dict[str, int]]:
    """``(header, events, info)`` of a recording. ``events`` is a lazy iterator of the event
    dicts; a truncated last line (a crash) or a truncated gzip stream ends it quietly
    (``info["truncated"] = 1``); a corrupt line inside the file is skipped and counted
    (``info["bad_lines"]``)."""
    header, lines, info = _open_lines(path)

    def events() -> Iterator[Dict[str, Any]]:
        loads = json.loads
        for line in lines:
            try:
                event = loads(line)
            except ValueError:
                info["bad_lines"] += 1
                continue
            if isinstance(event, dict):
                info["events"] += 1
                yield event

    return header, events(), info


def _header_of(f: Any, path: str) -> Tuple[Dict[str, Any], int]:
    """The validated header of an open recording and its length in bytes (closes ``f`` and
    raises :class:`RecordingError` if it is not a recording)."""
    try:
        first = f.readline()
        header = json.loads(first) if first.endswith(b"\n") else None
    except (ValueError, EOFError, OSError) as exc:
        f.close()
        raise RecordingError(f"{path}: not a sixmm recording ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        f.close()
        raise RecordingError(f"{path}: not a sixmm recording (no {FORMAT} header)")
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        f.close()
        raise RecordingError(
            f"{path}: format version {header.get('version')} is newer than {VERSION}"
        )
    return header, len(first)


def _open_lines(path: str) -> Tuple[Dict[str, Any], Iterator[bytes], Dict[str, int]]:
    """The header, then the complete event lines (bytes), and the info counters."""
    f = open_text(path)
    header, _n = _header_of(f, path)
    info = {"truncated": 0, "bad_lines": 0, "events": 0}

    def lines() -> Iterator[bytes]:
        try:
            while True:
                try:
                    line = f.readline()
                except (EOFError, OSError):  # gzip stream cut by a crash
                    info["truncated"] = 1
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):
                    info["truncated"] = 1
                    return
                yield line
        finally:
            f.close()

    return header, lines(), info


_BLOCK = 1 << 18


def _open_blocks(path: str) -> Tuple[Dict[str, Any], Iterator[bytes], Dict[str, int]]:
    """Like :func:`_open_lines`, but the complete lines come in blocks (bytes, each line ending
    in ``\\n``), read in large chunks: the replay's hot path."""
    f = open_text(path)
    header, start = _header_of(f, path)
    info = {"truncated": 0, "bad_lines": 0, "events": 0}
    return header, _blocks(f, path, start, info), info


def _blocks(f: Any, path: str, start: int, info: Dict[str, int]) -> Iterator[bytes]:
    try:
        consumed, rest = start, b""
        while True:
            try:
                data = f.read(_BLOCK)
            except (EOFError, OSError):  # a gzip stream cut by a crash: the tail line by line
                yield from _tail(path, consumed - len(rest), info)
                return
            if not data:
                break
            consumed += len(data)
            if rest:
                data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield data if cut == len(data) else data[:cut]
        if rest:
            info["truncated"] = 1
    finally:
        f.close()


def _tail(path: str, offset: int, info: Dict[str, int]) -> Iterator[bytes]:
    f = open_text(path)
    try:
        f.seek(offset)
        block: List[bytes] = []
        while True:
            try:
                line = f.readline()
            except (EOFError, OSError):
                info["truncated"] = 1
                break
            if not line:
                break
            if not line.endswith(b"\n"):
                info["truncated"] = 1
                break
            block.append(line)
        if block:
            yield b"".join(block)
    finally:
        f.close()


def _placement(path: str) -> Tuple[Dict[str, str], str, bool]:
    """topic -> name of the recorded connection that first subscribed it; how the private
    stream authenticated (``"hmac"``: a listenKey, or ``"token"``); whether it has one."""
    placed: Dict[str, str] = {}
    user_kind = "hmac"
    has_user = False
    _h, lines, _info = _open_lines(path)
    for line in lines:  # only open and sent lines matter: skip the frames unparsed
        if b'"sent"' not in line and b'"open"' not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        kind = ev.get("ev")
        if kind == "open" and ev.get("conn") == "user":
            has_user = True
        if kind == "open" and ev.get("conn") == "user" and "token=" in str(ev.get("url")):
            user_kind = "token"
        if kind != "sent":
            continue
        try:
            obj = json.loads(ev.get("text", ""))
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("op") == "subscribe":
            for topic in obj.get("args") or ():
                if isinstance(topic, str):
                    placed.setdefault(topic, str(ev.get("conn", "")))
    return placed, user_kind, has_user


def recorded_topics(path: str) -> Tuple[List[str], bool]:
    """The public topics a recording subscribed (in order) and whether it has a private
    stream."""
    placed, _kind, has_user = _placement(path)
    return list(placed), has_user


_recfast: Any = load("_recfast")  # parse_recv: the C twin of _fast_recv
_RECV = ',"ev":"recv","text":"'
_RECV_LEN = len(_RECV)


def _fast_recv(line: str) -> Optional[Tuple[int, int, str, str]]:
    """``(t, us, conn, text)`` of a received-frame line in the writer's own field order, or
    None (then the line is parsed as JSON): the hot path of a replay."""
    i = line.find(_RECV)
    if i < 0 or not line.startswith('{"t":'):
        return None
    j = line.find(',"us":', 0, i)
    k = line.find(',"conn":"', j, i)
    if j < 0 or k < 0:
        return None
    name = line[k + 9 : i - 1]
    if "\\" in name or '"' in name:
        return None
    try:
        text, end = _scanstring(line, i + _RECV_LEN)
        if line[end:].rstrip() != "}":
            return None
        return int(line[5:j]), int(line[j + 6 : k]), name, text
    except ValueError:
        return None


class _ReplayKeeper:
    """Stands in for the listenKey keeper: the recording says what happened to the key."""

    key = "replay"

    def start(self) -> str:
        return self.key

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def key_rejected(self, reason: str) -> None:
        pass

    def key_accepted(self) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def stats(self) -> Dict[str, Any]:
        return {"replay": True}


class _ReplayRest:
    """What ``user()`` needs of a RestClient when no network and no credentials are used."""

    def __init__(self, auth_kind: str) -> None:
        self.auth_kind = auth_kind
        self.token = None
        self.on_call = None


class _Request:
    __slots__ = ("op", "remaining", "rid")

    def __init__(self, rid: str, op: str, topics: Set[str]) -> None:
        self.rid = rid
        self.op = op
        self.remaining = topics


class ReplayConnection(Connection):
    """A :class:`~sixmm.connection.Connection` fed by the replay driver instead of a socket."""

    def __init__(self, name: str, session: Any, **kwargs: Any) -> None:
        kwargs.pop("tap", None)
        super().__init__(name, session, **kwargs)
        self._open_now = False
        self._started_flag = False
        self._requests: List[_Request] = []
        self._req_lock = threading.Lock()
        self._failed: Optional[BaseException] = None

    # -- what a manager and a session call ------------------------------------------------

    def start(self) -> None:
        self._started_flag = True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()

    def restart(self, reason: str) -> None:
        logger.debug("replay %s: restart (%s) ignored: the recording decides", self.name, reason)

    def fail(self, error: BaseException) -> None:
        self._failed = error

    @property
    def alive(self) -> bool:
        return self._started_flag and self.state is not ConnState.CLOSED

    @property
    def is_open(self) -> bool:
        return self._open_now

    def send(self, text: str) -> bool:
        if not self._open_now:
            return False
        try:
            obj = json.loads(text)
        except ValueError:
            return True
        if isinstance(obj, dict) and obj.get("op") in ("subscribe", "unsubscribe"):
            topics = {t for t in obj.get("args") or () if isinstance(t, str)}
            with self._req_lock:
                self._requests.append(_Request(str(obj.get("id")), obj["op"], topics))
        return True

    def ping(self) -> None:
        pass

    @property
    def bytes_in(self) -> int:
        return self._bytes_closed

    # -- what the driver calls -------------------------------------------------------------

    def _to(self, new: ConnState, reason: str) -> None:
        if self.state is ConnState.CLOSED:
            return
        if new is ConnState.OPEN and self.state is not ConnState.CONNECTING:
            self._to(ConnState.CONNECTING, reason)
        if new is ConnState.BACKOFF and self.state in (ConnState.IDLE, ConnState.BACKOFF):
            self._to(ConnState.CONNECTING, reason)
        self._set_state(new, reason)

    def _replay_open(self) -> None:
        if self._open_now:
            self._replay_close("reopened")
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        with self._req_lock:
            self._requests.clear()
        self._to(ConnState.OPEN, "socket open")
        self._open_now = True
        self.session.on_open(self)

    def _replay_frame(self, payload: bytes) -> None:
        if not self._open_now or self._failed is not None:
            return
        self.messages += 1
        self._bytes_closed += len(payload)
        try:
            self.session.on_message(self, payload)
        except ConnectionClosed:
            pass  # e.g. a refused auth: the recording's close follows
        except ProtocolError as exc:
            self._report(exc)

    def _replay_close(self, reason: str, final: bool = False) -> None:
        if self._open_now:
            self._open_now = False
            self.session.on_closed(self, reason)
        failed = self._failed
        if failed is not None:
            self._report(failed)
            self._to(ConnState.CLOSED, f"credentials rejected: {failed}")
        elif final:
            self._to(ConnState.CLOSED, reason)
        else:
            self._to(ConnState.BACKOFF, reason)

    def _replay_connect_failed(self, reason: str) -> None:
        self.failed_attempts += 1
        self._to(ConnState.BACKOFF, reason)

    def _map_ack(self, obj: Dict[str, Any], recorded: Dict[str, Tuple[str, List[str]]]) -> bool:
        """Rewrite a recorded ack's id to the replayed request it answers (True if found)."""
        rec = recorded.get(str(obj.get("id")))
        data = obj.get("data")
        topics = [t for t in data if isinstance(t, str)] if isinstance(data, list) else None
        if topics is None or (not topics and not obj.get("success", True)):
            topics = list(rec[1]) if rec is not None else []
        op = obj.get("event")
        with self._req_lock:
            for req in self._requests:
                if req.op != op:
                    continue
                hit = [t for t in topics if t in req.remaining] if topics else list(req.remaining)
                if not hit:
                    continue
                req.remaining.difference_update(hit)
                if not req.remaining:
                    self._requests.remove(req)
                obj["id"] = req.rid
                obj["data"] = hit
                return True
        return False


class ReplayManager(StreamManager):
    """A :class:`~sixmm.StreamManager` over a recording (see the module docstring).

    Made by :meth:`StreamManager.replay`. ``stats()["replay"]`` counts events fed, lines
    skipped and whether the file ended in a truncated line.

    Thread-safety: as :class:`~sixmm.StreamManager`.
    """

    def __init__(self, path: str, *, speed: Optional[float] = None, **kwargs: Any) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None: as fast as possible)")
        header, _events, _info = read_recording(path)  # fail early on a bad file
        kwargs.pop("record", None)
        kwargs.pop("rest", None)
        url = kwargs.pop("url", None) or "ws://127.0.0.1/replay"
        kwargs.setdefault("allow_insecure", True)
        super().__init__(url, **kwargs)
        self.path = str(path)
        self.header = header
        self._speed = speed
        self._placed, self._user_kind, _has_user = _placement(self.path)
        self._mono = 0.0
        self._t_ms = 0
        # the private stream of the recording used a listenKey (a keeper) or a token
        self.rest = _ReplayRest(self._user_kind)  # type: ignore[assignment]
        self._new_connection = ReplayConnection
        self._session_clock = self._clock
        self._driver = _Driver(self)
        self._supervisor = self._driver  # type: ignore[assignment]  # same life cycle

    def _clock(self) -> float:
        return self._mono

    def _session_with_room(self, topic: str) -> PublicSession:
        name = self._placed.get(topic, "public-unrecorded")
        for session, conn in self._public:
            if conn.name == name:
                return session
        return self._new_public_session(name)

    def _new_keeper(self, conn_holder: List[Connection]) -> Any:
        return _ReplayKeeper()

    def _emit_gap(self, lane: str, gap: GapEvent) -> None:
        super()._emit_gap(lane, attrs.evolve(gap, end=self._t_ms))

    def start(self) -> StreamManager:
        """Start; the recording plays at once if something is registered already (else from
        the first :meth:`wait` or :meth:`play`, so that registrations made inside a ``with``
        block see the whole recording)."""
        super().start()
        with self._lock:
            registered = bool(self._routes) or self._user is not None
        if registered:
            self.play()
        return self

    def play(self) -> None:
        """Begin feeding the recording (idempotent; :meth:`wait` calls it)."""
        if not self._started:
            self.start()
        self._driver.go.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Play the recording (if not yet playing) and block until it is exhausted (True),
        :meth:`stop` was called (True), or ``timeout`` passed (False)."""
        if self._started and not self._stopping:
            self._driver.go.set()
        return super().wait(timeout)

    def _rate_limit_stats(self) -> Dict[str, Any]:
        return {}  # a replay talks to no host

    def stats(self) -> Dict[str, Any]:
        out = super().stats()
        out["replay"] = self._driver.stats()
        return out

    def __repr__(self) -> str:
        return f"<ReplayManager {self.path} state={self._overall_state().value}>"


class _Driver:
    """The ``sixmm-replay`` thread: reads the recording and feeds the replay connections."""

    def __init__(self, manager: ReplayManager) -> None:
        self._m = manager
        self._worker = OwnedThread("sixmm-replay", self._run)
        self._stop = self._worker.stopping
        self.go = threading.Event()
        self.pings_sent = 0
        self.engine_turns = 0
        self.fed = 0
        self.finished = False
        self._speed: Optional[float] = None
        self._stopping = False
        self._info: Dict[str, int] = {}

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout, busy="feeding a callback")

    def stats(self) -> Dict[str, Any]:
        return {"events": self.fed, "finished": self.finished, **self._info}

    def _conns(self) -> Dict[str, ReplayConnection]:
        return {c.name: c for c in self._m._connections() if isinstance(c, ReplayConnection)}

    def _run(self) -> None:
        m = self._m
        try:
            while not self.go.wait(0.25):
                if self._stop.is_set():
                    return
            if not self._stop.is_set():
                self._feed()
        except Exception:
            logger.exception("replay of %s failed", m.path)
        finally:
            for conn in self._conns().values():
                if conn.state is not ConnState.CLOSED:
                    try:
                        conn._replay_close("recording ended", final=True)
                    except Exception:
                        logger.exception("replay: closing %s failed", conn.name)
            self.finished = True
            m._done.set()

    def _feed(self) -> None:
        m = self._m
        _header, blocks, info = _open_blocks(m.path)
        self._info = info
        recorded: Dict[str, Dict[str, Tuple[str, List[str]]]] = {}
        speed = self._speed = m._speed
        self._stopping = False
        wall0: Optional[float] = None
        mono0 = 0.0
        stop = self._stop
        loads = json.loads
        fast = _fast_recv
        c_parse = _recfast.parse_recv if _recfast is not None else None
        # as fast as it can: C feeds the received frames, the loop below every other line
        c_feed: Any = _recfast.feed_recv if _recfast is not None and speed is None else None
        c_fed = 0
        quiet = QUIET_GC_BYTES

        def declined() -> Iterator[bytes]:
            """The lines of ``block`` that ``c_feed`` leaves (other events, acks); it feeds
            the rest with the current ``handlers``."""
            nonlocal c_fed
            pos, n = 0, len(block)
            while pos < n:
                pos, k = c_feed(block, pos, handlers, m, ConnectionClosed, ProtocolError, quiet)
                c_fed += k
                if pos < n:
                    end = block.index(b"\n", pos)
                    yield block[pos:end]
                    pos = end + 1

        def handlers_of(conns: Dict[str, ReplayConnection]) -> Dict[str, Tuple[Any, ...]]:
            # what _recfast.feed_recv calls for each connection's frames (the Python loop
            # below uses the first two)
            return {
                name: (c, ses.on_message, ses.engine.receive, ses.engine, ses.apply)
                for name, c in conns.items()
                for ses in (c.session,)
            }

        for block in blocks:
            if stop.is_set():
                return
            conns = self._conns()  # registrations may add connections while replaying
            handlers = handlers_of(conns)
            fed = c_fed = 0
            for raw_line in block[:-1].split(b"\n") if c_feed is None else declined():
                ev: Optional[Dict[str, Any]] = None
                parsed = c_parse(raw_line) if c_parse is not None else None
                if parsed is not None:
                    t_ms, us, name, payload = parsed
                elif c_parse is None and (py := fast(raw_line.decode("utf-8", "replace"))):
                    t_ms, us, name, text = py
                    payload = text.encode("utf-8")
                else:
                    try:
                        ev = loads(raw_line)
                    except ValueError:
                        info["bad_lines"] += 1
                        continue
                    if not isinstance(ev, dict):
                        continue
                    t_ms = int(ev.get("t", 0))
                    us = int(ev.get("us", 0))
                    name = str(ev.get("conn", ""))
                fed += 1
                mono = us / 1e6
                if speed is not None:
                    if wall0 is None:
                        wall0, mono0 = time.monotonic(), mono
                    delay = (mono - mono0) / speed - (time.monotonic() - wall0)
                    if delay > 0 and stop.wait(delay):
                        return
                m._mono = mono
                m._t_ms = t_ms
                if ev is not None:
                    if name not in conns:  # a connection registered since the block began?
                        conns = self._conns()
                        handlers = handlers_of(conns)
                    self._event(ev, conns.get(name), name, recorded)
                    continue
                handler = handlers.get(name)  # the hot path: a received text frame
                if handler is None:
                    continue
                conn, on_message = handler[0], handler[1]
                if not conn._open_now or conn._failed is not None:
                    continue
                if b'"topic"' not in payload and b'"id"' in payload:  # pushes: found early
                    text = self._ack(conn, payload.decode("utf-8"), recorded.get(name, {}))
                    payload = text.encode("utf-8")
                conn.messages += 1
                conn._bytes_closed += len(payload)
                try:
                    on_message(conn, payload)
                except ConnectionClosed:
                    pass  # e.g. a refused auth: the recording's close follows
                except ProtocolError as exc:
                    conn._report(exc)
            fed += c_fed
            self.fed += fed
            info["events"] += fed

    def _event(
        self,
        ev: Dict[str, Any],
        conn: Optional[ReplayConnection],
        name: str,
        recorded: Dict[str, Dict[str, Tuple[str, List[str]]]],
    ) -> None:
        m = self._m
        kind = ev.get("ev")
        if kind == "recv":
            if conn is None:
                return
            text = ev.get("text")
            if text is None:
                payload = base64.b64decode(ev.get("b64", ""))
            else:
                text = str(text)
                if '"id"' in text and '"topic"' not in text:
                    text = self._ack(conn, text, recorded.get(name, {}))
                payload = text.encode("utf-8")
            conn._replay_frame(payload)
        elif kind == "sent":
            self._note_sent(recorded.setdefault(name, {}), ev.get("text", ""))
        elif kind == "open":
            if conn is not None:
                conn._replay_open()
        elif kind == "close":
            if conn is not None:
                before = self._gap_starts(conn)
                conn._replay_close(str(ev.get("reason", "closed")), final=self._stopping)
                self._fix_gap_starts(conn, before, m._t_ms)
        elif kind == "connect_failed":
            if conn is not None and not self._stopping:
                conn._replay_connect_failed(str(ev.get("reason", "connect failed")))
        elif kind == "listen_key":
            state = ev.get("state")  # absent in older recordings: decided again here
            m._keeper_status(
                str(ev.get("kind", "")),
                str(ev.get("reason", "")),
                None if state is None else str(state),
            )
        elif kind == "stop":
            self._stopping = True

    @staticmethod
    def _note_sent(table: Dict[str, Tuple[str, List[str]]], text: str) -> None:
        try:
            obj = json.loads(text)
        except ValueError:
            return
        if isinstance(obj, dict) and obj.get("op") in ("subscribe", "unsubscribe"):
            args = [t for t in obj.get("args") or () if isinstance(t, str)]
            table[str(obj.get("id"))] = (obj["op"], args)

    @staticmethod
    def _ack(conn: ReplayConnection, text: str, recorded: Dict[str, Tuple[str, List[str]]]) -> str:
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if not isinstance(obj, dict) or obj.get("event") not in ("subscribe", "unsubscribe"):
            return text
        if conn._map_ack(obj, recorded):
            return json.dumps(obj, separators=(",", ":"))
        return text

    def _routes_of(self, conn: ReplayConnection) -> List[Any]:
        session = conn.session
        if isinstance(session, UserSession):
            return [session.route]
        carrier: Any = session  # a PublicSession: the routes it carries
        with self._m._lock:
            return [r for r in self._m._routes.values() if r.session is carrier]

    def _gap_starts(self, conn: ReplayConnection) -> Dict[int, Optional[int]]:
        return {id(r): r.gap_start for r in self._routes_of(conn)}

    def _fix_gap_starts(
        self, conn: ReplayConnection, before: Dict[int, Optional[int]], t_ms: int
    ) -> None:
        """``on_closed`` read the wall clock for routes that never saw a push: use the
        recorded close time instead."""
        for route in self._routes_of(conn):
            if (
                before.get(id(route)) is None
                and route.gap_start is not None
                and route.last_ts is None
            ):
                route.gap_start = t_ms
