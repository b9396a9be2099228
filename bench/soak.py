"""Soak run: one StreamManager against the sandbox under a seeded schedule of faults.

Run: ``python bench/soak.py [--minutes 10 | --seconds 90] [--seed 1] [--no-memory]``.
Prints a markdown summary table and exits non-zero if any check failed. The short CI soak
(``tests/test_soak.py``) imports :func:`run_soak` from here.

What runs: trades of 3 symbols, a kline, a ticker, all tickers, 3 live order books and the
private user stream (listenKey renewed every second, events replayed on every reconnect),
with fast heartbeat/staleness/backoff. Every ``fault_every`` seconds one fault is injected:
each kind once first (in a seeded shuffle), then seeded weighted draws. The kinds: socket
drops, silent periods longer than ``stale_after``, depth version gaps, crossed books,
malformed frames, refused subscribes (a fresh probe topic), listenKey expiry, failing
listenKey REST calls, and trade bursts.

What is checked at the end (each failure is listed in ``SoakResult.problems``):

- every desired topic is subscribed on the sandbox, nothing else;
- with the market paused, every book reaches the truth's version and equals it level by level;
- trades: ids strictly increasing per symbol (no duplicate, no reordering), and consecutive
  within one connection session (a jump is a loss unless a reconnect separates it);
- user events: no ``dedupe_key`` delivered twice (the sandbox replays 5 on every reconnect);
- every injected gap/crossing was seen by its book or made moot by a resync; every book's
  ``resyncs >= gaps + crossed``; ``reconnects + failed attempts >= sockets dropped``;
- refused subscribes raised ``SubscriptionError`` and left the desired set;
- the private stream is authenticated with a key the sandbox holds;
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
import random
import re
import sys
import threading
import time
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
}
_PROBE_TOPICS = tuple(
    f"market.kline.{s}.{i}" for i in ("5m", "15m", "30m", "1h", "4h", "1d") for s in SYMBOLS
)
_CHECK_TIMEOUT = 6.0


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


@dataclass
class SoakResult:
    """Figures and verdict of one soak run (:meth:`table` is paste-ready markdown)."""

    config: SoakConfig
    duration: float = 0.0
    faults: Counter[str] = field(default_factory=collections.Counter)
    sockets_dropped: int = 0
    reconnects: int = 0
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
            ("reconnects", f"{self.reconnects} (+{self.failed_attempts} failed attempts)"),
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


class _LogTail(logging.Handler):
    """Keeps the last formatted sixmm log lines (strings only: no record is retained)."""

    def __init__(self, size: int = 400) -> None:
        super().__init__(logging.INFO)
        self.lines: Deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(relativeCreated)8.0f %(threadName)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
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

    def problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < 50:
                self.problems.append(text)

    def on_state(self, event: Any) -> None:
        with self.lock:
            if event.state is not StreamState.CONNECTED:
                self.epoch[str(event.connection)] += 1
            if event.state is StreamState.LOST and not self.stopping:
                self.lost_states.append(f"{event.connection}: {event.reason}")

    def on_error(self, error: BaseException) -> None:
        name = type(error).__name__
        with self.lock:
            self.errors[name] += 1
            if isinstance(error, sixmm.ConnectionLost):  # numbers out: one line per kind
                self.lost_reasons[re.sub(r"\d+(\.\d+)?", "N", str(error))[:100]] += 1
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


@dataclass
class _Check:
    """One injected fault whose effect must be seen before ``deadline``."""

    kind: str
    symbol: str
    deadline: float
    before: Dict[str, Any]
    sub: Any = None


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

    def _inject_kind(
        self, kind: str, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]
    ) -> bool:
        """Inject one fault of ``kind``; False if it would have been moot (not injected)."""
        symbol = self.rng.choice(SYMBOLS)
        if kind == "drop":
            self.result.sockets_dropped += sb.drop_all()
        elif kind == "silence":
            sb.go_silent(self.rng.uniform(self.cfg.stale_after * 2.0, self.cfg.stale_after * 3.5))
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
        return True

    def _poll_checks(self, streams: StreamManager, books: Dict[str, Any], final: bool) -> None:
        now = time.monotonic()
        for check in list(self.checks):
            verdict: Optional[str] = None
            if check.kind in ("gap", "crossed"):
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
                self.tracker.problem(f"refused subscribe of {check.symbol} was accepted")

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> SoakResult:
        cfg = self.cfg
        res = self.result
        sixmm_logger = logging.getLogger("sixmm")
        tail = _LogTail()
        saved = (sixmm_logger.level, sixmm_logger.propagate)
        sixmm_logger.addHandler(tail)
        sixmm_logger.setLevel(logging.INFO)
        sixmm_logger.propagate = False  # records must not be kept by outside handlers
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
            sixmm_logger.removeHandler(tail)
            sixmm_logger.setLevel(saved[0])
            sixmm_logger.propagate = saved[1]
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
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
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
            connect_timeout=3.0,
        )
        started = time.monotonic()
        try:
            for symbol in SYMBOLS:
                streams.trades(symbol, tr.on_trade)
            streams.klines("BTCUSDT", "1m", tr.on_any)
            streams.ticker("ETHUSDT", tr.on_any)
            streams.tickers(tr.on_any)
            books = {s: streams.order_book(s) for s in SYMBOLS}
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
                if time.monotonic() >= next_fault:
                    self._inject(sb, streams, books)
                    next_fault = time.monotonic() + self.rng.uniform(*cfg.fault_every)
                idle.wait(0.05)
            self._settle(sb, streams, books)
            res.duration = time.monotonic() - started
            final: Dict[str, Any] = json.loads(json.dumps(streams.stats(), default=str))
        finally:
            tr.stopping = True
            streams.stop()
            rest.close()
        del streams, books, rest
        return final

    def _settle(self, sb: Sandbox, streams: StreamManager, books: Dict[str, Any]) -> None:
        """End of the fault phase: let everything heal, then compare with the truth."""
        cfg, tr = self.cfg, self.tracker
        sb.resume()

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
        res.failed_attempts = sum(int(c["failed_attempts"]) for c in conns.values())
        res.messages = sum(int(c["messages"]) for c in conns.values())
        res.malformed_counted = sum(int(c.get("malformed", 0)) for c in conns.values())
        res.replays_dropped = int(conns.get("user", {}).get("duplicates", 0))
        res.trades, res.user_events = tr.trades, tr.user_events
        res.losses, res.duplicates = tr.losses, tr.duplicates
        res.errors_reported = collections.Counter(tr.errors)
        res.connection_lost = collections.Counter(tr.lost_reasons)
        for lost in tr.lost_states:
            tr.problem(f"state LOST: {lost}")
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
        refused = res.faults.get("refused_subscribe", 0)
        if tr.errors.get("SubscriptionError", 0) < refused:
            tr.problem(f"{refused} refused subscribes but fewer SubscriptionErrors reported")


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
