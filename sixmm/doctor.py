"""``python -m sixmm doctor``: check a 6MM server end to end and say what it saw.

One :class:`Check` per step, plain enough to paste into a bug report: DNS, TCP, TLS, the
WebSocket upgrade, the subscribe ack's shape, pong behaviour, the depth wire variant and its
version continuity, crossed books, fields sixmm does not know, the REST envelope, the clock
offset against ``/v1/time``, and (credentials in the environment) a listenKey round trip and
the private auth ack. ``observed`` lists every [assumed] rule of PROTOCOL.md as ``held``,
``violated`` or ``not seen``. The probe socket is a plain websocket-client connection (the
doctor must see pongs and exact frames); ``capture=PATH`` writes what it saw as a redacted
recording (:mod:`sixmm.recording`), replayable like any other.

Thread-safety: one :class:`Doctor` runs on the calling thread; make one per run.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from typing import Any, Dict, FrozenSet, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import attrs
import websocket

from .errors import ProtocolError, SixMMError
from .orderbook import OrderBook
from .protocol.book import Outcome
from .protocol.depth import parse_depth
from .protocol.events import Push
from .protocol.frames import decode
from .protocol.models import convert
from .protocol.redact import scrub
from .recording import Recorder

__all__ = ["ASSUMED_RULES", "Check", "Doctor", "Report", "rest_url_for"]

#: The [assumed] rules of PROTOCOL.md the doctor can observe: name -> what the rule says.
ASSUMED_RULES: Dict[str, str] = {
    "args_list": "§2 a request's args may carry several topics",
    "ack_failure_shape": "§3 a refused subscribe: success false, reason in message or msg",
    "ack_unsubscribe": "§3 unsubscribe ack: same shape with event unsubscribe",
    "ack_id_type": "§3 an ack's id comes back as sent (a number is a tolerated variant)",
    "pong_shape": '§3 pong: {"id": ..., "event": "pong"} (or nothing)',
    "depth_type": "§4.1 depth data has type snapshot/update (variants: none, envelope event)",
    "depth_levels": "§4.1 a level is [price, quantity] strings (variant: objects)",
    "depth_versions": "§4.1 versions are integers (variant: strings)",
    "depth_continuity": "§4.1 each update starts at version+1 (or names its predecessor)",
    "depth_snapshot_first": "§8 the first depth message after the ack is the snapshot",
    "trade_shape": "§4.2 trade: {symbol, tradeId, price, quantity, side, time}, one or a list",
    "kline_shape": "§4.2 kline: the REST kline fields",
    "ticker_shape": "§4.2 ticker: {symbol, lastPrice, open, high, low, volume, ...}",
    "time_ms": "§8 /v1/time: timestampMs is milliseconds",
    "auth_failure_shape": "§5 refused private auth: success false with a reason, or a close",
    "private_push_shape": "§5 private push: {topic: user.ID, ts, data: {eventType, ...}}",
}

_TRADE = "symbol s price p quantity qty q side S tradeId id t time ts timestamp T isBuyerMaker m"
_KLINE = (
    "symbol s interval i openTime t open o high h low l close c volume v closeTime T "
    "quoteVolume closed isFinal x"
)
_TICKER = (
    "symbol s lastPrice last open openPrice high highPrice low lowPrice volume quoteVolume "
    "priceChange priceChangePercent markPrice indexPrice fundingRate eventTime E"
)
KNOWN_FIELDS: Dict[str, FrozenSet[str]] = {
    "trade": frozenset(_TRADE.split()),
    "kline": frozenset(_KLINE.split()),
    "ticker": frozenset(_TICKER.split()),
}


@attrs.frozen
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


@attrs.define
class Report:
    """What the doctor found: ``ok`` only if every check passed."""

    checks: List[Check] = attrs.field(factory=list)
    observed: Dict[str, Dict[str, str]] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, scrub(detail)))
        return ok

    def saw(self, rule: str, status: str, detail: str = "") -> None:
        """Record an [assumed] rule as held / violated (violated wins over held)."""
        current = self.observed.get(rule)
        if current is not None and current["status"] == "violated":
            return
        if current is not None and status == "held" and current["status"] == "held":
            return
        self.observed[rule] = {"status": status, "detail": scrub(detail)}

    def lines(self) -> List[str]:
        out = [f"{'ok  ' if c.ok else 'FAIL'} {c.name:<18} {c.detail}" for c in self.checks]
        out.append("")
        for rule, seen in self.observed.items():
            out.append(f"     [assumed] {rule:<22} {seen['status']:<9} {seen['detail']}")
        out.append("")
        failed = [c.name for c in self.checks if not c.ok]
        out.append("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
        return out

    def as_dict(self) -> Dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [attrs.asdict(c) for c in self.checks],
            "observed": self.observed,
        }


def rest_url_for(ws_url: str) -> str:
    """The REST base URL that goes with a WebSocket URL (the documented pair, or same host)."""
    parts = urlsplit(ws_url)
    if parts.hostname == "6mm.com":
        return "https://api.6mm.com"
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class Doctor:
    """Runs the checks against ``url`` (and ``rest_url``); :meth:`run` returns a :class:`Report`."""

    def __init__(
        self,
        url: str,
        *,
        rest_url: Optional[str] = None,
        symbol: str = "BTCUSDT",
        seconds: float = 10.0,
        timeout: float = 5.0,
        capture: Optional[str] = None,
        rest: Any = None,
    ) -> None:
        self.url = url
        self.rest_url = (rest_url or rest_url_for(url)).rstrip("/")
        self.symbol = symbol
        self.seconds = seconds
        self.timeout = timeout
        self.rest = rest
        self.report = Report()
        self._rec = Recorder(capture, url=url) if capture else None
        self._ids = int(time.time() * 1000) * 1000
        self._ws: Any = None

    # -- plumbing -----------------------------------------------------------------------

    def _id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def _send(self, obj: Dict[str, Any]) -> None:
        text = json.dumps(obj, separators=(",", ":"))
        self._ws.send(text)
        if self._rec is not None:
            self._rec.sent("public-0", text)

    def _recv(self, until: float) -> Optional[Tuple[int, bytes]]:
        """One frame (data or pong) before ``until``; None on timeout."""
        left = until - time.monotonic()
        if left <= 0:
            return None
        self._ws.settimeout(max(0.05, min(left, 1.0)))
        try:
            opcode, frame = self._ws.recv_data_frame(True)
        except (websocket.WebSocketTimeoutException, socket.timeout):
            return None
        data = frame.data if frame is not None else b""
        text_or_binary = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
        if opcode in text_or_binary and self._rec is not None:
            self._rec.received("public-0", data)
        return opcode, data

    # -- the run ------------------------------------------------------------------------

    def run(self) -> Report:
        """Run every check (never raises for a server problem; each becomes a FAIL line)."""
        if self._rec is not None:
            self._rec.start()
        try:
            if self._network():
                self._websocket()
            self._rest()
            self._private()
        finally:
            if self._rec is not None:
                self._rec.stop()
        for rule, text in ASSUMED_RULES.items():
            self.report.observed.setdefault(rule, {"status": "not seen", "detail": text})
        self.report.observed = {r: self.report.observed[r] for r in ASSUMED_RULES}
        return self.report

    def _network(self) -> bool:
        r = self.report
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return r.check("dns", False, f"{host}: cannot resolve ({exc})")
        addrs = sorted({str(i[4][0]) for i in infos})
        r.check("dns", True, f"{host} -> {', '.join(addrs[:4])}")
        started = time.monotonic()
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            return r.check("tcp", False, f"{host}:{port}: cannot connect ({exc})")
        r.check("tcp", True, f"{host}:{port} in {(time.monotonic() - started) * 1e3:.0f} ms")
        with sock:
            if parts.scheme != "wss":
                r.check("tls", True, "not used (ws://): plain text, loopback or test servers only")
                return True
            ctx = ssl.create_default_context()
            try:
                with ctx.wrap_socket(sock, server_hostname=host) as tls:
                    cert = tls.getpeercert() or {}
                    version = tls.version()
            except (ssl.SSLError, OSError) as exc:
                return r.check("tls", False, f"handshake failed: {exc}")
        expires = ssl.cert_time_to_seconds(str(cert.get("notAfter")))
        days = (expires - time.time()) / 86400
        subject = dict(x[0] for x in cert.get("subject", ()))  # type: ignore[misc]
        issuer = dict(x[0] for x in cert.get("issuer", ()))  # type: ignore[misc]
        return r.check(
            "tls",
            days > 7,
            f"{version}, certificate {subject.get('commonName')}"
            f" by {issuer.get('organizationName')} verified for {host}, expires in {days:.0f} days",
        )

    def _websocket(self) -> None:
        r = self.report
        started = time.monotonic()
        try:
            self._ws = websocket.create_connection(
                self.url, timeout=self.timeout, enable_multithread=False
            )
        except Exception as exc:
            r.check("upgrade", False, f"WebSocket upgrade failed: {type(exc).__name__}: {exc}")
            return
        if self._rec is not None:
            self._rec.opened("public-0", self.url)
        status = getattr(self._ws, "status", 101)
        r.check("upgrade", True, f"HTTP {status} in {(time.monotonic() - started) * 1e3:.0f} ms")
        try:
            self._session()
        except (websocket.WebSocketException, OSError) as exc:
            r.check("connection", False, f"the server closed the socket: {exc}")
        finally:
            try:
                self._ws.close(timeout=1)
            except Exception:
                pass
            if self._rec is not None:
                self._rec.closed("public-0", "doctor finished")

    def _session(self) -> None:
        s = self.symbol
        topics = [
            f"market.depth.{s}",
            f"market.trade.{s}",
            f"market.kline.{s}.1m",
            f"market.ticker.{s}",
        ]
        sub_id = self._id()
        self._send({"id": sub_id, "op": "subscribe", "args": topics})
        bogus = "market.trade.NOSUCHSYMBOL0"
        bad_id = self._id()
        self._send({"id": bad_id, "op": "subscribe", "args": [bogus]})
        ping_id = self._id()
        self._send({"id": ping_id, "op": "ping", "args": []})
        self._ws.ping(b"sixmm-doctor")
        watch = _Watch(self, topics, sub_id, bad_id, ping_id)
        deadline = time.monotonic() + self.seconds
        ack_deadline = time.monotonic() + self.timeout
        unsub_sent = False
        while time.monotonic() < (deadline if watch.acked else max(deadline, ack_deadline)):
            got = self._recv(deadline if watch.acked else max(deadline, ack_deadline))
            if got is not None:
                watch.frame(*got)
            if not watch.acked and time.monotonic() > ack_deadline:
                break
            if (
                not unsub_sent
                and watch.acked
                and time.monotonic() > deadline - max(1.0, self.seconds / 4)
            ):
                unsub_sent = True
                watch.unsub_id = self._id()
                self._send({"id": watch.unsub_id, "op": "unsubscribe", "args": [topics[3]]})
        watch.finish()

    def _rest(self) -> None:
        import requests

        r = self.report
        offsets: List[Tuple[float, float]] = []
        envelope: Optional[Dict[str, Any]] = None
        rid = uuid.uuid4().hex
        for _ in range(5):
            t0 = time.time()
            try:
                resp = requests.get(
                    self.rest_url + "/v1/time",
                    headers={"X-Request-ID": rid, "Accept": "application/json"},
                    timeout=self.timeout,
                )
                t1 = time.time()
                body = resp.json()
            except (requests.RequestException, ValueError) as exc:
                r.check("rest_envelope", False, f"GET {self.rest_url}/v1/time: {exc}")
                return
            if self._rec is not None:
                self._rec.rest(
                    {
                        "method": "GET",
                        "path": "/v1/time",
                        "http": resp.status_code,
                        "code": body.get("code") if isinstance(body, dict) else None,
                        "ms": round((t1 - t0) * 1e3, 3),
                    }
                )
            envelope = body if isinstance(body, dict) else None
            data = envelope.get("data") if envelope else None
            ms = data.get("timestampMs") if isinstance(data, dict) else None
            if isinstance(ms, str) and ms.isdigit():
                ms = int(ms)
            if isinstance(ms, int):
                offsets.append((ms - (t0 + t1) * 500, (t1 - t0) * 1e3))
                secs = data.get("timestamp")  # type: ignore[union-attr]
                if isinstance(secs, (int, float)) and abs(secs * 1000 - ms) < 5000:
                    r.saw("time_ms", "held", "timestamp in s, timestampMs in ms")
                elif secs is not None:
                    r.saw("time_ms", "violated", f"timestamp={secs!r} timestampMs={ms!r}")
        ok_env = (
            envelope is not None
            and envelope.get("code") == 0
            and "data" in envelope
            and "message" in envelope
        )
        echoed = envelope.get("requestId") == rid if envelope else False
        r.check(
            "rest_envelope",
            ok_env,
            "code/message/data/requestId present, X-Request-ID "
            + ("echoed" if echoed else "not echoed")
            if ok_env
            else f"unexpected /v1/time body: {json.dumps(envelope)[:200]}",
        )
        if not offsets:
            r.check("clock", False, "no timestampMs in /v1/time")
            return
        best = min(offsets, key=lambda o: o[1])
        offset, rtt = best
        r.check(
            "clock",
            abs(offset) < 5000,
            f"server - local = {offset:+.0f} ms (best of {len(offsets)}, rtt {rtt:.0f} ms;"
            f" signed requests tolerate ±10 s)",
        )

    def _private(self) -> None:
        r, rest = self.report, self.rest
        if rest is None:
            r.check("private", True, "skipped: no SIXMM_API_KEY/SIXMM_API_SECRET or SIXMM_TOKEN")
            return
        key: Optional[str] = None
        try:
            if rest.auth_kind == "hmac":
                key = rest.create_listen_key()
                rest.renew_listen_key(key)
                query = f"listenKey={key}"
            else:
                query = f"token={rest.token}"
        except SixMMError as exc:
            r.check("listen_key", False, f"create/renew failed: {exc}")
            return
        if key is not None:
            r.check(
                "listen_key", True, "created and renewed (POST, PUT /v1/private/user/listen-key)"
            )
        sep = "&" if "?" in self.url else "?"
        try:
            ws = websocket.create_connection(self.url + sep + query, timeout=self.timeout)
            try:
                ws.settimeout(self.timeout)
                text = ws.recv()
            finally:
                ws.close(timeout=1)
            obj = json.loads(text)
            ok = isinstance(obj, dict) and obj.get("event") == "auth" and obj.get("success") is True
            r.check("private_auth", ok, f"auth ack {scrub(str(text))[:160]}")
        except Exception as exc:
            r.check("private_auth", False, f"no auth ack: {type(exc).__name__}: {scrub(str(exc))}")
        if key is not None:
            try:
                rest.close_listen_key(key)
                r.check("listen_key_close", True, "closed (DELETE)")
            except SixMMError as exc:
                r.check("listen_key_close", False, f"close failed: {exc}")


class _Watch:
    """Looks at every frame of the probe connection and turns it into checks and rules."""

    def __init__(
        self, doctor: Doctor, topics: List[str], sub_id: str, bad_id: str, ping_id: str
    ) -> None:
        self.d, self.r = doctor, doctor.report
        self.topics, self.sub_id, self.bad_id, self.ping_id = topics, sub_id, bad_id, ping_id
        self.unsub_id: Optional[str] = None
        self.acked: Optional[str] = None
        self.acked_topics: set = set()  # type: ignore[type-arg]
        self.app_pong = False
        self.ws_pong = False
        self.book = OrderBook(doctor.symbol)
        self.first_depth = True
        self.features: set = set()  # type: ignore[type-arg]
        self.depth_msgs = 0
        self.gaps: List[str] = []
        self.crossed = 0
        self.stale = 0
        self.unknown: Dict[str, set] = {}  # type: ignore[type-arg]
        self.bad: List[str] = []
        self.seen: Dict[str, int] = {}

    def frame(self, opcode: int, data: bytes) -> None:
        if opcode == websocket.ABNF.OPCODE_PONG:
            self.ws_pong = True
            return
        if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            return
        try:
            obj = json.loads(data)
        except ValueError:
            self.bad.append(f"not JSON: {data[:80]!r}")
            return
        if not isinstance(obj, dict):
            return
        if "topic" in obj:
            self._push(obj, data)
        elif obj.get("event") in ("subscribe", "unsubscribe"):
            self._ack(obj)
        elif obj.get("event") == "pong":
            self.app_pong = True
            if str(obj.get("id")) == self.ping_id:
                self.r.saw("pong_shape", "held", "id echoed")
            else:
                self.r.saw("pong_shape", "violated", f"pong id {obj.get('id')!r}")

    def _ack(self, obj: Dict[str, Any]) -> None:
        rid, success, data = obj.get("id"), obj.get("success"), obj.get("data")
        kind = "number" if isinstance(rid, (int, float)) else type(rid).__name__
        self.r.saw("ack_id_type", "held" if kind == "str" else "violated", f"id as {kind}")
        if str(rid) == self.sub_id and obj.get("event") == "subscribe":
            if success is True:
                self.acked = (
                    self.acked or f"id as {kind}, success true, data {json.dumps(data)[:120]}"
                )
                if isinstance(data, list):
                    self.acked_topics.update(t for t in data if isinstance(t, str))
                    if len(self.acked_topics) > 1:
                        self.r.saw("args_list", "held", f"{len(self.acked_topics)} topics acked")
                self.book._expect_snapshot()
            else:
                self.acked = None
                self.bad.append(f"subscribe refused: {obj}")
        elif str(rid) == self.bad_id:
            reason = obj.get("message") or obj.get("msg")
            if success is False and reason:
                field = "message" if obj.get("message") else "msg"
                self.r.saw("ack_failure_shape", "held", f"success false, reason in {field}")
            else:
                self.r.saw("ack_failure_shape", "violated", json.dumps(obj)[:160])
        elif self.unsub_id is not None and str(rid) == self.unsub_id:
            ok = obj.get("event") == "unsubscribe" and "success" in obj
            self.r.saw("ack_unsubscribe", "held" if ok else "violated", json.dumps(obj)[:120])

    def _push(self, obj: Dict[str, Any], data: bytes) -> None:
        topic = obj.get("topic")
        if topic not in self.topics:
            return
        channel = str(topic).split(".")[1]
        self.seen[channel] = self.seen.get(channel, 0) + 1
        event = decode(data)
        if not isinstance(event, Push):
            self.bad.append(f"{channel} push not understood: {type(event).__name__}")
            return
        if channel == "depth":
            self._depth(obj, event)
            return
        try:
            convert(channel, event)
        except ProtocolError as exc:
            self.bad.append(f"{channel}: {exc}")
            self.r.saw(f"{channel}_shape", "violated", str(exc))
            return
        items = obj.get("data")
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict):
                extra = set(item) - KNOWN_FIELDS[channel]
                if extra:
                    self.unknown.setdefault(channel, set()).update(extra)
        self.r.saw(f"{channel}_shape", "held", "parsed by sixmm")

    def _depth(self, obj: Dict[str, Any], push: Push) -> None:
        r, d = self.r, obj.get("data")
        if not isinstance(d, dict):
            self.bad.append("depth data is not an object")
            return
        self.depth_msgs += 1
        self.features.update(_depth_features(obj, d))
        r.saw(
            "depth_type",
            "held" if "type" in d else "violated",
            "type field" if "type" in d else "no type field",
        )
        levels = (d.get("bids") or []) + (d.get("asks") or [])
        if levels:
            objs = isinstance(levels[0], dict)
            r.saw("depth_levels", "violated" if objs else "held", "objects" if objs else "lists")
        versions = [d.get(k) for k in ("startVersion", "endVersion") if k in d]
        if versions:
            strs = any(isinstance(v, str) for v in versions)
            r.saw("depth_versions", "violated" if strs else "held", "strings" if strs else "ints")
        try:
            msg = parse_depth(d, push.snapshot)
        except ProtocolError as exc:
            self.bad.append(f"depth: {exc}")
            return
        if self.first_depth:
            self.first_depth = False
            snap = msg.kind in ("snapshot", None)
            r.saw(
                "depth_snapshot_first",
                "held" if snap else "violated",
                "snapshot first" if snap else f"first depth message was {msg.kind}",
            )
        before = self.book.version
        outcome = self.book._feed(msg)
        if outcome is Outcome.GAP:
            self.gaps.append(f"book at {before}, update {msg.start}..{msg.end}")
            r.saw("depth_continuity", "violated", self.gaps[0])
            self.book._expect_snapshot()  # nothing more to check until a snapshot
        elif outcome is Outcome.CROSSED:
            self.crossed += 1
        elif outcome is Outcome.STALE:
            self.stale += 1
        elif outcome is Outcome.APPLIED:
            r.saw("depth_continuity", "held", "versions continuous")

    def finish(self) -> None:
        r, secs = self.r, self.d.seconds
        if self.acked is None:
            r.check(
                "subscribe_ack",
                False,
                f"no subscribe ack within {self.d.timeout:.0f}s for id {self.sub_id}"
                " (sixmm waits for it; the server may not implement subscribe acks)",
            )
        else:
            missing = [t for t in self.topics if self.acked_topics and t not in self.acked_topics]
            r.check(
                "subscribe_ack",
                not missing,
                self.acked + (f"; not acked: {missing}" if missing else ""),
            )
        pong = [
            n
            for n, seen in (("application pong", self.app_pong), ("websocket pong", self.ws_pong))
            if seen
        ]
        r.check(
            "pong",
            True,
            ", ".join(pong)
            if pong
            else "none (sixmm counts any frame as life; a quiet server will look stale)",
        )
        if self.acked is None:
            return
        total = sum(self.seen.values())
        r.check(
            "data",
            total > 0 and not self.bad,
            f"{total} pushes in {secs:g}s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.seen.items()))
            + (f"; problems: {'; '.join(self.bad[:3])}" if self.bad else "")
            if total
            else f"no push in {secs:g}s on {', '.join(self.topics)}",
        )
        self.variant = _variant(self.features)
        if not self.depth_msgs:
            r.check("depth_form", False, f"no depth message in {secs:g}s")
        else:
            r.check(
                "depth_form",
                self.variant is not None,
                f"variant {self.variant}: {_VARIANT_TEXT.get(self.variant or '', 'unknown')}",
            )
            r.check(
                "depth_continuity",
                not self.gaps,
                f"{self.depth_msgs} messages, versions continuous ({self.stale} stale dropped)"
                if not self.gaps
                else f"{len(self.gaps)} version gap(s); first: {self.gaps[0]}",
            )
            r.check(
                "crossed_book",
                not self.crossed,
                "never crossed" if not self.crossed else f"crossed {self.crossed} time(s)",
            )
        unknown = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(self.unknown.items()))
        r.check(
            "fields",
            True,
            f"fields sixmm does not know (kept in .raw): {unknown}"
            if unknown
            else "every trade/kline/ticker field is known to sixmm",
        )


_VARIANT_TEXT = {
    "doc": "type snapshot/update, startVersion/endVersion ints, [price, qty] string lists",
    "no_type": "no type field: the first message after the ack is the snapshot",
    "string_versions": "versions as strings",
    "object_levels": "levels as {price, quantity} objects",
    "prev_field": "updates name their predecessor (prevEndVersion/lastEndVersion)",
    "unverified": "updates carry only endVersion: continuity cannot be proven",
    "envelope_snapshot": 'the snapshot is marked by "event": "snapshot" on the envelope',
}


def _depth_features(obj: Dict[str, Any], d: Dict[str, Any]) -> List[str]:
    """The PROTOCOL.md §4.1 features one depth message shows."""
    out = []
    if obj.get("event") == "snapshot":
        out.append("envelope_snapshot")
    levels = (d.get("bids") or []) + (d.get("asks") or [])
    if levels and isinstance(levels[0], dict):
        out.append("object_levels")
    if isinstance(d.get("endVersion"), str):
        out.append("string_versions")
    if "type" not in d:
        out.append("no_type")
    elif d.get("type") == "update":
        if "prevEndVersion" in d or "lastEndVersion" in d:
            out.append("prev_field")
        elif "startVersion" not in d:
            out.append("unverified")
        else:
            out.append("doc")
    return out


def _variant(features: Any) -> Optional[str]:
    """The wire variant a run's depth messages add up to (None: only a snapshot seen)."""
    for name in (
        "envelope_snapshot",
        "object_levels",
        "string_versions",
        "prev_field",
        "unverified",
        "no_type",
        "doc",
    ):
        if name in features:
            return name
    return None
