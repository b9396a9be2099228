"""Soak run: one StreamManager against the sandbox under a seeded schedule of faults.

Run: ``python bench/soak.py [--minutes 10 | --seconds 90] [--seed 1] [--no-memory]``.
Prints a markdown summary table and exits non-zero if any check failed. The short CI soak
(``tests/test_soak.py``) imports :func:`run_soak` from here.

What runs: trades of 3 symbols, a kline, a ticker, all tickers, 3 live order books, a raw
``market.funding`` topic (a channel sixmm has no model for) and the private user stream
(listenKey renewed every second, events replayed on every reconnect), with fast
heartbeat/staleness/backoff, a 2 s ``connect_timeout`` and depth/ticker/tickers silence bounds
of 2.5 s (``Liveness``). Every ``fault_every`` seconds one fault is injected: each kind once
first (in a seeded shuffle), then seeded weighted draws. The kinds: socket drops, silent
periods longer than ``stale_after``, depth version gaps, crossed books, malformed frames,
refused subscribes (a fresh probe topic), listenKey expiry, failing listenKey REST calls,
trade bursts; and (issue 11) sockets stalled mid-frame, a trickled 101 handshake, a
redirecting upgrade, listenKeys dead on arrival (a few seconds), refusals that echo the
credential, 429/503 + ``Retry-After`` on a WS upgrade or a listenKey REST call, a stalled
listenKey renewal, a silent topic (healed by the client's resubscribe, or silent whatever the
client does until ``unsilence_topic``), an unparseable depth update (NaN, truncated,
headless), a push on the raw topic, and a short-lived second manager stopped while a fault
is active (a trickled handshake, a stalled listenKey ``DELETE``, a half-frame stall).

What is checked (each failure is listed in ``SoakResult.problems``):

- every desired topic is subscribed on the sandbox, nothing else;
- with the market paused, every book reaches the truth's version and equals it level by level;
- trades: ids strictly increasing per symbol (no duplicate, no reordering), and consecutive
  within one connection session (a jump is a loss unless a reconnect separates it; the last
  silence runs its course before the settle, so that none is cut shorter than ``stale_after``);
- user events: no ``dedupe_key`` delivered twice (the sandbox replays 5 on every reconnect);
  raw-topic pushes: each delivered once;
- every injected gap/crossing/corrupt update was seen by its book or made moot by a resync;
  every book's ``resyncs >= gaps + crossed``; ``reconnects + failed attempts >= sockets
  dropped``;
- each issue-11 fault had its effect in time: stalled sockets replaced, the trickled/redirected
  attempt failed (and no upgrade ever reached the redirect's target), the upgrade after a
  ``Retry-After`` waited at least that long, dead keys counted (``dead_on_arrival``) with
  listenKey creations and connects within the rate limiter's policy over the window, renewals
  going on after a stalled one, silent topics resubscribed (``topic_silences``), the raw push
  delivered;
- refused subscribes raised ``SubscriptionError``, reached ``on_error`` (by topic) and left the
  desired set (a probe whose refusal went out on a socket lost before it was read, then
  accepted on the next one, is counted as moot: the sandbox's refusal is one-shot);
- the private stream is authenticated with a key the sandbox holds;
- no credential in anything captured: every log record of ``sixmm`` and ``urllib3`` at DEBUG,
  every ``on_state`` reason, every ``on_error`` text/repr/traceback (the second managers'
  too), and ``stats()`` as JSON (at each fault and at the end) are searched for the api key
  and secret, the tokens used and every listenKey the sandbox ever issued;
- every ``stop(timeout)`` (each short-lived manager's, and the final one, with its listenKey
  ``DELETE`` stalled past the timeout) returns within ``timeout + stop_slack``, and a
  short-lived manager leaves no ``sixmm`` thread behind;
- no callback error, no ``AuthError``, no state ``LOST``;
- after ``stop()``: thread count back to the baseline, and (``memory=True``) the memory
  traced to ``sixmm`` (sandbox excluded) back under ``memory_budget`` bytes.

Thread-safety: :func:`run_soak` runs one soak on the calling thread; do not share a tracker.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import math
import random
import re
import sys
import threading
import time
import traceback
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable, Counter, Deque, Dict, List, Optional, Set, Tuple

import sixmm
from sixmm import Backoff, RestClient, StreamManager, StreamState, SubscriptionError
from sixmm.sandbox import Sandbox

__all__ = ["FAULT_KINDS", "SoakConfig", "SoakResult", "main", "run_soak"]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
LISTEN_KEY_PATH = "/v1/private/user/listen-key"
#: fault kind -> relative weight in the schedule.
FAULT_KINDS: Dict[str, int] = {
    "drop": 3,
    "silence": 1,
    "gap": 3,
    "crossed": 2,
    "malformed": 2,
    "refused_subscribe": 1,
    "listen_key_expiry": 1,
    "listen_key_rest_failure": 1,
    "burst": 2,
    # transport
    "half_frame": 1,
    "trickle_handshake": 1,
    "redirect": 1,
    # keys / REST
    "dead_keys": 1,
    "echo_refusals": 1,
    "rate_limit": 1,
    "stall_rest": 1,
    # topics
    "silence_topic": 1,
    "corrupt_depth": 2,
    "raw_publish": 1,
    # a short-lived second manager started and stopped while a fault is active
    "stop_cycle": 1,
}
_PROBE_TOPICS = tuple(
    f"market.kline.{s}.{i}" for i in ("5m", "15m", "30m", "1h", "4h", "1d") for s in SYMBOLS
)
_CHECK_TIMEOUT = 6.0
_IN_FLIGHT = 0.25  # s: an upgrade this soon after a rate-limited one was already sent
RAW_TOPIC = "market.funding.BTCUSDT"  # a channel sixmm has no model for: envelopes delivered
REDIRECT_PATH = "/soak-redirected"  # a followed redirect would show as an upgrade here
_LISTEN_KEY_RE = re.compile(r"[0-9a-f]{64}")  # the sandbox's listenKeys: token_hex(32)


@dataclass
class SoakConfig:
    """Parameters of one soak run (defaults: a 60 s run, fast timers)."""

    seconds: float = 60.0
    seed: int = 1
    fault_every: Tuple[float, float] = (0.8, 2.2)
    kinds: Dict[str, int] = field(default_factory=lambda: dict(FAULT_KINDS))
    ping_interval: float = 0.25
    stale_after: float = 1.0
    listen_key_renew_interval: float = 1.0
    memory: bool = True
    memory_budget: int = 256 * 1024
    settle_timeout: float = 20.0
    connect_timeout: float = 2.0
    #: silence bound of the depth, ticker and tickers topics (trades: never judged)
    topic_silence: float = 2.5
    #: ``stop(timeout)`` of the short-lived managers and of the final stop, and the slack
    #: allowed on top (the machine may be loaded)
    stop_timeout: Tuple[float, float] = (0.5, 2.0)
    final_stop_timeout: float = 3.0
    stop_slack: float = 0.75


@dataclass
class SoakResult:
    """Figures and verdict of one soak run (:meth:`table` is paste-ready markdown)."""

    config: SoakConfig
    duration: float = 0.0
    faults: Counter[str] = field(default_factory=collections.Counter)
    sockets_dropped: int = 0
    reconnects: int = 0
    reconnects_by: Dict[str, int] = field(default_factory=dict)
    failed_attempts: int = 0
    resyncs: int = 0
    gaps_detected: int = 0
    crossed_detected: int = 0
    faults_absorbed: int = 0
    messages: int = 0
    trades: int = 0
    user_events: int = 0
    replays_dropped: int = 0
    malformed_counted: int = 0
    sockets_stalled: int = 0
    topic_silences: int = 0
    unparsed_resyncs: int = 0
    rate_limit_waits: List[float] = field(default_factory=list)
    key_creations_peak: float = 0.0
    stops: List[float] = field(default_factory=list)
    stop_overruns: int = 0
    credential_leaks: int = 0
    texts_scanned: int = 0
    errors_reported: Counter[str] = field(default_factory=collections.Counter)
    connection_lost: Counter[str] = field(default_factory=collections.Counter)
    losses: int = 0
    duplicates: int = 0
    thread_delta: int = 0
    memory_retained: Optional[int] = None
    memory_top: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    log_tail: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """The summary as a markdown table."""
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors_reported.items())) or "none"
        lost = "; ".join(f"{k} ({v})" for k, v in self.connection_lost.most_common(6))
        memory = (
            "not measured"
            if self.memory_retained is None
            else f"{self.memory_retained / 1024:.1f} KiB retained"
        )
        rows = [
            ("duration", f"{self.duration:.1f} s (seed {self.config.seed})"),
            ("faults injected", f"{sum(self.faults.values())}: {faults}"),
            ("sockets dropped by the server", str(self.sockets_dropped)),
            (
                "reconnects",
                f"{self.reconnects} (+{self.failed_attempts} failed attempts; "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.reconnects_by.items()))
                + ")",
            ),
            (
                "book resyncs",
                f"{self.resyncs} (gaps seen {self.gaps_detected}, crossed seen "
                f"{self.crossed_detected}, made moot by a resync/reconnect {self.faults_absorbed})",
            ),
            ("messages received", str(self.messages)),
            ("trades delivered", str(self.trades)),
            (
                "user events delivered",
                f"{self.user_events} (replays dropped {self.replays_dropped})",
            ),
            ("malformed frames counted", str(self.malformed_counted)),
            ("sockets stalled mid-frame", str(self.sockets_stalled)),
            (
                "silent topics resubscribed / unparseable resyncs",
                f"{self.topic_silences} / {self.unparsed_resyncs}",
            ),
            (
                "Retry-After honoured (WS upgrades)",
                ", ".join(f"{w:.2f}s" for w in self.rate_limit_waits[:6]) or "none",
            ),
            ("listenKey creations, worst dead-key window", f"{self.key_creations_peak:.1f}/s"),
            (
                "stop() within timeout",
                f"{len(self.stops) - self.stop_overruns}/{len(self.stops)}"
                + (f" (worst {max(self.stops):+.2f} s vs. timeout)" if self.stops else ""),
            ),
            (
                "credentials in captured text",
                f"{self.credential_leaks} (in {self.texts_scanned} texts scanned)",
            ),
            ("errors reported to on_error", errors),
            ("ConnectionLost, by reason", lost or "none"),
            ("losses / duplicates delivered", f"{self.losses} / {self.duplicates}"),
            ("threads after stop()", f"{self.thread_delta:+d} vs. baseline"),
            ("memory after stop()", memory),
            ("verdict", "PASS" if self.ok else f"FAIL ({len(self.problems)} problem(s))"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'soak':<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)

    def report(self) -> str:
        """The table, the problems and the last log lines (for a failed run)."""
        parts = [self.table()]
        if self.problems:
            parts.append("problems:\n" + "\n".join(f"- {p}" for p in self.problems))
            parts.append("sixmm memory after stop():\n" + "\n".join(self.memory_top))
            parts.append("last log lines:\n" + "\n".join(self.log_tail[-60:]))
        return "\n\n".join(parts)


class _Scanner:
    """Looks for credentials in every text the soak captures (logs, events, errors, stats).

    The api key and secret are known up front; listenKeys are created during the run, so
    every 64-hex-digit token seen is kept (with where it was seen) and matched against
    ``Sandbox.issued_listen_keys`` at the end (:meth:`leaks`). Only plain strings are kept.
    """

    def __init__(self, secrets: List[str]) -> None:
        self.lock = threading.Lock()
        self.secrets = [s for s in secrets if s]
        self.candidates: Dict[str, str] = {}
        self.found: List[str] = []
        self.scanned = 0

    def scan(self, where: str, text: str) -> None:
        hits = _LISTEN_KEY_RE.findall(text)
        with self.lock:
            self.scanned += 1
            for secret in self.secrets:
                if secret in text and len(self.found) < 20:
                    self.found.append(f"{where}: {text[:200]!r}")
            for hit in hits:
                if len(self.candidates) < 100_000:
                    self.candidates.setdefault(hit, f"{where}: {text[:200]!r}")

    def scan_error(self, where: str, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.scan(where, f"{error}\n{error!r}\n{text}")

    def leaks(self, issued: List[str]) -> List[str]:
        with self.lock:
            keys = [f"listenKey in {self.candidates[k]}" for k in issued if k in self.candidates]
            return self.found + keys


class _LogTail(logging.Handler):
    """Scans every record (DEBUG included) for credentials and keeps the last INFO+ lines
    (strings only: no record is retained). The sandbox's own records are the exchange's,
    not the client's: they are kept for the tail but not scanned."""

    def __init__(self, scanner: _Scanner, size: int = 1000) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.lines: Deque[str] = collections.deque(maxlen=size)
        self.setFormatter(
            logging.Formatter("%(relativeCreated)8.0f %(threadName)s %(name)s %(message)s")
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if not record.name.startswith("sixmm.sandbox"):
                self.scanner.scan(f"log {record.name}", line)
            if record.levelno >= logging.INFO:
                self.lines.append(line)
        except Exception:  # never let logging break the soak
            pass


class _Tracker:
    """The soak's callbacks: records what was delivered, checks order and uniqueness.

    Only plain ints and strings built here are kept, so nothing allocated by sixmm outlives
    the manager (the memory check counts what sixmm's files still hold after ``stop()``).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch: Dict[str, int] = collections.defaultdict(int)
        self.last_trade: Dict[str, Tuple[int, int]] = {}
        self.trades = 0
        self.trade_counts: Dict[str, int] = collections.defaultdict(int)
        self.user_keys: Set[str] = set()
        self.user_events = 0
        self.other = 0
        self.losses = 0
        self.duplicates = 0
        self.errors: Counter[str] = collections.Counter()
        self.lost_reasons: Counter[str] = collections.Counter()
        self.problems: List[str] = []
        self.lost_states: List[str] = []
        self.stopping = False
        self.scanner: Optional[_Scanner] = None
        self.note: Optional[Callable[[str], None]] = None
        self.raw_seen: Set[int] = set()
        self.refused_topics: Set[str] = set()  # SubscriptionErrors heard by on_error

    def problem(self, text: str) -> None:
        if self.note is not None:
            self.note(f"PROBLEM: {text}")
        with self.lock:
            if len(self.problems) < 50:
                self.problems.append(text)

    def on_state(self, event: Any) -> None:
        if self.scanner is not None:
            self.scanner.scan("on_state", f"{event.reason}\n{event!r}")
        with self.lock:
            if event.state is not StreamState.CONNECTED:
                self.epoch[str(event.connection)] += 1
            if event.state is StreamState.LOST and not self.stopping:
                self.lost_states.append(f"{event.connection}: {event.reason}")

    def on_error(self, error: BaseException) -> None:
        if self.scanner is not None:
            self.scanner.scan_error("on_error", error)
        name = type(error).__name__
        with self.lock:
            self.errors[name] += 1
            if isinstance(error, sixmm.ConnectionLost):  # numbers out: one line per kind
                self.lost_reasons[re.sub(r"\d+(\.\d+)?", "N", str(error))[:100]] += 1
        if isinstance(error, SubscriptionError):
            with self.lock:
                self.refused_topics.add(str(error.topic))
        if isinstance(error, (sixmm.CallbackError, sixmm.AuthError)):
            self.problem(f"unexpected error reported: {name}: {error}")

    def on_trade(self, trade: Any) -> None:
        lane = threading.current_thread().name
        lane = lane[6:] if lane.startswith("sixmm-") else lane
        tid = int(trade.trade_id)
        symbol = str(trade.symbol)
        with self.lock:
            self.trades += 1
            self.trade_counts[symbol] += 1
            epoch = self.epoch[lane]
            last = self.last_trade.get(symbol)
            self.last_trade[symbol] = (tid, epoch)
        if last is None:
            return
        last_id, last_epoch = last
        if tid <= last_id:
            with self.lock:
                self.duplicates += 1
            self.problem(f"trade {symbol} #{tid} delivered after #{last_id} (duplicate/reordered)")
        elif tid != last_id + 1 and epoch == last_epoch:
            with self.lock:
                self.losses += tid - last_id - 1
            self.problem(f"trades {symbol} #{last_id + 1}..#{tid - 1} lost within one session")

    def on_user(self, event: Any) -> None:
        key = getattr(event, "dedupe_key", None)
        with self.lock:
            self.user_events += 1
            if key is None:
                return
            text = repr(key)
            duplicate = text in self.user_keys
            self.user_keys.add(text)
            if duplicate:
                self.duplicates += 1
        if duplicate:
            self.problem(f"user event delivered twice: {text[:120]}")

    def on_any(self, item: Any) -> None:
        with self.lock:
            self.other += 1

    def on_raw(self, envelope: Any) -> None:
        """The raw topic's envelopes: each ``soak_seq`` published must arrive once."""
        data = envelope.get("data") if isinstance(envelope, dict) else None
        if not isinstance(data, dict) or "fundingRate" not in data:
            self.problem(f"raw topic delivered {str(envelope)[:120]!r}")
            return
        seq = data.get("soak_seq")
        if not isinstance(seq, int):
            return  # the sandbox's own funding pushes
        with self.lock:
            duplicate = seq in self.raw_seen
            self.raw_seen.add(seq)
            if duplicate:
                self.duplicates += 1
        if duplicate:
            self.problem(f"raw topic envelope #{seq} delivered twice")


@dataclass
class _Check:
    """One injected fault whose effect must be seen before ``deadline``."""

    kind: str
    symbol: str
    deadline: float
    before: Dict[str, Any]
    sub: Any = None
    #: for the newer kinds: returns a verdict ("seen", "moot", "bad: ...") or None (not yet)
    probe: Optional[Callable[[], Optional[str]]] = None


class _Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.result = SoakResult(config)
        self.tracker = _Tracker()
        self.checks: List[_Check] = []
        self.injected: Counter[Tuple[str, str]] = collections.Counter()
        self.rest_failures = 0
        self.probes = list(_PROBE_TOPICS)
        self.rng.shuffle(self.probes)
        self.first_round = [k for k in config.kinds if config.kinds[k] > 0]
        self.rng.shuffle(self.first_round)
        #: (when, kind, action): ends of the faults that last a while (dead keys...)
        self.timers: List[Tuple[float, str, Callable[[], None]]] = []
        self.raw_published = 0
        self.scanner = _Scanner([])
        self.tracker.scanner = self.scanner
        self.tracker.note = self._note
        self.refused_seen: List[str] = []
        self.silent_until = 0.0
        self.tail: Optional[_LogTail] = None
        self.sb: Optional[Sandbox] = None

    # -- helpers --------------------------------------------------------------------------

    def _conn_totals(self, streams: StreamManager) -> int:
        conns = streams.stats()["connections"]
        return sum(int(c["connects"]) + int(c["failed_attempts"]) for c in conns.values())

    def _inject(self, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]) -> None:
        if self.first_round:  # every kind once (shuffled) first, then weighted draws
            kind = self.first_round.pop()
        else:
            kinds = list(self.cfg.kinds)
            kind = self.rng.choices(kinds, weights=[self.cfg.kinds[k] for k in kinds])[0]
        if not self._inject_kind(kind, sb, streams, books) and kind in self.cfg.kinds:
            if not self.result.faults[kind]:
                self.first_round.append(kind)  # moot now: try this kind again next time
            return
        self.result.faults[kind] += 1
        self._note(f"fault injected: {kind}")

    def _inject_kind(
        self, kind: str, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]
    ) -> bool:
        """Inject one fault of ``kind``; False if it would have been moot (not injected)."""
        symbol = self.rng.choice(SYMBOLS)
        if kind == "drop":
            self.result.sockets_dropped += sb.drop_all()
        elif kind == "silence":
            seconds = self.rng.uniform(self.cfg.stale_after * 2.0, self.cfg.stale_after * 3.5)
            sb.go_silent(seconds)
            self.silent_until = max(self.silent_until, time.monotonic() + seconds)
        elif kind in ("gap", "crossed"):
            book = books[symbol]
            pending = {c.symbol for c in self.checks if c.kind in ("gap", "crossed")}
            before = book.stats()
            if not before["synced"] or symbol in pending:
                return False  # the fault would be moot
            before["conns"] = self._conn_totals(streams)
            self.checks.append(_Check(kind, symbol, time.monotonic() + _CHECK_TIMEOUT, before))
            self.injected[(kind, symbol)] += 1
            if kind == "gap":
                sb.skip_versions(symbol, self.rng.randint(1, 4))
            else:
                sb.cross_book(symbol)
        elif kind == "malformed":
            sb.send_malformed()
        elif kind == "refused_subscribe":
            if not self.probes:
                return False
            topic = self.probes.pop()
            sb.reject_next_subscribe(topic, message="soak: refused")
            sub = streams.subscribe(topic, self.tracker.on_any)
            self.checks.append(_Check(kind, topic, time.monotonic() + 15.0, {}, sub))
        elif kind == "listen_key_expiry":
            sb.expire_listen_key()
        elif kind == "listen_key_rest_failure":
            sb.fail_next_rest(5002, http_status=503, count=1, path=LISTEN_KEY_PATH)
            self.rest_failures += 1
        elif kind == "burst":
            sb.burst(symbol, self.rng.randint(100, 400))
        else:
            return self._inject_new(kind, symbol, sb, streams, books)
        return True

    # -- the faults of issue 11: each with a probe of its effect ---------------------------

    @staticmethod
    def _sum(streams: StreamManager, name: str) -> int:
        conns = streams.stats()["connections"]
        return sum(int(c.get(name) or 0) for c in conns.values())

    @staticmethod
    def _key_stats(streams: StreamManager) -> Dict[str, Any]:
        user = streams.stats()["connections"].get("user", {})
        return dict(user.get("listen_key") or {})

    def _check(self, kind: str, label: str, within: float, probe: Any) -> None:
        self.checks.append(_Check(kind, label, time.monotonic() + within, {}, probe=probe))

    def _inject_new(
        self, kind: str, symbol: str, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]
    ) -> bool:
        cfg = self.cfg
        if self._active(kind):
            return False  # one of each at a time: its effect must be attributable
        if kind == "half_frame":
            before = self._conn_totals(streams)
            stalled = sb.stall_half_frame(seconds=cfg.stale_after * 8, interval=0.1)
            if not stalled:
                return False
            self.result.sockets_stalled += stalled
            # every stalled socket is judged silent (no frame completes) and replaced
            self._check(
                kind,
                f"{stalled} socket(s)",
                cfg.stale_after * 2 + 10.0,
                lambda: "seen" if self._conn_totals(streams) >= before + stalled else None,
            )
        elif kind in ("trickle_handshake", "redirect"):
            before = self._sum(streams, "failed_attempts")
            if kind == "trickle_handshake":
                sb.trickle_handshake(count=1, interval=0.2, seconds=cfg.connect_timeout * 3)
            else:
                base = sb.ws_url.split("/", 3)
                location = f"{base[0]}//{base[2]}{REDIRECT_PATH}"
                sb.redirect_upgrade(location, status=self.rng.choice((301, 302, 307, 308)))
            self.result.sockets_dropped += sb.drop_all()  # the next upgrade meets the fault
            # the attempt fails (the trickle within connect_timeout; the redirect refused)
            self._check(
                kind,
                "next upgrade",
                cfg.connect_timeout + 10.0,
                lambda: "seen" if self._sum(streams, "failed_attempts") > before else None,
            )
        elif kind == "rate_limit":
            retry = round(self.rng.uniform(0.8, 2.0), 2)
            status = self.rng.choice((429, 503))
            if self.rng.random() < 0.5:
                since = time.monotonic()
                sb.rate_limit(retry, count=1, target="ws", status=status)
                self.result.sockets_dropped += sb.drop_all()
                self._check(
                    kind, f"ws {status} {retry}s", retry + 10.0, self._spacing(sb, since, retry)
                )
            else:
                path = LISTEN_KEY_PATH
                before = sum(1 for c in sb.rest_calls if c["code"] == 5003)
                sb.rate_limit(retry, count=1, target="rest", status=status, path=path)
                self._check(
                    kind,
                    f"rest {status} {retry}s",
                    retry + 10.0,
                    lambda: (
                        "seen"
                        if sum(1 for c in sb.rest_calls if c["code"] == 5003) > before
                        else None
                    ),
                )
        elif kind in ("dead_keys", "echo_refusals"):
            seconds = self.rng.uniform(2.0, 4.0)
            echo = kind == "echo_refusals" or self.rng.random() < 0.5
            recreations = int(self._key_stats(streams).get("recreations", 0))
            dead = int(self._key_stats(streams).get("dead_on_arrival", 0))
            posts = self._key_posts(sb)
            upgrades = len(sb.ws_upgrades)
            since = time.monotonic()
            if echo:
                sb.echo_refusals(True)
            if kind == "dead_keys":
                sb.keys_dead_on_arrival(True)
            sb.expire_listen_key()  # the client must replace its key: into the fault

            window: Dict[str, int] = {}

            def end() -> None:
                sb.keys_dead_on_arrival(False)
                sb.echo_refusals(False)
                window["created"] = self._storm_check(sb, streams, since, posts, upgrades)

            self.timers.append((since + seconds, kind, end))
            if kind == "dead_keys":
                self._check(
                    kind,
                    f"{seconds:.1f}s" + (" echoed" if echo else ""),
                    seconds + 10.0,
                    lambda: (
                        "seen"
                        if int(self._key_stats(streams).get("dead_on_arrival", 0)) > dead
                        # the keeper's pacing (after an earlier dead streak) created no key
                        # while the fault was on: nothing could be dead on arrival
                        else "moot"
                        if window.get("created") == 0
                        else None
                    ),
                )
            else:
                self._check(
                    kind,
                    f"{seconds:.1f}s",
                    seconds + 10.0,
                    lambda: (
                        "seen"
                        if int(self._key_stats(streams).get("recreations", 0)) > recreations
                        else None
                    ),
                )
        elif kind == "stall_rest":
            seconds = round(self.rng.uniform(1.0, 3.0), 2)
            puts = self._key_calls(sb, "PUT")
            sb.stall_rest(seconds, method="PUT", path=LISTEN_KEY_PATH, count=1)
            # the stalled renewal does not stop the keeper: renewals go on after it
            self._check(
                kind,
                f"PUT {seconds}s",
                seconds + 12.0,
                lambda: "seen" if self._key_calls(sb, "PUT") >= puts + 2 else None,
            )
        elif kind == "silence_topic":
            pending = {c.symbol for c in self.checks}
            choices = [f"market.depth.{s}" for s in SYMBOLS if books[s].synced]
            choices.append("market.ticker.ETHUSDT")
            choices = [t for t in choices if t not in pending]
            if not choices:
                return False
            topic = self.rng.choice(choices)
            forever = self.rng.random() < 0.5  # until unsilence_topic, resubscribes or not
            before = self._sum(streams, "topic_silences")
            conns = self._conn_totals(streams)
            sb.silence_topic(topic, math.inf if forever else None)
            state = {"unsilenced": not forever}

            def probe() -> Optional[str]:
                if self._sum(streams, "topic_silences") > before:
                    if not state["unsilenced"]:
                        sb.unsilence_topic(topic)
                        state["unsilenced"] = True
                    return "seen"
                if self._conn_totals(streams) > conns:
                    return "moot"  # a reconnect resubscribed it before it was judged
                return None

            def heal() -> None:
                if not state["unsilenced"]:
                    sb.unsilence_topic(topic)
                    state["unsilenced"] = True

            self.timers.append((time.monotonic() + cfg.topic_silence * 2 + 10.0, kind, heal))
            self._check(kind, topic, cfg.topic_silence * 2 + 8.0, probe)
        elif kind == "corrupt_depth":
            book = books[symbol]
            pending = {c.symbol for c in self.checks}
            if not book.synced or symbol in pending:
                return False
            how = self.rng.choice(("nan", "truncate", "headless"))
            resyncs = int(book.stats()["resyncs"])
            unparsed = self._sum(streams, "unparsed_resyncs")
            conns = self._conn_totals(streams)
            sb.corrupt_next_depth(symbol, how)

            def corrupt_probe() -> Optional[str]:
                if int(book.stats()["resyncs"]) > resyncs:
                    return "seen" if self._sum(streams, "unparsed_resyncs") > unparsed else "moot"
                if self._conn_totals(streams) > conns:
                    return "moot"
                return None

            self._check(kind, f"{symbol} {how}", _CHECK_TIMEOUT, corrupt_probe)
        elif kind == "raw_publish":
            self.raw_published += 1
            seq = self.raw_published
            conns = self._conn_totals(streams)
            data = {"symbol": "BTCUSDT", "fundingRate": "0.0001", "soak_seq": seq}
            if not sb.publish(RAW_TOPIC, data):
                return False  # not subscribed at this moment (reconnecting): moot
            self._check(
                kind,
                f"{RAW_TOPIC} #{seq}",
                _CHECK_TIMEOUT,
                lambda: (
                    "seen"
                    if seq in self.tracker.raw_seen
                    else "moot"
                    if self._conn_totals(streams) > conns
                    else None
                ),
            )
        elif kind == "stop_cycle":
            self._stop_cycle(sb)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return True

    @staticmethod
    def _key_calls(sb: Sandbox, method: str) -> int:
        calls = sb.rest_calls
        return sum(1 for c in calls if c["method"] == method and c["path"] == LISTEN_KEY_PATH)

    def _key_posts(self, sb: Sandbox) -> int:
        return self._key_calls(sb, "POST")

    def _spacing(self, sb: Sandbox, since: float, retry: float) -> Callable[[], Optional[str]]:
        """Probe: after a rate-limited upgrade, no upgrade to the host (from any connection)
        before its Retry-After. An attempt that reaches the server within ``_IN_FLIGHT`` s
        of the limited one was already under way when the answer came (the public and the
        private socket reconnect together after the drop): it is not held to it."""

        def probe() -> Optional[str]:
            ups = [u for u in sb.ws_upgrades if u["t"] >= since]
            limited = [i for i, u in enumerate(ups) if u["status"] != 101]
            if not limited:
                return None
            t0 = ups[limited[0]]["t"]
            later = [u["t"] - t0 for u in ups[limited[0] + 1 :] if u["t"] - t0 > _IN_FLIGHT]
            if not later:
                return None
            self.result.rate_limit_waits.append(later[0])
            if later[0] < retry - 0.05:
                return f"bad: next upgrade {later[0]:.2f}s after a Retry-After of {retry}s"
            return "seen"

        return probe

    def _storm_check(
        self, sb: Sandbox, streams: StreamManager, since: float, posts: int, upgrades: int
    ) -> int:
        """At the end of a dead-key window: key creations and connects stayed paced.
        Returns the number of listenKeys created in the window."""
        seconds = max(0.5, time.monotonic() - since)
        created = self._key_posts(sb) - posts
        connects = len(sb.ws_upgrades) - upgrades
        rate = created / seconds
        self.result.key_creations_peak = max(self.result.key_creations_peak, rate)
        policy = streams.stats()["rate_limits"]["policy"]
        key_bound = policy["listen_key_burst"] + policy["listen_keys_per_second"] * seconds + 2
        conn_bound = policy["connect_burst"] + policy["connects_per_second"] * seconds + 4
        if created > key_bound:
            self.tracker.problem(f"key storm: {created} listenKeys created in {seconds:.1f}s")
        if connects > conn_bound:
            self.tracker.problem(f"connect storm: {connects} upgrades in {seconds:.1f}s")
        return created

    def _stop_cycle(self, sb: Sandbox) -> None:
        """A short-lived second manager started, then stopped while a fault is active:
        ``stop(timeout)`` returns within timeout + slack and leaves no thread of its own."""
        cfg, tr = self.cfg, self.tracker
        fault = self.rng.choice(("trickle_handshake", "stall_delete", "half_frame", "plain"))
        if self.rng.random() < 0.5:  # a token-only client: the private stream uses ?token=
            token = sb.issue_token()
            with self.scanner.lock:
                self.scanner.secrets = [*self.scanner.secrets, token]
            rest = RestClient(token=token, base_url=sb.rest_url)
            if fault == "stall_delete":
                fault = "plain"  # no listenKey to close
        else:
            rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        before = set(threading.enumerate())
        mini = StreamManager(
            sb.ws_url,
            rest=rest,
            ping_interval=cfg.ping_interval,
            stale_after=cfg.stale_after,
            backoff=Backoff(initial=0.05, maximum=0.25),
            on_state=lambda e: self.scanner.scan("mini on_state", f"{e.reason}\n{e!r}"),
            on_error=lambda e: self.scanner.scan_error("mini on_error", e),
            connect_timeout=cfg.connect_timeout,
        )
        timeout = round(self.rng.uniform(*cfg.stop_timeout), 2)
        try:
            mini.trades("BTCUSDT", tr.on_any)
            mini.user(on_event=tr.on_any)
            if fault == "trickle_handshake":
                sb.trickle_handshake(count=2, interval=0.2, seconds=cfg.connect_timeout * 3)
            mini.start()
            if fault == "trickle_handshake":
                threading.Event().wait(0.4)  # in the middle of the trickled upgrade
            else:
                sb.wait_for(lambda m=mini: _authenticated(m), 8.0)
                if fault == "stall_delete":  # the listenKey DELETE at stop never answers in time
                    sb.stall_rest(timeout + 3.0, method="DELETE", path=LISTEN_KEY_PATH, count=1)
                elif fault == "half_frame":
                    self.result.sockets_stalled += sb.stall_half_frame(
                        seconds=cfg.stale_after * 8, interval=0.1
                    )
            self._scan_stats("mini stats()", mini)
        finally:
            started = time.monotonic()
            mini.stop(timeout)
            elapsed = time.monotonic() - started
            rest.close()
        self._stopped(f"stop_cycle ({fault})", elapsed, timeout)
        deadline = time.monotonic() + 0.25  # a helper thread may still be returning
        while True:
            left = [
                t.name
                for t in threading.enumerate()
                if t not in before and t.name.startswith("sixmm") and t.is_alive()
            ]
            if not left or time.monotonic() >= deadline:
                break
            threading.Event().wait(0.01)
        if left:
            tr.problem(f"stop_cycle ({fault}): threads left after stop(): {sorted(left)}")
        del mini, rest

    def _stopped(self, what: str, elapsed: float, timeout: float) -> None:
        self.result.stops.append(elapsed - timeout)
        if elapsed > timeout + self.cfg.stop_slack:
            self.result.stop_overruns += 1
            self.tracker.problem(f"{what}: stop({timeout}) took {elapsed:.2f}s")

    def _poll_checks(self, streams: StreamManager, books: Dict[str, Any], final: bool) -> None:
        now = time.monotonic()
        for check in list(self.checks):
            verdict: Optional[str] = None
            if check.probe is not None:
                verdict = check.probe()
            elif check.kind in ("gap", "crossed"):
                stats = books[check.symbol].stats()
                field_name = "gaps" if check.kind == "gap" else "crossed"
                if stats[field_name] > check.before[field_name]:
                    verdict = "seen"
                elif (
                    stats["resyncs"] > check.before["resyncs"]
                    or self._conn_totals(streams) > check.before["conns"]
                ):
                    verdict = "moot"
            else:
                try:
                    if check.sub.wait_ready(0):
                        verdict = "accepted"
                except SubscriptionError:
                    verdict = "refused"
            if verdict is None and now < check.deadline:
                continue
            self.checks.remove(check)
            if verdict == "moot":
                self.result.faults_absorbed += 1
            elif verdict is None:
                self.tracker.problem(
                    f"{check.kind} on {check.symbol}: no effect within the deadline"
                    + (" (at the end of the run)" if final else "")
                )
            elif verdict == "accepted":
                if self._refusal_lost(check.symbol):
                    self.result.faults_absorbed += 1  # a reconnect separated it: moot
                    check.sub.unsubscribe()
                else:
                    self.tracker.problem(f"refused subscribe of {check.symbol} was accepted")
            elif verdict == "refused":
                self.refused_seen.append(check.symbol)
            elif verdict.startswith("bad"):
                self.tracker.problem(f"{check.kind} on {check.symbol}: {verdict[4:].strip()}")

    def _note(self, text: str) -> None:
        """A line of the soak's own in the log tail (what was injected when)."""
        if self.tail is not None:
            ms = (time.time() - logging._startTime) * 1000  # as %(relativeCreated)
            self.tail.lines.append(f"{ms:8.0f} soak {text}")

    def _refusal_lost(self, topic: str) -> bool:
        """The probe was subscribed on more than one socket: the refusal went out on one
        that was lost before it was read (or went silent), and the next socket's subscribe
        was accepted, as the server says (the rejection is one-shot)."""
        assert self.sb is not None
        conns = {
            op["conn"]
            for op in self.sb.ops
            if op["op"] == "subscribe" and topic in (op.get("args") or ())
        }
        return len(conns) > 1

    def _run_timers(self, everything: bool = False) -> None:
        now = time.monotonic()
        for entry in sorted(self.timers, key=lambda e: e[0]):
            if everything or entry[0] <= now:
                self.timers.remove(entry)
                entry[2]()

    def _active(self, kind: str) -> bool:
        return any(k == kind for _, k, _ in self.timers) or any(c.kind == kind for c in self.checks)

    def _scan_stats(self, where: str, streams: StreamManager) -> None:
        self.scanner.scan(where, json.dumps(streams.stats(), default=str))

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> SoakResult:
        cfg = self.cfg
        res = self.result
        tail = self.tail = _LogTail(self.scanner)
        # every record of the client at DEBUG (sixmm and urllib3, whose request lines carry
        # the signed query) is scanned; the sandbox (the exchange) logs at INFO
        loggers = {
            "sixmm": logging.DEBUG,
            "urllib3": logging.DEBUG,
            "sixmm.sandbox": logging.INFO,
        }
        saved_loggers = []
        for name, level in loggers.items():
            log = logging.getLogger(name)
            saved_loggers.append((log, log.level, log.propagate))
            log.setLevel(level)
            if name != "sixmm.sandbox":
                log.addHandler(tail)
                log.propagate = False  # records must not be kept by outside handlers
        import sixmm.keepalive
        import sixmm.supervisor  # noqa: F401  (imported lazily by the manager: not a leak)

        gc.collect()
        tracing = cfg.memory and not tracemalloc.is_tracing()
        final: Dict[str, Any] = {}
        try:
            with Sandbox(port=0, seed=cfg.seed, user_event_interval=0.2, replay_on_connect=5) as sb:
                if tracing:
                    tracemalloc.start(1)
                final = self._run_with(sb)
            del sb
        finally:
            for log, level, propagate in saved_loggers:
                log.removeHandler(tail)
                log.setLevel(level)
                log.propagate = propagate
            res.log_tail = list(tail.lines)
            if tracing:
                # Measured once the sandbox is gone too: blocks freed by sixmm and reused
                # from the interpreter's free lists by the (in-process) sandbox keep their
                # first owner's file name in tracemalloc.
                gc.collect()
                snap = tracemalloc.take_snapshot()
                tracemalloc.stop()
                snap = snap.filter_traces(
                    (
                        tracemalloc.Filter(True, "*/sixmm/*"),
                        tracemalloc.Filter(False, "*/sixmm/sandbox/*"),
                    )
                )
                res.memory_retained = sum(s.size for s in snap.statistics("filename"))
                res.memory_top = [str(s) for s in snap.statistics("lineno")[:10]]
        if res.memory_retained is not None and res.memory_retained > cfg.memory_budget:
            self.tracker.problem(
                f"sixmm still holds {res.memory_retained} bytes after stop() "
                f"(budget {cfg.memory_budget})"
            )
        self._account(final)
        res.problems.extend(self.tracker.problems)
        return res

    def _run_with(self, sb: Sandbox) -> Dict[str, Any]:
        """Run the manager against ``sb``; check the threads; return the final stats."""
        res, tr = self.result, self.tracker
        gc.collect()
        threads_before = threading.active_count()
        final = self._streams(sb)
        deadline = time.monotonic() + 5.0
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.02)
        res.thread_delta = threading.active_count() - threads_before
        if res.thread_delta > 0:
            names = sorted(t.name for t in threading.enumerate())
            tr.problem(f"threads left after stop(): {names}")
        return final

    def _streams(self, sb: Sandbox) -> Dict[str, Any]:
        """Run the manager; return its final stats as plain JSON data (nothing of sixmm's)."""
        cfg, res, tr = self.cfg, self.result, self.tracker
        self.scanner.secrets = [sb.api_key, sb.api_secret]
        self.sb = sb
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        bound = cfg.topic_silence
        streams = StreamManager(
            sb.ws_url,
            rest=rest,
            ping_interval=cfg.ping_interval,
            stale_after=cfg.stale_after,
            backoff=Backoff(initial=0.05, maximum=0.25),
            on_state=tr.on_state,
            on_error=tr.on_error,
            listen_key_renew_interval=cfg.listen_key_renew_interval,
            ack_timeout=3.0,
            connect_timeout=cfg.connect_timeout,
            liveness=sixmm.Liveness(depth=bound, ticker=bound, tickers=bound),
        )
        started = time.monotonic()
        try:
            for symbol in SYMBOLS:
                streams.trades(symbol, tr.on_trade)
            streams.klines("BTCUSDT", "1m", tr.on_any)
            streams.ticker("ETHUSDT", tr.on_any)
            streams.tickers(tr.on_any)
            books = {s: streams.order_book(s) for s in SYMBOLS}
            streams.subscribe(RAW_TOPIC, tr.on_raw)
            streams.user(on_order=tr.on_user, on_account=tr.on_user, on_event=tr.on_user)
            streams.start()
            for book in books.values():
                if not book.wait_synced(10):
                    tr.problem(f"book {book.symbol} never synced at start")
            stop_at = time.monotonic() + cfg.seconds
            next_fault = time.monotonic() + self.rng.uniform(*cfg.fault_every)
            idle = threading.Event()
            while time.monotonic() < stop_at:
                self._poll_checks(streams, books, final=False)
                self._run_timers()
                if time.monotonic() >= next_fault:
                    self._scan_stats("stats()", streams)
                    self._inject(sb, streams, books)
                    next_fault = time.monotonic() + self.rng.uniform(*cfg.fault_every)
                idle.wait(0.05)
            self._settle(sb, streams, books)
            res.duration = time.monotonic() - started
            text = json.dumps(streams.stats(), default=str)
            self.scanner.scan("final stats()", text)
            final: Dict[str, Any] = json.loads(text)
        finally:
            tr.stopping = True
            self._run_timers(everything=True)
            # the final stop, with the listenKey DELETE stalled past its timeout
            timeout = cfg.final_stop_timeout
            sb.stall_rest(timeout + 1.0, method="DELETE", path=LISTEN_KEY_PATH, count=1)
            stop_started = time.monotonic()
            streams.stop(timeout)
            self._stopped("final stop", time.monotonic() - stop_started, timeout)
            rest.close()
        for leak in self.scanner.leaks(sb.issued_listen_keys):
            tr.problem(f"credential captured: {leak}")
        res.credential_leaks = len(self.scanner.leaks(sb.issued_listen_keys))
        res.texts_scanned = self.scanner.scanned
        followed = [u for u in sb.ws_upgrades if u["path"] == REDIRECT_PATH]
        if followed:
            tr.problem(f"a redirect was followed: {len(followed)} upgrade(s) at {REDIRECT_PATH}")
        del streams, books, rest
        return final

    def _settle(self, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]) -> None:
        """End of the fault phase: let everything heal, then compare with the truth."""
        cfg, tr = self.cfg, self.tracker
        # A silence cut short (shorter than stale_after) would lose frames unseen, as no
        # client can tell: let the last one run its course (and be judged stale) instead.
        while time.monotonic() < self.silent_until:
            threading.Event().wait(0.05)
        sb.resume()
        self._run_timers(everything=True)  # dead keys and echoes off, silenced topics healed
        sb.unsilence_topic()

        def wait(pred: Callable[[], Any], what: str, timeout: float = cfg.settle_timeout) -> bool:
            if sb.wait_for(pred, timeout):
                return True
            tr.problem(f"not within {timeout:.0f}s at the end: {what}")
            return False

        end = time.monotonic() + cfg.settle_timeout
        while self.checks and time.monotonic() < end:
            self._poll_checks(streams, books, final=False)
            threading.Event().wait(0.05)
        self._poll_checks(streams, books, final=True)
        wait(
            lambda: sum(1 for c in sb.rest_calls if c["code"] == 5002) >= self.rest_failures,
            "injected listenKey REST failures consumed",
        )

        def public_topics() -> List[str]:
            topics: List[str] = []
            for conn in sb.connections:
                if conn["kind"] == "public":
                    topics.extend(conn["topics"])
            return sorted(topics)

        def desired() -> List[str]:
            return sorted(t for t in streams.stats()["topics"] if t != "user")

        if not wait(lambda: public_topics() == desired(), "sandbox topics == desired topics"):
            tr.problem(f"subscribed {public_topics()} != desired {desired()}")
        for topic in desired():
            if topic in _PROBE_TOPICS:
                tr.problem(f"refused probe topic {topic} is still desired")

        def user_ok() -> bool:
            user = streams.stats()["connections"].get("user", {})
            keys = sb.listen_keys
            private = [c for c in sb.connections if c["kind"] == "private"]
            return bool(
                user.get("authenticated") and len(private) == 1 and private[0].get("key") in keys
            )

        wait(user_ok, "private stream authenticated with a valid listenKey")
        sb.pause_market()
        for symbol, book in books.items():
            version, bids, asks = sb.book_truth(symbol)
            synced = wait(
                lambda b=book, v=version: b.synced and b.version == v,  # type: ignore[misc]
                f"book {symbol} synced at the truth's version {version}",
            )
            if synced and book.levels() != (bids, asks):
                tr.problem(f"book {symbol} differs from the truth at version {version}")
        # The stream is still live end to end: a burst per symbol arrives whole.
        counts = dict(tr.trade_counts)
        for symbol in SYMBOLS:
            sb.burst(symbol, 20)
        wait(
            lambda: all(tr.trade_counts[s] >= counts.get(s, 0) + 20 for s in SYMBOLS),
            "a final burst of 20 trades per symbol delivered",
        )
        if streams.state is not StreamState.CONNECTED:
            tr.problem(f"manager state at the end is {streams.state.value}")

    def _account(self, final: Dict[str, Any]) -> None:
        res, tr = self.result, self.tracker
        conns = final.get("connections", {})
        res.reconnects = sum(int(c["reconnects"]) for c in conns.values())
        res.reconnects_by = {name: int(c["reconnects"]) for name, c in conns.items()}
        res.failed_attempts = sum(int(c["failed_attempts"]) for c in conns.values())
        res.messages = sum(int(c["messages"]) for c in conns.values())
        res.malformed_counted = sum(int(c.get("malformed", 0)) for c in conns.values())
        res.replays_dropped = int(conns.get("user", {}).get("duplicates", 0))
        res.topic_silences = sum(int(c.get("topic_silences") or 0) for c in conns.values())
        res.unparsed_resyncs = sum(int(c.get("unparsed_resyncs") or 0) for c in conns.values())
        res.trades, res.user_events = tr.trades, tr.user_events
        res.losses, res.duplicates = tr.losses, tr.duplicates
        res.errors_reported = collections.Counter(tr.errors)
        res.connection_lost = collections.Counter(tr.lost_reasons)
        for lost in tr.lost_states:
            tr.problem(f"state LOST: {lost}")
        # (the stalled sockets of a stop_cycle may be the short-lived manager's: not counted)
        if res.reconnects + res.failed_attempts < res.sockets_dropped:
            tr.problem(
                f"{res.sockets_dropped} sockets dropped but only {res.reconnects} reconnects "
                f"(+{res.failed_attempts} failed attempts)"
            )
        for symbol, book in final.get("books", {}).items():
            res.resyncs += int(book["resyncs"])
            res.gaps_detected += int(book["gaps"])
            res.crossed_detected += int(book["crossed"])
            if book["resyncs"] < book["gaps"] + book["crossed"]:
                tr.problem(f"book {symbol}: resyncs {book['resyncs']} < gaps + crossed")
            for kind, field_name in (("gap", "gaps"), ("crossed", "crossed")):
                if book[field_name] > self.injected[(kind, symbol)]:
                    tr.problem(
                        f"book {symbol}: {book[field_name]} {field_name} seen but only "
                        f"{self.injected[(kind, symbol)]} injected"
                    )
        unheard = [t for t in self.refused_seen if t not in tr.refused_topics]
        if unheard:
            tr.problem(f"refused subscribes never reported to on_error: {unheard}")


def _authenticated(streams: StreamManager) -> bool:
    return bool(streams.stats()["connections"].get("user", {}).get("authenticated"))


def run_soak(config: Optional[SoakConfig] = None) -> SoakResult:
    """Run one soak (blocking for about ``config.seconds`` plus the settle phase)."""
    return _Soak(config or SoakConfig()).run()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="run length in minutes")
    parser.add_argument("--seconds", type=float, default=60.0, help="run length in seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    parser.add_argument("--no-memory", action="store_true", help="skip tracemalloc")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    config = SoakConfig(seconds=seconds, seed=args.seed, memory=not args.no_memory)
    print(f"soak: {seconds:.0f} s, seed {args.seed} ...", file=sys.stderr)
    result = run_soak(config)
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
