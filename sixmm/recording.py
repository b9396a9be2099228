"""Recording a session: every frame in and out, every open and close, the REST calls that
matter, as versioned JSON Lines (``.gz``: gzip). The format is documented in the README
("Record and replay") and in :data:`FORMAT`.

The :class:`Recorder` is a :class:`sixmm.tap.Tap`: connections call it on their reader threads,
where it never waits. With the C extension (``_recfast``) a received frame's line is formatted
right there into a bounded buffer (about a microsecond for a 200-byte frame; the frame's bytes
stay on the core that received them); every other event, and a frame that may hold a credential
or is not UTF-8, is appended as a tuple to a bounded deque (no lock, no I/O, no scrubbing). One
writer thread, ``sixmm-recorder``, owns the file: it takes the buffer, scrubs every queued text with
:func:`sixmm.protocol.redact.scrub` (so no listenKey, token, api key or signature is ever
written), writes both in the order they happened and flushes at least every
:data:`FLUSH_INTERVAL` seconds. When the disk cannot keep up and the buffer or deque is full,
events are dropped, counted in ``stats()``, marked in the file (a ``dropped`` line) and
reported to ``on_error`` at most once a second: the stream itself is never blocked.

Thread-safety: the tap methods and ``note``/``rest``/``stats`` may be called from any thread;
``start``/``stop`` from the owner (the manager).
"""

from __future__ import annotations

import base64
import collections
import datetime
import gzip
import io
import json
import logging
import threading
import time
from json.encoder import encode_basestring
from typing import IO, Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from .errors import SixMMError
from .protocol import redact
from .protocol._speedups import load
from .protocol.redact import remember, scrub
from .threads import OwnedThread

__all__ = ["FLUSH_INTERVAL", "FORMAT", "VERSION", "Recorder", "RecorderOverflow"]

logger = logging.getLogger(__name__)

FORMAT = "sixmm-recording"
VERSION = 1
FLUSH_INTERVAL = 0.5
_WAKE = 0.1
DEFAULT_MAX_PENDING = 200_000
DEFAULT_MAX_BYTES = 64 << 20  # the received frames (their bytes) the writer has not taken yet

# event tuples: (kind, conn, value, monotonic seconds, offset); one clock read per event, the
# epoch time of each line is derived from the header's anchor (no jumps when NTP steps); the
# offset is how many frames the C buffer had taken in when the event was queued (its place
# among those lines)
_Item = Tuple[str, str, Any, float, int]
_enc: Callable[[str], str] = encode_basestring
_monotonic = time.monotonic
_recfast: Any = load("_recfast")  # the optional reader-side formatter (Lines)
SPEEDUPS = _recfast is not None
# every credential name redact.scrub looks for contains one of these (lowercased)
_CREDENTIAL_WORDS = (b"key", b"token", b"signature", b"secret", b"bearer")


class RecorderOverflow(SixMMError, BufferError):
    """The recording could not keep up: ``dropped`` events were not written (the stream went
    on; a ``dropped`` line in the file marks where)."""

    def __init__(self, dropped: int, path: str) -> None:
        super().__init__(f"recorder dropped {dropped} event(s) writing {path}: disk too slow")
        self.dropped = dropped


def _version() -> str:
    from . import __version__

    return __version__


class Recorder:
    """Writes one recording file; a :class:`~sixmm.tap.Tap` for every connection."""

    def __init__(
        self,
        path: str,
        *,
        url: str = "",
        report: Callable[[BaseException], None] = lambda exc: None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = str(path)
        self._url = url
        self._report = report
        self._max = max_pending
        self._max_bytes = max_bytes
        self._q: Deque[_Item] = collections.deque()
        self._lines: Any = None  # the C buffer, from start() on when _recfast is built
        self._worker = OwnedThread("sixmm-recorder", self._run)
        self._stop = self._worker.stopping  # set by stop(), or when writing failed
        self._wake = self._worker.wake
        self._file: Optional[IO[bytes]] = None
        self._raw: Optional[IO[bytes]] = None
        self._mono0 = time.monotonic()
        self._epoch0_ms = time.time() * 1000.0
        self._secrets_seen: Tuple[str, ...] = ()
        self._secret_bytes: Tuple[bytes, ...] = ()
        self._lock = threading.Lock()
        self._dropped = 0  # events the deque had no room for
        self._dropped_written = 0
        self._dropped_reported = 0
        self._last_report = 0.0
        self.written = 0
        self.bytes_written = 0
        self.flushes = 0
        self.writer_cpu = 0.0  # CPU seconds of the writer thread so far
        self.error: Optional[str] = None

    # -- the tap (reader threads: append and return) ------------------------------------

    @property
    def dropped(self) -> int:
        """Events not recorded so far (no room in the buffer or the deque)."""
        lines = self._lines
        return self._dropped + (lines.dropped if lines is not None else 0)

    def _put(self, kind: str, conn: str, value: Any) -> None:
        q = self._q
        if len(q) >= self._max or self._stop.is_set():
            self._dropped += 1  # racy by a count at worst; reported as "at least"
            return
        lines = self._lines
        q.append((kind, conn, value, time.monotonic(), lines.total if lines is not None else 0))

    def opened(self, conn: str, url: str) -> None:
        # the credential in the URL is scrubbed from everything recorded from now on, even
        # where a server quotes it without its name
        for key, value in parse_qsl(urlsplit(url).query):
            if key in ("listenKey", "token"):
                remember(value)
        self._put("open", conn, url)

    def remember_client(self, rest: Any) -> None:
        """Register the credentials of a RestClient (token, api key) with the scrubber."""
        remember(getattr(rest, "token", None))
        remember(getattr(getattr(rest, "_auth", None), "_api_key", None))

    def received(self, conn: str, payload: bytes) -> None:
        # With the C buffer, start() shadows this method with Lines.received, which does the
        # same in one call: a copy of the frame; the writer's take() scans and formats it.
        lines = self._lines
        if lines is not None:
            lines.append(payload, conn, _monotonic())
            return
        self._declined(conn, payload, 0)

    def _declined(self, conn: str, payload: bytes, offset: int) -> None:
        """A frame for the writer's general (scrubbing) path: queued with its offset."""
        q = self._q
        if len(q) >= self._max:
            self._dropped += 1
            return
        q.append(("recv", conn, payload, _monotonic(), offset))

    def sent(self, conn: str, text: str) -> None:
        self._put("sent", conn, text)

    def closed(self, conn: str, reason: str) -> None:
        self._put("close", conn, reason)

    def connect_failed(self, conn: str, reason: str) -> None:
        self._put("connect_failed", conn, reason)

    # -- other events ---------------------------------------------------------------------

    def listen_key(self, kind: str, reason: str, state: str = "") -> None:
        """A listenKey lifecycle outcome (created, renewed, renew_failed, recreated, closed,
        fatal), as the manager's keeper reported it, with the state ``on_state`` was told
        (``""``: it was not told)."""
        self._put("listen_key", "user", (kind, reason, state))

    def rest(self, call: Dict[str, Any]) -> None:
        """One REST call's outcome (method, path, http, code, ms[, data])."""
        self._put("rest", "rest", call)

    def mark_stop(self) -> None:
        """The owner began ``stop()``: closes that follow are the end of the session."""
        self._put("stop", "", None)

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the file, write the header, start ``sixmm-recorder`` (idempotent). Raises
        ``OSError`` if the file cannot be created."""
        with self._lock:
            if self._worker.started or self._stop.is_set():
                return
            raw = open(self.path, "wb")  # noqa: SIM115 (owned by the writer thread)
            self._raw = raw
            if self.path.endswith(".gz"):
                self._file = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)  # type: ignore[assignment]
            else:
                self._file = raw
            now = time.time()
            self._mono0 = time.monotonic()
            self._epoch0_ms = now * 1000.0
            header = {
                "format": FORMAT,
                "version": VERSION,
                "sixmm": _version(),
                "started_ms": int(now * 1000),
                "started": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(),
                "url": scrub(self._url),
            }
            self._write(json.dumps(header, separators=(",", ":")) + "\n")
            self._flush()
            if _recfast is not None:
                self._lines = _recfast.Lines(
                    self._epoch0_ms - self._mono0 * 1000.0,
                    self._mono0,
                    _CREDENTIAL_WORDS,
                    self._max_bytes,
                )
                self._lines.bind_tap(_monotonic)
                self.received = self._lines.received  # type: ignore[method-assign]
            self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, close the file, join the thread (idempotent)."""
        self._worker.stop(timeout, busy=f"writing {self.path}")

    def stats(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "written": self.written,
            "bytes": self.bytes_written,
            "pending": len(self._q) + (self._lines.pending if self._lines is not None else 0),
            "dropped": self.dropped,
            "flushes": self.flushes,
            "writer_cpu_s": round(self.writer_cpu, 3),
            "error": self.error,
        }

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set()
                self._drain()
                now = time.monotonic()
                if stopping or now - last_flush >= FLUSH_INTERVAL:
                    self._flush()
                    last_flush = now
                self._pace_report(now)
                self.writer_cpu = time.thread_time()
                if stopping:
                    return
                self._wake.wait(_WAKE)
                self._wake.clear()
        except Exception as exc:  # disk full, file gone...: the stream goes on unrecorded
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("recorder: writing %s failed; recording stopped", self.path)
            self._report(SixMMError(f"recording to {self.path} failed: {self.error}"))
            self._stop.set()
        finally:
            self._close()

    def _pace_report(self, now: float) -> None:
        dropped = self.dropped
        if dropped > self._dropped_reported and now - self._last_report >= 1.0:
            self._last_report = now
            self._dropped_reported = dropped
            logger.warning("recorder: %d event(s) dropped so far (disk too slow)", dropped)
            self._report(RecorderOverflow(dropped, self.path))

    def _drain(self) -> None:
        lines = self._lines
        starts: Any = ()
        declined: List[Tuple[int, str, bytes, float]] = []
        if lines is not None:
            # the C buffer's lines (scanned and formatted by take() with the GIL released);
            # an event's offset counts the frames appended before it, starts[i] is where the
            # i-th frame's line begins in data; the declined frames (maybe a credential, or
            # not UTF-8) have no line there and take the general path below, in their place
            data, end, count, raw_starts, declined = lines.take(redact._secrets)
            starts = memoryview(raw_starts).cast("q")
            self.written += count - len(declined)
        else:
            data, end, count = b"", 0, 0
        first = end - count  # the offset of the first frame taken
        size = len(data)
        pos = 0  # in data: what is written so far
        q = self._q
        popleft = q.popleft
        batch: List[_Item] = []
        for _ in range(len(q)):
            if q[0][4] > end:  # queued after the lines taken: the next round's
                break
            batch.append(popleft())
        if declined:
            # frame i comes after the events queued at offset i (before it arrived): sorted
            # by (offset, queued first), stable
            mine = [("recv", conn, payload, m, first + i) for i, conn, payload, m in declined]
            flagged = [(item[4], 0, item) for item in batch] + [(it[4], 1, it) for it in mine]
            flagged.sort(key=lambda f: (f[0], f[1]))
            batch = [f[2] for f in flagged]
        view = memoryview(data)
        chunks: List[Any] = []
        text: List[str] = []  # general-path lines not yet encoded into chunks
        run: List[_Item] = []
        for item in batch:
            k = item[4] - first
            at = size if k >= count else starts[k] if k > 0 else 0
            if at > pos:  # the buffer's lines that came before this event
                if run:
                    self._recv_lines(run, text)
                    run = []
                if text:
                    chunks.append("".join(text).encode("utf-8"))
                    text = []
                chunks.append(view[pos:at])
                pos = at
            if item[0] == "recv":
                run.append(item)
                continue
            if run:
                self._recv_lines(run, text)
                run = []
            text.append(self._line(item))
            self.written += 1
        if run:
            self._recv_lines(run, text)
        if text:
            chunks.append("".join(text).encode("utf-8"))
        if pos < size:
            chunks.append(view[pos:])
        if self.dropped != self._dropped_written:
            total = self.dropped
            chunks.append(
                f'{self._head("", _monotonic())},"ev":"dropped",'
                f'"count":{total - self._dropped_written}}}\n'.encode()
            )
            self._dropped_written = total
            self.written += 1
        if chunks:
            self._write_chunks(chunks)

    def _recv_lines(self, run: List[_Item], lines: List[str]) -> None:
        self.written += len(run)
        self._recv_lines_py(run, lines)

    def _head(self, conn: str, m: float) -> str:
        t = int(self._epoch0_ms + (m - self._mono0) * 1000.0)
        return f'{{"t":{t},"us":{int((m - self._mono0) * 1e6)},"conn":{_enc(conn)}'

    def _line(self, item: _Item) -> str:
        """One event line (the general path: every text scrubbed)."""
        kind, conn, value, m, _offset = item
        head = self._head(conn, m)
        if kind == "recv":
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                return f'{head},"ev":"recv","b64":"{base64.b64encode(value).decode("ascii")}"}}\n'
            if self._suspect(value):
                text = scrub(text)
            return f'{head},"ev":"recv","text":{_enc(text)}}}\n'
        if kind == "sent":
            return f'{head},"ev":"sent","text":{_enc(scrub(value))}}}\n'
        if kind == "open":
            return f'{head},"ev":"open","url":{_enc(scrub(value))}}}\n'
        if kind in ("close", "connect_failed"):
            return f'{head},"ev":"{kind}","reason":{_enc(scrub(value))}}}\n'
        if kind == "listen_key":
            return (
                f'{head},"ev":"listen_key","kind":{_enc(value[0])},'
                f'"reason":{_enc(scrub(value[1]))},"state":{_enc(value[2])}}}\n'
            )
        if kind == "rest":
            body = json.dumps(value, separators=(",", ":"), default=str)
            return f'{head},"ev":"rest","call":{scrub(body)}}}\n'
        return f'{head},"ev":"{kind}"}}\n'

    def _recv_lines_py(self, run: List[_Item], lines: List[str]) -> None:
        """Lines for a run of received frames, batch-wise where it is safe: one join, one
        decode, one credential test for the whole run."""
        payloads = [item[2] for item in run]
        joined = b"\n".join(payloads)
        texts: Optional[List[str]] = None
        if joined.count(b"\n") == len(payloads) - 1 and not self._suspect(joined):
            try:
                texts = joined.decode("utf-8").split("\n")
            except UnicodeDecodeError:
                texts = None
        if texts is None:  # a newline inside a frame, binary, or maybe a credential
            lines.extend(self._line(item) for item in run)
            return
        base, mono0 = self._epoch0_ms - self._mono0 * 1000.0, self._mono0
        names: Dict[str, str] = {}
        for item in run:
            if item[1] not in names:
                names[item[1]] = _enc(item[1])
        monos = [item[3] for item in run]
        ts = [int(base + m * 1000.0) for m in monos]
        us = [int((m - mono0) * 1e6) for m in monos]
        escaped = map(_enc, texts)
        if len(names) == 1:  # the common case: one connection's frames
            fmt = (
                '{"t":%d,"us":%d,"conn":' + next(iter(names.values())) + ',"ev":"recv","text":%s}\n'
            )
            lines.extend(map(fmt.__mod__, zip(ts, us, escaped)))
            return
        fmt = '{"t":%d,"us":%d,"conn":%s,"ev":"recv","text":%s}\n'
        conns = [names[item[1]] for item in run]
        lines.extend(map(fmt.__mod__, zip(ts, us, conns, escaped)))

    def _suspect(self, data: bytes) -> bool:
        """Could ``data`` hold a credential :func:`scrub` would remove?"""
        low = data.lower()
        for word in _CREDENTIAL_WORDS:
            if word in low:
                return True
        return any(x in data for x in self._secret_bytes_now())

    def _secret_bytes_now(self) -> Tuple[bytes, ...]:
        secrets = redact._secrets  # the registry's current tuple (replaced, never mutated)
        if secrets is not self._secrets_seen:
            self._secrets_seen = secrets
            self._secret_bytes = tuple(x.encode("utf-8") for x in secrets)
        return self._secret_bytes

    def _write(self, text: str) -> None:
        self._write_chunks([text.encode("utf-8")])

    def _write_chunks(self, chunks: List[Any]) -> None:
        f = self._file
        if f is not None:
            for data in chunks:
                f.write(data)
                self.bytes_written += len(data)

    def _flush(self) -> None:
        f, raw = self._file, self._raw
        if f is None or raw is None:
            return
        f.flush()  # gzip: a sync flush, so a crash keeps everything written so far
        if f is not raw:
            raw.flush()
        self.flushes += 1

    def _close(self) -> None:
        if self._lines is not None:
            self._lines.close()  # later frames are not buffered for nobody
        f, raw = self._file, self._raw
        self._file = self._raw = None
        for handle in (f, raw):
            if handle is not None:
                try:
                    handle.close()
                except (OSError, ValueError):
                    pass


def open_text(path: str) -> io.BufferedIOBase:
    """Open a recording for reading as bytes (gzip if it ends in ``.gz``)."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")
