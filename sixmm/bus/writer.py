"""The bridge's writer: one bounded queue, one thread (``sixmm-bus-writer``) that owns Redis.

The exchange reader only ever calls :meth:`Writer.put`, which never blocks: when the queue is
full the entry is dropped and counted, and the writer later publishes a ``gap`` entry saying
what was lost (and a fresh book snapshot). The writer thread batches entries into pipelines of
fenced ``XADD ... MAXLEN ~ N`` calls, keeps the lease (active) or waits for it (standby, with a
bounded buffer of recent entries to backfill on takeover), writes heartbeats and periodic
snapshots, and reconnects to Redis with backoff, saying what it lost.

Thread-safety: ``put`` from any thread; ``start``/``stop``/``stats`` from any thread.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..config import Backoff
from ..errors import ConnectionLost, SixMMError
from ..protocol import redact
from ..threads import OwnedThread
from .format import encode_entry, lease_key, snapshot_key, stream_key, trade_number
from .lease import PUBLISH_LUA, Lease
from .redisio import connect, display_url, redis_errors

__all__ = ["Writer"]

logger = logging.getLogger(__name__)

# (topic, kind, rx, ts, data, version, tid)
Item = Tuple[str, str, int, Optional[int], Any, Optional[int], Optional[str]]
SnapshotSource = Callable[[str], Optional[Tuple[int, Any]]]

ACTIVE = "active"
STANDBY = "standby"
_BATCH = 500
_REPORT_EVERY = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Writer:
    """Publishes the entries of one bridge session into Redis (see the module docstring)."""

    def __init__(
        self,
        redis_url: str,
        *,
        session: str,
        topics: List[str],
        book_topics: List[str],
        snapshot: SnapshotSource,
        prefix: str,
        group: str,
        maxlen: int,
        queue_size: int,
        lease_ttl: float,
        heartbeat_interval: float,
        snapshot_interval: float,
        standby_buffer: int,
        report: Callable[[BaseException], None],
        on_role: Callable[[str, str], None],
        timeout: float = 5.0,
    ) -> None:
        if maxlen < 1 or queue_size < 1:
            raise ValueError("maxlen and queue_size must be >= 1")
        self._url = redis_url
        self._display = display_url(redis_url)
        self.session = session
        self._topics = list(topics)
        self._books = set(book_topics)
        self._snapshot = snapshot
        self._prefix = prefix
        self._maxlen = str(maxlen)
        self._ttl = lease_ttl
        self._lease_every = lease_ttl / 4.0
        self._heartbeat = heartbeat_interval
        self._snap_every = snapshot_interval
        self._report_error = report
        self._on_role = on_role
        self._timeout = timeout
        self._keys = {
            t: (stream_key(prefix, t), lease_key(prefix, group), snapshot_key(prefix, t))
            for t in self._topics
        }
        self._lease_key = lease_key(prefix, group)
        self._queue: queue.Queue[Item] = queue.Queue(queue_size)
        self._owner = OwnedThread("sixmm-bus-writer", self._run)
        self._stop = self._owner.stopping
        self._lock = threading.Lock()
        self._backoff = Backoff(initial=0.1, maximum=2.0)
        self.role = STANDBY
        self._lapsed = False
        self._seq: Dict[str, int] = {t: 0 for t in self._topics}
        self._last_write: Dict[str, float] = {}
        self._last_rx: Dict[str, int] = {}
        self._last_snap: Dict[str, float] = {}
        self._buffer: Dict[str, Deque[Item]] = {t: deque(maxlen=standby_buffer) for t in topics}
        self._dropped: Dict[str, List[int]] = {}  # topic -> [first rx, last rx, count]
        self._pending_gaps: Dict[str, List[Any]] = {}  # topic -> [start, end, lost, reason]
        self._down_since: Optional[float] = None
        self._lost_before = 0
        self._last_ok = time.monotonic()
        self._failures = 0
        self._last_report: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = {}
        # counters
        self.published = 0
        self.dropped = 0
        self.lost = 0
        self.fenced = 0
        self.redis_errors = 0
        self.reconnects = 0
        self.takeovers = 0
        self.heartbeats = 0
        self.snapshots = 0
        self.backfilled = 0
        self.batches = 0

    # -- any thread -------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        kind: str,
        rx: int,
        ts: Optional[int] = None,
        data: Any = None,
        version: Optional[int] = None,
        tid: Optional[str] = None,
    ) -> bool:
        """Queue one entry; never blocks. False (dropped, counted) when the queue is full."""
        try:
            self._queue.put_nowait((topic, kind, rx, ts, data, version, tid))
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
                d = self._dropped.get(topic)
                if d is None:
                    self._dropped[topic] = [rx, rx, 1]
                else:
                    d[1] = rx
                    d[2] += 1
            return False

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        self._owner.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (best effort), give the lease up, join (bounded)."""
        self._owner.stop(timeout)

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "redis": self._display,
                "session": self.session,
                "role": self.role,
                "queue": self._queue.qsize(),
                "published": self.published,
                "dropped": self.dropped,
                "lost": self.lost,
                "fenced": self.fenced,
                "redis_errors": self.redis_errors,
                "reconnects": self.reconnects,
                "takeovers": self.takeovers,
                "heartbeats": self.heartbeats,
                "snapshots": self.snapshots,
                "backfilled": self.backfilled,
                "batches": self.batches,
                "connected": self._down_since is None and self._failures == 0,
                "seq": dict(self._seq),
            }

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        errors = redis_errors()
        client = connect(self._url, self._timeout)
        script = client.register_script(PUBLISH_LUA)
        lease = Lease(client, self._lease_key, self.session, self._ttl)
        next_lease = 0.0
        try:
            while not self._stop.is_set():
                try:
                    now = time.monotonic()
                    if now >= next_lease:
                        self._lease_step(client, script, lease)
                        next_lease = time.monotonic() + self._lease_every
                    wait = max(0.0, min(0.2, next_lease - time.monotonic()))
                    batch = self._take(wait)
                    if self.role == ACTIVE:
                        self._publish(client, script, batch)
                    else:
                        self._stash(batch)
                    self._recovered()
                except errors as exc:
                    next_lease = 0.0
                    self._trouble(exc)
                    self._stop.wait(self._backoff.delay(self._failures))
        finally:
            self._finish(client, script, lease, errors)

    def _finish(self, client: Any, script: Any, lease: Lease, errors: Any) -> None:
        try:
            if self.role == ACTIVE:
                self._publish(client, script, self._take(0.0))
                lease.release()
                self._set_role(STANDBY, "stopped")
        except errors as exc:
            logger.info("bus writer: could not flush/release on stop: %s", redact.scrub(str(exc)))
        finally:
            client.close()

    def _take(self, wait: float) -> List[Item]:
        items: List[Item] = []
        try:
            items.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
        except queue.Empty:
            return items
        get = self._queue.get_nowait
        try:
            while len(items) < _BATCH:
                items.append(get())
        except queue.Empty:
            pass
        return items

    def _stash(self, batch: List[Item]) -> None:
        """Standby: keep recent data entries to backfill if we take over."""
        for item in batch:
            if item[1] == "data":
                self._buffer[item[0]].append(item)

    # -- lease and takeover -----------------------------------------------------------------

    def _lease_step(self, client: Any, script: Any, lease: Lease) -> None:
        if self.role == ACTIVE:
            if lease.renew():
                return
            holder = lease.holder()
            if holder:
                self._set_role(STANDBY, f"lease held by session {holder}")
                return
            # the key vanished (Redis restarted or flushed): take it again
        if lease.acquire():
            self._take_over(client, script)

    def _take_over(self, client: Any, script: Any) -> None:
        now_ms = _now_ms()
        lapsed = self._lapsed  # we were active, then not: entries may be missing
        self._lapsed = False
        entries: List[Tuple[str, Dict[str, Any]]] = []
        missing: List[str] = []
        for topic in self._topics:
            last_rx, last_session, last_tid = self._stream_tail(client, topic)
            if last_rx is None and topic in self._last_rx:
                missing.append(topic)
            if last_session == self.session and not lapsed and not self._pending_gaps.get(topic):
                start = None  # our own stream, nothing lost: just go on
            elif last_rx is not None:
                start = last_rx
            else:
                start = self._last_rx.get(topic)  # the stream is gone (Redis restarted?)
            backfill = self._backfill_items(topic, last_rx, last_tid)
            if start is not None:
                reason = (
                    "stream missing: Redis lost it (restart/flush)"
                    if last_rx is None
                    else f"handover from session {last_session or '?'}"
                    if last_session != self.session
                    else "this bridge lost the lease for a while"
                    if lapsed
                    else "Redis outage"
                )
                self._add_gap(topic, start, now_ms, 0, reason + f"; {len(backfill)} backfilled")
            entries.extend(self._gap_entries(topic))
            for item in backfill:
                entries.append((topic, self._fields(item)))
            self.backfilled += len(backfill)
            if topic in self._books:
                entries.append(self._snapshot_entry(topic))
        if missing:
            self._report(
                SixMMError(
                    f"Redis lost the stream(s) of {', '.join(missing)} (restart or flush): "
                    "what was in them is gone; gap entries and snapshots published"
                ),
                force=True,
            )
        self._buffer = {t: deque(maxlen=b.maxlen) for t, b in self._buffer.items()}
        fenced = self.fenced
        self._send(client, script, entries)  # gap, backfill, snapshots: before any new entry
        if self.fenced == fenced:
            self.takeovers += 1
            self._set_role(ACTIVE, f"lease taken by session {self.session}")

    def _stream_tail(self, client: Any, topic: str) -> Tuple[Optional[int], str, Optional[int]]:
        """(rx of the last entry, its session, highest trade id among the last entries)."""
        rows = client.xrevrange(self._keys[topic][0], "+", "-", count=50)
        if not rows:
            return None, "", None
        first = {k.decode(): v.decode() for k, v in rows[0][1].items()}
        rx = int(first.get("rx") or 0) or None
        tid: Optional[int] = None
        for _id, raw in rows:
            value = raw.get(b"tid")
            if value is not None:
                number = trade_number(value.decode())
                if number is not None and (tid is None or number > tid):
                    tid = number
        return rx, first.get("session", ""), tid

    def _backfill_items(
        self, topic: str, last_rx: Optional[int], last_tid: Optional[int]
    ) -> List[Item]:
        out: List[Item] = []
        for item in self._buffer.get(topic, ()):
            number = trade_number(item[6]) if item[6] is not None else None
            if number is not None and last_tid is not None:
                if number > last_tid:
                    out.append(item)
            elif last_rx is None or item[2] > last_rx:
                out.append(item)
        return out

    def _set_role(self, role: str, reason: str) -> None:
        if role == self.role:
            return
        with self._lock:
            if self.role == ACTIVE:
                self._lapsed = True
            self.role = role
        log = logger.warning if role == STANDBY and reason != "stopped" else logger.info
        log("bus bridge %s: %s (%s)", self.session, role, reason)
        self._on_role(role, reason)

    # -- publishing -------------------------------------------------------------------------

    def _publish(self, client: Any, script: Any, batch: List[Item]) -> None:
        entries: List[Tuple[str, Dict[str, Any]]] = []
        if self._dropped:
            with self._lock:
                dropped, self._dropped = self._dropped, {}
            for topic, (first, last, count) in dropped.items():
                self._add_gap(topic, first, last, count, "bridge queue full: entries dropped")
            total = sum(d[2] for d in dropped.values())
            self._report(
                SixMMError(
                    f"bus bridge queue full: {total} entr{'y' if total == 1 else 'ies'} dropped "
                    f"on {', '.join(sorted(dropped))}; gap entries and snapshots published"
                ),
                key="drops",
            )
        if self._pending_gaps:
            for topic in list(self._pending_gaps):
                entries.extend(self._gap_entries(topic))
                if topic in self._books:
                    entries.append(self._snapshot_entry(topic))
        for item in batch:
            entries.append((item[0], self._fields(item)))
        mono = time.monotonic()
        for topic in self._books:
            if mono - self._last_snap.get(topic, 0.0) >= self._snap_every:
                entries.append(self._snapshot_entry(topic))
        if entries:
            self._send(client, script, entries)
        mono = time.monotonic()
        beats = [
            (t, self._fields((t, "heartbeat", _now_ms(), None, None, None, None)))
            for t in self._topics
            if mono - self._last_write.get(t, 0.0) >= self._heartbeat
        ]
        if beats:
            self.heartbeats += len(beats)
            self._send(client, script, beats)

    def _fields(self, item: Item) -> Dict[str, Any]:
        _topic, kind, rx, ts, data, version, tid = item
        if kind == "gap":
            return {
                "kind": kind,
                "rx": rx,
                "start": data["start"],
                "end": data["end"],
                "reason": data["reason"],
            }
        if kind == "unsynced":
            return {"kind": kind, "rx": rx, "version": version, "reason": data["reason"]}
        return {
            "kind": kind,
            "rx": rx,
            "ts": ts,
            "data": data,
            "version": version,
            "tid": tid,
        }

    def _snapshot_entry(self, topic: str) -> Tuple[str, Dict[str, Any]]:
        self._last_snap[topic] = time.monotonic()
        snap = self._snapshot(topic)
        if snap is None:
            return topic, {"kind": "unsynced", "rx": _now_ms(), "reason": "bridge book not synced"}
        version, data = snap
        return topic, {"kind": "snapshot", "rx": _now_ms(), "data": data, "version": version}

    def _add_gap(self, topic: str, start: int, end: int, lost: int, reason: str) -> None:
        gap = self._pending_gaps.get(topic)
        if gap is None:
            self._pending_gaps[topic] = [start, end, lost, reason]
        else:
            gap[0] = min(gap[0], start)
            gap[1] = max(gap[1], end)
            gap[2] += lost
            gap[3] = f"{gap[3]}; {reason}"

    def _gap_entries(self, topic: str) -> List[Tuple[str, Dict[str, Any]]]:
        gap = self._pending_gaps.pop(topic, None)
        if gap is None:
            return []
        start, end, lost, reason = gap
        return [
            (
                topic,
                {
                    "kind": "gap",
                    "rx": _now_ms(),
                    "start": start,
                    "end": end,
                    "lost": lost,
                    "reason": reason,
                },
            )
        ]

    def _send(self, client: Any, script: Any, entries: List[Tuple[str, Dict[str, Any]]]) -> None:
        """Write ``entries`` in fenced batches (one script call, pipelined, per batch). On a
        Redis error the entries count as lost (never re-sent: a re-send could duplicate) and
        each topic gets a ``gap`` entry later."""
        pipe = client.pipeline(transaction=False)
        session = self.session
        batches: List[List[Tuple[str, str, int]]] = []
        for at in range(0, len(entries), _BATCH):
            keys: List[str] = [self._lease_key]
            index: Dict[str, int] = {}
            batch: List[List[Any]] = []
            sent: List[Tuple[str, str, int]] = []
            for topic, f in entries[at : at + _BATCH]:
                seq = self._seq[topic] = self._seq[topic] + 1
                kind = f["kind"]
                fields = encode_entry(
                    kind,
                    topic,
                    session,
                    seq,
                    f["rx"],
                    ts=f.get("ts"),
                    data=f.get("data"),
                    version=f.get("version"),
                    tid=f.get("tid"),
                    start=f.get("start"),
                    end=f.get("end"),
                    reason=f.get("reason", ""),
                    lost=f.get("lost", 0),
                )
                stream, _lease, pointer = self._keys[topic]
                k = index.get(stream)
                if k is None:
                    keys.append(stream)
                    k = index[stream] = len(keys)
                p = 0
                if kind == "snapshot":
                    p = index.get(pointer, 0)
                    if not p:
                        keys.append(pointer)
                        p = index[pointer] = len(keys)
                row: List[Any] = [k, p]
                for item in fields.items():
                    row += item
                batch.append(row)
                sent.append((topic, kind, f["rx"]))
            text = json.dumps(batch, ensure_ascii=False, separators=(",", ":"))
            script(keys=keys, args=[session, self._maxlen, text], client=pipe)
            batches.append(sent)
        try:
            results = pipe.execute(raise_on_error=False)
        except BaseException:
            for sent in batches:
                self._lose(sent, "Redis write failed")
            raise
        self.batches += len(batches)
        mono = time.monotonic()
        fenced = 0
        for sent, result in zip(batches, results):
            if isinstance(result, Exception):
                self._lose(sent, f"Redis refused a write: {redact.scrub(str(result))}")
                self._report(ConnectionLost(f"Redis refused a write: {result}"))
                continue
            if result is None:
                fenced += len(sent)
                continue
            self.published += len(sent)
            for topic, kind, rx in sent:
                self._last_write[topic] = mono
                self._last_rx[topic] = rx
                if kind == "snapshot":
                    self.snapshots += 1
        if fenced:
            self.fenced += fenced
            self._set_role(STANDBY, f"fenced: {fenced} write(s) refused, the lease is not ours")

    def _lose(self, sent: List[Tuple[str, str, int]], reason: str) -> None:
        for topic, _kind, rx in sent:
            self.lost += 1
            self._add_gap(topic, rx, rx, 1, reason)

    # -- Redis trouble ------------------------------------------------------------------------

    def _trouble(self, exc: BaseException) -> None:
        self.redis_errors += 1
        self._failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._lost_before = self.lost + self.dropped
        text = redact.scrub(str(exc))
        logger.warning("bus writer: Redis trouble at %s: %s", self._display, text)
        self._report(ConnectionLost(f"Redis at {self._display}: {text}"))

    def _recovered(self) -> None:
        if self._down_since is None:
            self._last_ok = time.monotonic()
            return
        down = time.monotonic() - self._last_ok  # since the last iteration that worked
        self._down_since = None
        self._last_ok = time.monotonic()
        self._failures = 0
        self.reconnects += 1
        lost = self.lost + self.dropped - self._lost_before
        message = (
            f"reconnected to Redis at {self._display} after {down:.1f} s: "
            f"{lost} entr{'y' if lost == 1 else 'ies'} lost in the outage "
            f"(dropped {self.dropped}, failed writes {self.lost} in total); "
            "gap entries and fresh snapshots published"
        )
        logger.warning("bus writer: %s", message)
        self._report(SixMMError(message), force=True)

    def _report(self, error: BaseException, force: bool = False, key: str = "redis") -> None:
        """Report to on_error at most once per few seconds per kind (the rest are counted)."""
        now = time.monotonic()
        last = self._last_report.get(key, -_REPORT_EVERY)
        if not force and now - last < _REPORT_EVERY:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_report[key] = now
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            error = type(error)(f"{error} (+{skipped} similar not reported)")
        self._report_error(error)
