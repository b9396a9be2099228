"""A deterministic simulation of sixmm's pure core against a simulated exchange.

One seed makes one timeline on a virtual clock. The real engines
(:class:`~sixmm.protocol.public_engine.PublicEngine`,
:class:`~sixmm.protocol.user_engine.UserEngine`), the real reconnect policy, frame decoder,
handshake parser and order books run; only the sockets are simulated -- as byte streams the
world cuts at random boundaries. Faults (each on or off per seed, then at random moments):
drops (also in the middle of a frame), silence of one topic or of the whole socket, trickled
and refused handshakes, version gaps, crossed snapshots, refused / late / duplicated / missing
acks, duplicated pushes, replayed user events, listenKeys refused on arrival, keys the server
forgets, renewals that call a key gone while the server still knows it, failed listenKey REST
calls, auth refusals that echo the key, clock jumps. The real
:class:`~sixmm.protocol.listenkey.ListenKeyMachine` keeps the user stream's key: the world
plays the REST server (create, renew, close) and the keeper shell around it (a replaced key
restarts the user stream, as the manager's ``on_new_key`` does). The keeper's invariants: a
refused key is checked in its next turn, it never ends or waits without a deadline, fresh keys
refused on arrival twice in a row are replaced only after a backoff, every replaced key is
closed, and the user stream settles on the keeper's key.

After every step the invariants are checked (:meth:`World.check`); after the faults stop, the
world must settle within :data:`SETTLE_BOUND` virtual seconds. Any violation raises
:class:`Violation` naming the seed, the step and the time.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any, Dict, List, Optional, Set, Tuple

from sixmm.config import Backoff
from sixmm.errors import SubscriptionError
from sixmm.orderbook import OrderBook
from sixmm.protocol import engine as E
from sixmm.protocol.frames import RequestIds
from sixmm.protocol.framing import OP_TEXT, FrameDecoder
from sixmm.protocol.handshake import HandshakeError, accept_for, head_end, parse_response
from sixmm.protocol.listenkey import ActionKind, Created, FailKind, ListenKeyMachine, State
from sixmm.protocol.liveness import Liveness
from sixmm.protocol.public_engine import PublicEngine
from sixmm.protocol.reconnect import GiveUp, ReconnectPolicy
from sixmm.protocol.redact import remember
from sixmm.protocol.user_engine import UserEngine
from sixmm.subscriptions import Route

SYMBOLS = ("BTCUSDT", "ETHUSDT")
REFUSED_TOPIC = "market.trade.NOPE"  # the exchange refuses it: desired once, then dropped
ACK_TIMEOUT = 3.0
STALE_AFTER = 8.0
BACKOFF = Backoff(initial=0.2, maximum=4.0)
LIVENESS = Liveness(depth=6.0)
PING_INTERVAL = 2.0
FAULT_SECONDS = 60.0
RENEW_INTERVAL = 15.0  # the keeper's schedule (virtual seconds): several renewals a seed
#: after the faults stop, everything desired must be streaming within this many seconds
SETTLE_BOUND = 60.0

FAULTS = (
    "split",  # random byte boundaries (always on in practice; off: whole frames)
    "drop",  # the socket dies (sometimes in the middle of a frame)
    "silence",  # the server stops sending one depth topic / everything on a socket
    "trickle",  # the handshake answer arrives in pieces
    "refuse_upgrade",  # a connect attempt is refused (HTTP 503)
    "gap",  # a depth update is skipped on one socket
    "crossed",  # a crossed snapshot
    "ack_missing",
    "ack_late",
    "ack_dup",
    "push_dup",  # a depth update or a user event sent twice
    "replay",  # user events replayed after a reconnect
    "dead_key",  # fresh listenKeys refused on arrival
    "key_expire",  # the server forgets the current listenKey (and drops the user stream)
    "rest_fail",  # a listenKey create or renew fails (HTTP 503)
    "stale_gone",  # a renewal answers "does not exist" for a key the server still knows
    "auth_refuse",  # an auth refusal that quotes the key
    "auth_silent",  # no auth ack at all
    "clock_jump",
)


class Violation(AssertionError):
    """An invariant did not hold."""


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 127)) + struct.pack("!Q", n)
    return head + payload


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Market:
    """The exchange's truth: one small book per symbol with versions, and trades."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.version: Dict[str, int] = {}
        self.bids: Dict[str, Dict[str, str]] = {}
        self.asks: Dict[str, Dict[str, str]] = {}
        self.history: Dict[Tuple[str, int], Tuple[Dict[str, str], Dict[str, str]]] = {}
        self.trade_id = 0
        for s in SYMBOLS:
            self.version[s] = rng.randint(1, 1000)
            self.bids[s] = {f"{100 - i}.0": f"{rng.randint(1, 9)}.0" for i in range(1, 8)}
            self.asks[s] = {f"{100 + i}.0": f"{rng.randint(1, 9)}.0" for i in range(1, 8)}
            self._remember(s)

    def _remember(self, s: str) -> None:
        self.history[(s, self.version[s])] = (dict(self.bids[s]), dict(self.asks[s]))
        old = (s, self.version[s] - 400)
        self.history.pop(old, None)

    def step(self, s: str) -> Dict[str, Any]:
        """One update of ``s``'s book: its depth ``data`` (versions start..end)."""
        rng = self.rng
        rand = rng.random
        start = self.version[s] + 1
        end = start + int(rand() * 3)
        bids: List[List[str]] = []
        asks: List[List[str]] = []
        for side, out, lo, hi in ((self.bids[s], bids, 90, 99), (self.asks[s], asks, 101, 110)):
            for _ in range(1 + int(rand() * 3)):
                price = f"{lo + int(rand() * (hi - lo + 1))}.0"
                qty = "0" if (price in side and rand() < 0.3) else f"{1 + int(rand() * 9)}.0"
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty
                out.append([price, qty])
        self.version[s] = end
        self._remember(s)
        return {
            "symbol": s,
            "type": "update",
            "startVersion": start,
            "endVersion": end,
            "bids": bids,
            "asks": asks,
        }

    def snapshot(self, s: str, crossed: bool = False) -> Dict[str, Any]:
        bids = [[p, q] for p, q in self.bids[s].items()]
        if crossed:
            bids.append(["150.0", "1.0"])  # above every ask
        return {
            "symbol": s,
            "type": "snapshot",
            "startVersion": self.version[s],
            "endVersion": self.version[s],
            "bids": bids,
            "asks": [[p, q] for p, q in self.asks[s].items()],
        }

    def trade(self) -> Dict[str, Any]:
        self.trade_id += 1
        return {
            "symbol": "BTCUSDT",
            "tradeId": str(self.trade_id),
            "price": "100.5",
            "quantity": "0.1",
            "side": "BUY",
            "time": 1_700_000_000_000 + self.trade_id,
        }


class Wire:
    """One simulated socket: bytes from the server, cut into random pieces."""

    def __init__(self, world: World, key: str) -> None:
        self.world = world
        self.key = key  # Sec-WebSocket-Key of this attempt
        self.listen_key: Optional[str] = None  # the user stream's listenKey on this attempt
        self.pending = bytearray()  # server bytes not yet delivered to the client
        self.sent_texts: List[bytes] = []  # every text message the server put on this wire
        self.decoded: List[bytes] = []  # every text message the client's decoder produced
        self.decoder = FrameDecoder()
        self.handshake_done = False
        self.head = bytearray()
        self.silent = False  # the server sends nothing more (a stalled socket)
        self.head_src = bytearray()  # the handshake answer, still to be delivered

    def put_text(self, text: str) -> None:
        if self.silent:
            return
        raw = text.encode()
        self.sent_texts.append(raw)
        self.pending += server_frame(OP_TEXT, raw)

    def take(self) -> bytes:
        """A random prefix of what is pending (all of it when splitting is off)."""
        if not self.pending:
            return b""
        w = self.world
        n = len(self.pending) if not w.on("split") else w.rng.randint(1, max(1, len(self.pending)))
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out


class Client:
    """The shell's part, as the real one does it: read bytes into the decoder and the
    engine, carry out actions, tick at deadlines, drop stale sockets, back off."""

    def __init__(self, world: World, name: str, engine: Any) -> None:
        self.world = world
        self.name = name
        self.engine = engine
        self.policy = ReconnectPolicy(BACKOFF, stable_after=10.0, rand=world.rng.random)
        self.wire: Optional[Wire] = None
        self.open = False
        self.opened_at = 0.0
        self.last_rx = 0.0
        self.connect_at: Optional[float] = 0.0
        self.last_ping = 0.0
        self.immediate_since_stable = 0
        self.attempts = 0

    # -- connecting -----------------------------------------------------------------------

    def maybe_connect(self, now: float) -> None:
        if self.wire is not None or self.connect_at is None or now < self.connect_at:
            return
        w = self.world
        self.attempts += 1
        self.connect_at = None
        if w.faulty("refuse_upgrade", 0.15):
            self._failed(now, "handshake refused: HTTP 503")
            return
        key = f"k{w.rng.getrandbits(32):08x}=="
        self.wire = Wire(w, key)
        if self.engine is w.user:  # the private session's url(): the keeper's current key
            self.wire.listen_key = w.keeper.key
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
        ).encode()
        self.wire.head_src = bytearray(answer)

    def _failed(self, now: float, reason: str) -> None:
        decision = self.policy.after_failure()
        self._schedule(decision, now, reason)

    def _schedule(self, decision: Any, now: float, reason: str) -> None:
        w = self.world
        if isinstance(decision, GiveUp):
            raise Violation(f"{self.name} gave up with retries unbounded ({reason})")
        if decision.immediate:
            self.immediate_since_stable += 1
            if self.immediate_since_stable > 1:
                w.fail(f"{self.name}: a second immediate reconnect before a stable socket")
        elif decision.delay > BACKOFF.cap(max(0, self.policy.attempt - 1)) + 1e-9:
            w.fail(f"{self.name}: backoff delay {decision.delay} above its cap")
        self.connect_at = now + decision.delay

    def handshake_step(self, now: float) -> None:
        wire = self.wire
        assert wire is not None
        src = wire.head_src
        w = self.world
        n = len(src) if not w.on("trickle") else w.rng.randint(1, len(src))
        wire.head += src[:n]
        del src[:n]
        end = head_end(bytes(wire.head))
        if end < 0:
            return
        try:
            parse_response(bytes(wire.head[:end]), wire.key, "wss://sim/ws")
        except HandshakeError as exc:  # pragma: no cover - the sim answers correctly
            w.fail(f"{self.name}: handshake parser refused a valid answer: {exc}")
        wire.handshake_done = True
        self.open = True
        self.opened_at = now
        self.last_rx = now
        self.engine.wall_offset = 1_700_000_000.0
        self.engine.opened(now)
        w.server_opened(self)
        self.apply(now)

    # -- reading --------------------------------------------------------------------------

    def read(self, now: float) -> None:
        wire = self.wire
        if wire is None or not self.open:
            return
        data = wire.take()
        if not data:
            return
        wire.decoder.feed(data)
        while self.wire is wire:
            item = wire.decoder.next_frame()
            if item is None:
                break
            self.last_rx = now
            opcode, payload = item
            if opcode != OP_TEXT:
                continue
            wire.decoded.append(payload)
            self.world.note_decoded(self, payload)
            self.engine.receive(payload, now)
            self.apply(now)

    def tick(self, now: float) -> None:
        if self.open and now - self.last_rx > STALE_AFTER:
            self.close(now, f"stale: no frame for {STALE_AFTER:.1f}s")
            return
        if self.open and now - self.last_ping >= PING_INTERVAL:
            self.last_ping = now
            self.world.server_ping(self)
        deadline = self.engine.next_deadline()
        if deadline is not None and now >= deadline:
            self.engine.tick(now, self.last_rx)
            self.apply(now)

    def close(self, now: float, reason: str) -> None:
        if self.wire is None:
            return
        was_open = self.open
        wire = self.wire
        self.world.server_closed(self, wire)
        self.wire = None
        self.open = False
        if was_open:
            self.engine.closed(reason, now)
            self.apply(now)
            stable = now - self.opened_at >= self.policy.stable_after
            if stable:
                self.immediate_since_stable = 0
            decision = self.policy.after_socket(self.opened_at, now)
        else:
            decision = self.policy.after_failure()
        self._schedule(decision, now, reason)

    def apply(self, now: float) -> None:
        w = self.world
        close: Optional[str] = None
        for action in self.engine.take():
            w.texts_of(action)
            cls = action.__class__
            if cls is E.Send:
                if self.open:
                    w.server_receive(self, action.text, now)
            elif cls is E.Ready:
                action.route.ready.set()
            elif cls is E.Refused:
                w.refused.add(action.route.topic)
            elif cls is E.Gap:
                w.gaps.append((self.name, action.topic))
            elif cls is E.Restart:
                self.policy.restart()
                close = action.reason
            elif cls is E.Close:
                close = action.reason
            elif cls is E.Fail:
                w.fail(f"{self.name}: terminal failure in a listenKey stream: {action.error}")
            elif cls is E.KeyRejected:
                w.keeper.key_rejected(action.reason, now)
                w.refusals_fed += 1
            elif cls is E.KeyAccepted:
                if self.wire is None or self.wire.listen_key not in w.alive_keys:
                    w.fail("the stream accepted a key the server refused")
                w.keeper.key_accepted()
                w.accepted_keys.add(self.wire.listen_key or "")
                w.dead_in_row = 0
        if close is not None and self.wire is not None:
            self.close(now, close)


class World:
    """One seed's world: market, server, clients, faults and invariants."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.faults: Set[str] = {f for f in FAULTS if rng.random() < 0.5} | {"split"}
        self.now = 0.0
        self.step_no = 0
        self.market = Market(rng)
        self.delivered: Dict[str, List[Any]] = {}
        self.refused: Set[str] = set()
        self.gaps: List[Tuple[str, str]] = []
        self.keys: List[str] = []  # every listenKey the REST server created
        self.alive_keys: Set[str] = set()  # ... and those it still knows
        self.dead_keys_left = rng.randint(1, 4) if "dead_key" in self.faults else 0
        self.refusals_fed = 0  # KeyRejected told to the keeper since its last turn
        self.accepted_keys: Set[str] = set()  # keys a stream authenticated with
        self.dead_in_row = 0  # fresh keys in a row whose renewal said gone before any use
        self.dead_found_at: Optional[float] = None  # when the last of them was found gone
        self.keeper_calls: Dict[str, int] = {}  # REST calls the keeper made, by kind
        self.keeper = ListenKeyMachine(
            renew_interval=RENEW_INTERVAL, backoff=BACKOFF, rand=rng.random
        )
        self.texts: List[str] = []
        # public side
        self.books: Dict[str, OrderBook] = {}
        self.pub = PublicEngine(
            ids=RequestIds(now_ms=1_700_000_000_000),
            deliver=self._deliver,
            lane="public-0",
            ack_timeout=ACK_TIMEOUT,
            liveness=LIVENESS,
            wall_offset=1_700_000_000.0,
        )
        self.routes: Dict[str, Route] = {}
        for s in SYMBOLS:
            r = Route(f"market.depth.{s}", "depth", LIVENESS.bound(f"market.depth.{s}"))
            r.book = OrderBook(s)
            self.books[s] = r.book
            self.routes[r.topic] = r
        for topic in ("market.trade.BTCUSDT", REFUSED_TOPIC):
            r = Route(topic, "trade", None)
            r.callbacks = (lambda item: None,)
            self.routes[topic] = r
        for r in self.routes.values():
            self.pub.add(r, 0.0)
        # private side
        self.user_route = Route("user", "user")
        self.user = UserEngine(
            self.user_route,
            ids=RequestIds(now_ms=1_700_000_000_000),
            deliver=self._deliver,
            listen_key=True,
            auth_timeout=ACK_TIMEOUT,
            wall_offset=1_700_000_000.0,
        )
        self.user.add_callbacks(None, None, lambda item: None)
        self.keeper.created(self.new_key(), 0.0)  # the keeper's start(): the first key
        self.clients = [Client(self, "public-0", self.pub), Client(self, "user", self.user)]
        # the server's view of each socket
        self.server_subs: Dict[int, Set[str]] = {}
        self.late_acks: List[Tuple[float, Client, Wire, str]] = []
        self.user_sent: List[str] = []  # user event ids the server sent (the last few replayed)
        self.event_id = 0
        self.authed_wire: Optional[Wire] = None
        # what check() has already verified
        self._checked_books: Dict[str, Optional[int]] = {}
        self._trades_checked = 0
        self._trade_ids: Set[int] = set()
        self._last_trade = 0
        self._events_checked = 0
        self._event_ids: Set[str] = set()

    # -- faults ---------------------------------------------------------------------------

    def on(self, fault: str) -> bool:
        return fault in self.faults and self.now < FAULT_SECONDS

    def faulty(self, fault: str, p: float) -> bool:
        return self.on(fault) and self.rng.random() < p

    def fail(self, what: str) -> None:
        raise Violation(
            f"seed {self.seed}, step {self.step_no}, t={self.now:.2f}s "
            f"(faults: {','.join(sorted(self.faults))}): {what}"
        )

    # -- credentials ----------------------------------------------------------------------

    def new_key(self) -> str:
        """POST /listenKey: a fresh key (dead on arrival while ``dead_keys_left``)."""
        key = f"LK{self.rng.getrandbits(64):016x}{len(self.keys)}"
        remember(key)  # the shell registers every key with the scrubber
        self.keys.append(key)
        if self.dead_keys_left > 0:
            self.dead_keys_left -= 1
        else:
            self.alive_keys.add(key)
        return key

    def keeper_step(self, now: float) -> None:
        """The keeper shell's turn: do what the machine says until it waits."""
        k = self.keeper
        refused = self.refusals_fed
        alive_before = k.state is State.ALIVE
        checked = False
        for _ in range(10):
            action = k.next_action(now)
            kind = action.kind
            if kind is ActionKind.WAIT:
                break
            self.keeper_calls[kind.value] = self.keeper_calls.get(kind.value, 0) + 1
            checked = checked or kind in (ActionKind.RENEW, ActionKind.CREATE)
            if kind is ActionKind.END:
                self.fail(f"the listenKey keeper ended ({k.state.value}): {k.drain()}")
            if kind is ActionKind.CLOSE:  # DELETE /listenKey of the replaced key
                self.alive_keys.discard(action.key or "")
                k.old_key_closed()
            elif kind is ActionKind.RENEW:  # PUT /listenKey
                key = action.key or ""
                if self.faulty("rest_fail", 0.2):
                    k.renew_failed(FailKind.TRANSIENT, "HTTP 503: busy", now)
                elif key in self.alive_keys and not self.faulty("stale_gone", 0.1):
                    k.renewed(now)
                else:  # the server quotes the key: the machine must not repeat it
                    if key not in self.accepted_keys:
                        self.dead_in_row += 1
                        self.dead_found_at = now
                    k.renew_failed(FailKind.GONE, f"listenKey {key} does not exist", now)
            else:  # CREATE
                if self.dead_in_row >= 2 and self.dead_found_at == now:
                    self.fail(
                        f"{self.dead_in_row} fresh listenKeys in a row were refused on arrival, "
                        "yet the next one was created at once (no backoff)"
                    )
                if self.faulty("rest_fail", 0.2):
                    k.create_failed(FailKind.TRANSIENT, "HTTP 503: busy", now)
                    continue
                outcome = k.created(self.new_key(), now)
                if outcome is Created.REPLACED:  # on_new_key: conn.restart("new listenKey")
                    user = self.clients[1]
                    if user.wire is not None:
                        user.policy.restart()
                        user.close(now, "new listenKey")
        else:
            self.fail("the listenKey keeper did not come to a wait in 10 turns (a loop)")
        self.texts.extend(text for _kind, text in k.drain())
        self.check_texts()
        if refused and alive_before and not checked:
            self.fail("the user stream's key was refused but the keeper did not check it")
        self.refusals_fed = 0  # those told during this turn were answered in it
        if k.state in (State.ALIVE, State.NEEDS_KEY) and k.next_deadline() is None:
            self.fail(f"the listenKey keeper is {k.state.value} with no deadline (stuck)")

    def texts_of(self, action: Any) -> None:
        for name in ("text", "reason"):
            value = getattr(action, name, None)
            if isinstance(value, str):
                self.texts.append(value)
        error = getattr(action, "error", None)
        if error is not None:
            self.texts.append(str(error))
        self.check_texts()

    def check_texts(self) -> None:
        """No credential in any text the engines or the keeper produced."""
        for text in self.texts:
            for key in self.keys:
                if key in text:
                    self.fail(f"credential in engine text: {text[:80]!r}")
        self.texts.clear()

    # -- deliveries -----------------------------------------------------------------------

    def _deliver(self, lane: str, topic: str, callbacks: Any, item: Any, conflate: bool) -> None:
        self.delivered.setdefault(topic, []).append(item)

    def note_decoded(self, client: Client, payload: bytes) -> None:
        wire = client.wire
        assert wire is not None
        i = len(wire.decoded) - 1
        if i >= len(wire.sent_texts) or wire.sent_texts[i] != payload:
            self.fail(f"{client.name}: decoder produced a message the server did not send")

    # -- the server -----------------------------------------------------------------------

    def server_opened(self, client: Client) -> None:
        wire = client.wire
        assert wire is not None
        self.server_subs[id(wire)] = set()
        if client.engine is self.user:
            if self.faulty("auth_silent", 0.2):
                return
            if wire.listen_key not in self.alive_keys or self.faulty("auth_refuse", 0.15):
                key = wire.listen_key or self.keys[-1]
                wire.put_text(
                    _dumps(
                        {
                            "event": "auth",
                            "success": False,
                            "message": f"listenKey {key} does not exist",
                        }
                    )
                )
                return
            wire.put_text(_dumps({"event": "auth", "success": True, "data": "5794"}))
            self.authed_wire = wire
            if self.on("replay"):  # a reconnect replays the last few events
                for eid in self.user_sent[-3:]:
                    self._user_event(wire, eid)

    def server_closed(self, client: Client, wire: Wire) -> None:
        self.server_subs.pop(id(wire), None)
        if self.authed_wire is wire:
            self.authed_wire = None

    def server_ping(self, client: Client) -> None:
        wire = client.wire
        if wire is not None:
            wire.put_text(_dumps({"event": "pong", "ts": 1}))

    def server_receive(self, client: Client, text: str, now: float) -> None:
        wire = client.wire
        assert wire is not None
        req = json.loads(text)
        op, rid, args = req.get("op"), req.get("id"), req.get("args", [])
        if op == "ping":
            return
        if op not in ("subscribe", "unsubscribe"):
            self.fail(f"client sent an unknown request {text[:80]!r}")
        good = [t for t in args if t != REFUSED_TOPIC]
        bad = [t for t in args if t == REFUSED_TOPIC]
        acks: List[str] = []
        if good:
            acks.append(_dumps({"id": rid, "event": op, "success": True, "data": good}))
        if bad and op == "subscribe":
            acks.append(
                _dumps(
                    {
                        "id": rid,
                        "event": op,
                        "success": False,
                        "data": bad,
                        "message": "unknown symbol: NOPE",
                    }
                )
            )
        subs = self.server_subs.setdefault(id(wire), set())
        if op == "unsubscribe":
            subs.difference_update(good)
        for ack in acks:
            if self.faulty("ack_missing", 0.1):
                continue
            if self.faulty("ack_late", 0.1):
                self.late_acks.append((now + ACK_TIMEOUT * 1.5, client, wire, ack))
                continue
            self._ack(client, wire, ack)
            if self.faulty("ack_dup", 0.2):
                wire.put_text(ack)

    def _ack(self, client: Client, wire: Wire, ack: str) -> None:
        obj = json.loads(ack)
        wire.put_text(ack)
        if obj["event"] != "subscribe" or not obj["success"]:
            return
        subs = self.server_subs.setdefault(id(wire), set())
        for topic in obj["data"]:
            subs.add(topic)
            if topic.startswith("market.depth."):
                s = topic.rsplit(".", 1)[-1]
                crossed = self.faulty("crossed", 0.1)
                wire.put_text(
                    _dumps(
                        {
                            "topic": topic,
                            "event": "data",
                            "ts": 1,
                            "data": self.market.snapshot(s, crossed),
                        }
                    )
                )

    def _user_event(self, wire: Wire, eid: str) -> None:
        wire.put_text(
            _dumps(
                {
                    "topic": "user.5794",
                    "ts": 1,
                    "data": {
                        "eventType": "ORDER_TRADE_UPDATE",
                        "symbol": "BTCUSDT",
                        "orderId": eid,
                        "orderStatus": "NEW",
                        "side": "BUY",
                        "price": "1.0",
                        "quantity": "1.0",
                        "updateTime": 1_700_000_000_000 + int(eid),
                        "eventTime": 1,
                    },
                }
            )
        )

    def market_step(self) -> None:
        rng = self.rng
        pub_wire = self.clients[0].wire if self.clients[0].open else None
        for s in SYMBOLS:
            if rng.random() < 0.7:
                data = self.market.step(s)
                topic = f"market.depth.{s}"
                if pub_wire is None or topic not in self.server_subs.get(id(pub_wire), ()):
                    continue
                if self.faulty("gap", 0.03):
                    continue
                frame = _dumps({"topic": topic, "event": "data", "ts": 1, "data": data})
                pub_wire.put_text(frame)
                if self.faulty("push_dup", 0.05):
                    pub_wire.put_text(frame)
        if rng.random() < 0.5:
            trade = self.market.trade()
            topic = "market.trade.BTCUSDT"
            if pub_wire is not None and topic in self.server_subs.get(id(pub_wire), ()):
                pub_wire.put_text(_dumps({"topic": topic, "event": "data", "ts": 1, "data": trade}))
        user = self.clients[1]
        if self.authed_wire is not None and user.wire is self.authed_wire and rng.random() < 0.2:
            self.event_id += 1
            eid = str(self.event_id)
            self.user_sent.append(eid)
            self._user_event(self.authed_wire, eid)
            if self.faulty("push_dup", 0.1):
                self._user_event(self.authed_wire, eid)

    # -- the timeline ---------------------------------------------------------------------

    def step(self) -> None:
        rng = self.rng
        self.step_no += 1
        dt = rng.uniform(0.02, 0.4)
        if self.faulty("clock_jump", 0.005):
            dt += rng.uniform(5.0, 40.0)
        self.now += dt
        now = self.now
        for when, client, wire, ack in list(self.late_acks):
            if when <= now:
                self.late_acks.remove((when, client, wire, ack))
                if client.wire is wire:
                    self._ack(client, wire, ack)
        self.market_step()
        if self.faulty("key_expire", 0.004) and self.keeper.key is not None:
            self.alive_keys.discard(self.keeper.key)  # expired: the server drops the stream
            user = self.clients[1]
            if user.wire is not None and user.wire.handshake_done:
                user.close(now, "listenKey expired")
        self.keeper_step(now)
        for client in self.clients:
            client.maybe_connect(now)
            wire = client.wire
            if wire is None:
                continue
            if not wire.handshake_done:
                client.handshake_step(now)
                continue
            if self.faulty("drop", 0.01):
                wire.pending = wire.pending[: rng.randint(0, len(wire.pending))]  # half frames
                client.read(now)
                client.close(now, "connection reset")
                continue
            if self.faulty("silence", 0.005):
                if rng.random() < 0.5:
                    wire.silent = True  # the whole socket stalls: the shell's staleness rule
                else:  # a dead feed: the server forgets one subscription without a word
                    self.server_subs.get(id(wire), set()).discard(
                        f"market.depth.{rng.choice(SYMBOLS)}"
                    )
            if wire.silent and now >= FAULT_SECONDS:
                wire.silent = False
            client.read(now)
            client.tick(now)
        self.check()

    # -- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        checked = self._checked_books
        for s, book in self.books.items():
            if book.synced:
                version = book.version
                if checked.get(s) == version:
                    continue  # unchanged since the last check (a book only moves by version)
                truth = self.market.history.get((s, version))  # type: ignore[arg-type]
                if truth is None:
                    behind = self.market.version[s] - (version or 0)
                    self.fail(
                        f"book {s} says synced at version {version}, {behind} versions behind "
                        "the exchange (a frozen book)"
                    )
                bids, asks = book.levels()
                if (bids, asks) != truth:
                    self.fail(f"book {s} says synced at {version} but differs from the truth")
                checked[s] = version
            else:
                checked.pop(s, None)
        trades = self.delivered.get("market.trade.BTCUSDT", [])
        for t in trades[self._trades_checked :]:
            n = int(t.trade_id)
            if n in self._trade_ids:
                self.fail(f"trade {n} was delivered twice")
            if n < self._last_trade:
                self.fail(f"trade {n} delivered after trade {self._last_trade} (out of order)")
            self._trade_ids.add(n)
            self._last_trade = n
        self._trades_checked = len(trades)
        events = self.delivered.get("user", [])
        for e in events[self._events_checked :]:
            if e.order_id in self._event_ids:
                self.fail(f"user event {e.order_id} was delivered twice")
            self._event_ids.add(e.order_id)
        self._events_checked = len(events)
        for client in self.clients:
            engine = client.engine
            if not client.open:
                if client.wire is None and client.connect_at is None:
                    self.fail(f"{client.name}: closed with no reconnect scheduled (stuck)")
                continue
            stuck = False
            if engine is self.pub:
                stuck = bool(self.pub._pending) or any(
                    r.book is not None and not r.book.synced and r.resync_at is not None
                    for r in self.pub.routes.values()
                )
            elif not engine.authed:
                stuck = True
            if stuck and engine.next_deadline() is None:
                self.fail(f"{client.name}: something is pending but no deadline is set")

    def settled(self) -> bool:
        """Everything desired is subscribed, every book synced, the user stream authed."""
        if not all(c.open for c in self.clients) or not self.user.authed:
            return False
        if self.keeper.state is not State.ALIVE:
            return False
        subs = self.server_subs.get(id(self.clients[0].wire), set())
        for topic, route in self.pub.routes.items():
            if topic not in subs:  # the refused topic never is: it must have been dropped
                return False
            if route.book is not None and not route.book.synced:
                return False
        return not self.pub._pending

    def check_delivery(self) -> None:
        """Every trade and user event in a message the client decoded was delivered."""
        sent_trades: Set[str] = set()
        sent_events: Set[str] = set()
        for wire in self._all_wires:
            for raw in wire.decoded:
                obj = json.loads(raw)
                if obj.get("topic") == "market.trade.BTCUSDT":
                    sent_trades.add(obj["data"]["tradeId"])
                elif str(obj.get("topic", "")).startswith("user."):
                    sent_events.add(obj["data"]["orderId"])
        got_trades = {t.trade_id for t in self.delivered.get("market.trade.BTCUSDT", [])}
        got_events = {e.order_id for e in self.delivered.get("user", [])}
        if sent_trades - got_trades:
            self.fail(f"trades received but not delivered: {sorted(sent_trades - got_trades)[:5]}")
        if sent_events - got_events:
            self.fail(f"user events received but lost: {sorted(sent_events - got_events)[:5]}")

    def run(self) -> Dict[str, Any]:
        """The whole timeline: faults, then calm until settled (or a violation)."""
        self._all_wires: List[Wire] = []
        seen: Set[int] = set()
        settled_at: Optional[float] = None
        while True:
            self.step()
            for c in self.clients:
                if c.wire is not None and id(c.wire) not in seen:
                    seen.add(id(c.wire))
                    self._all_wires.append(c.wire)
            if self.now >= FAULT_SECONDS and self.settled():
                settled_at = self.now
                # a few more calm seconds: it must stay settled
                until = self.now + 5.0
                while self.now < until:
                    self.step()
                if not self.settled():
                    self.fail("unsettled again without any fault")
                break
            if self.now > FAULT_SECONDS + SETTLE_BOUND:
                self.fail(
                    f"not settled {SETTLE_BOUND:.0f}s after the faults stopped: {self.describe()}"
                )
        if REFUSED_TOPIC not in self.refused:
            self.fail("the refused subscribe was never reported")
        if isinstance(self.pub.routes.get(REFUSED_TOPIC), Route):
            self.fail("a refused topic stayed desired")
        err = self.routes[REFUSED_TOPIC].error
        if not isinstance(err, SubscriptionError):
            self.fail("the refused route carries no SubscriptionError")
        self.check_delivery()
        if self.alive_keys != {self.keeper.key}:  # every replaced key was closed
            self.fail(f"the server still knows {len(self.alive_keys) - 1} replaced listenKey(s)")
        user_key = self.clients[1].wire.listen_key if self.clients[1].wire else None
        if user_key != self.keeper.key:
            self.fail("the user stream settled on a key other than the keeper's")
        return {"settled_at": settled_at, "steps": self.step_no, "faults": sorted(self.faults)}

    def describe(self) -> str:
        parts = []
        for c in self.clients:
            parts.append(f"{c.name}: open={c.open} connect_at={c.connect_at}")
        parts.append(f"user authed={self.user.authed} keeper={self.keeper.state.value}")
        for topic, r in self.pub.routes.items():
            book = r.book
            parts.append(f"{topic}: ready={r.ready.is_set()} synced={book.synced if book else '-'}")
        parts.append(f"pending={len(self.pub._pending)}")
        return "; ".join(parts)
