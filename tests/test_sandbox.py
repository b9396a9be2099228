"""Sandbox public WebSocket behaviour, driven by a raw websocket-client (no sixmm client code)."""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest
import websocket

from sixmm.sandbox import DEPTH_STYLES, Sandbox
from tests.test_sandbox_helpers import RawBook, RawWS, is_ack, on_topic

DEPTH = "market.depth.BTCUSDT"


@pytest.fixture
def quiet() -> Iterator[Sandbox]:
    """A sandbox with a paused market and no periodic user events: frames only on demand."""
    with Sandbox(user_event_interval=0) as sb:
        sb.pause_market()
        yield sb


@pytest.fixture
def client(quiet: Sandbox) -> Iterator[RawWS]:
    ws = RawWS(quiet.ws_url)
    yield ws
    ws.close()


def depth_frames(frames: List[Any]) -> List[Dict[str, Any]]:
    return [f for f in frames if isinstance(f, dict) and f.get("topic") == DEPTH]


# ---------------------------------------------------------------------------- acks


def test_subscribe_ack_echoes_id_and_topics(quiet: Sandbox, client: RawWS) -> None:
    client.op("subscribe", "req-1", "market.trade.BTCUSDT", "market.tickers")
    ack = client.recv()
    assert ack == {
        "id": "req-1",
        "event": "subscribe",
        "success": True,
        "data": ["market.trade.BTCUSDT", "market.tickers"],
    }
    client.op("subscribe", 17, "market.ticker.ETHUSDT")  # ids are echoed as sent
    assert client.recv_until(is_ack(17))["success"] is True
    assert quiet.wait_for(lambda: len(quiet.ops) == 2)
    assert [(o["op"], o["id"]) for o in quiet.ops] == [("subscribe", "req-1"), ("subscribe", 17)]
    (conn,) = quiet.connections
    assert conn["kind"] == "public"
    assert conn["topics"] == ["market.trade.BTCUSDT", "market.tickers", "market.ticker.ETHUSDT"]


def test_batch_with_bad_topics_gets_success_and_failure_acks(client: RawWS) -> None:
    bad = [
        "market.depth.NOPEUSDT",
        "market.kline.BTCUSDT.7m",
        "depth.BTCUSDT",
        "market.foo.BTCUSDT",
    ]
    client.op("subscribe", "b1", "market.trade.BTCUSDT", *bad)
    acks = [client.recv() for _ in range(1 + len(bad))]
    assert all(a["id"] == "b1" and a["event"] == "subscribe" for a in acks)
    assert acks[0]["success"] is True and acks[0]["data"] == ["market.trade.BTCUSDT"]
    failed = {a["data"][0]: a for a in acks[1:]}
    assert set(failed) == set(bad)
    assert all(a["success"] is False and a["message"] for a in failed.values())


def test_all_bad_gets_only_failure_ack(client: RawWS) -> None:
    client.op("subscribe", "x", "market.trade.XXX")
    ack = client.recv()
    assert ack["success"] is False and ack["data"] == ["market.trade.XXX"]
    assert "XXX" in ack["message"]
    assert client.recv_through_pong() == []


def test_unsubscribe_acks_and_stops_pushes(quiet: Sandbox, client: RawWS) -> None:
    client.op("subscribe", "s", "market.trade.BTCUSDT")
    client.recv_until(is_ack("s"))
    quiet.burst("BTCUSDT", 2)
    assert client.recv_until(on_topic("market.trade.BTCUSDT"))["data"][0]["symbol"] == "BTCUSDT"
    client.op("unsubscribe", "u", "market.trade.BTCUSDT")
    ack = client.recv_until(is_ack("u"))
    assert ack == {
        "id": "u",
        "event": "unsubscribe",
        "success": True,
        "data": ["market.trade.BTCUSDT"],
    }
    quiet.burst("BTCUSDT", 3)
    assert not [f for f in client.recv_through_pong() if on_topic("market.trade.BTCUSDT")(f)]


def test_ping_pong_and_websocket_ping(client: RawWS) -> None:
    client.op("ping", "p1")
    assert client.recv() == {"id": "p1", "event": "pong"}
    client.ws.ping(b"hi")
    opcode, frame = client.ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"hi"


def test_bad_json_gets_error_frame_and_connection_survives(client: RawWS) -> None:
    client.send("{oops")
    err = client.recv()
    assert err["event"] == "error" and err["message"]
    client.send("[1,2]")
    assert client.recv()["event"] == "error"
    client.op("frobnicate", "f")
    assert client.recv() == {"id": "f", "event": "error", "message": "unknown op: frobnicate"}
    client.op("ping", "still-alive")
    assert client.recv() == {"id": "still-alive", "event": "pong"}


def test_reject_next_subscribe(quiet: Sandbox, client: RawWS) -> None:
    quiet.reject_next_subscribe("market.trade.ETHUSDT", "nope")
    client.op("subscribe", "r1", "market.trade.BTCUSDT", "market.trade.ETHUSDT")
    ok, failed = client.recv(), client.recv()
    assert ok["success"] is True and ok["data"] == ["market.trade.BTCUSDT"]
    assert failed == {
        "id": "r1",
        "event": "subscribe",
        "success": False,
        "data": ["market.trade.ETHUSDT"],
        "message": "nope",
    }
    client.op("subscribe", "r2", "market.trade.ETHUSDT")  # one-shot
    assert client.recv()["success"] is True
    quiet.reject_next_subscribe()
    client.op("subscribe", "r3", "market.trade.SOLUSDT")
    assert client.recv()["success"] is False


def test_reject_next_subscribe_of_two_topics_in_one_batch(quiet: Sandbox, client: RawWS) -> None:
    quiet.reject_next_subscribe("market.trade.ETHUSDT", "nope")
    quiet.reject_next_subscribe("market.trade.SOLUSDT", "nope too")
    client.op("subscribe", "r1", "market.trade.ETHUSDT", "market.trade.SOLUSDT")
    failed = [client.recv(), client.recv()]
    assert sorted((f["success"], f["data"][0], f["message"]) for f in failed) == [
        (False, "market.trade.ETHUSDT", "nope"),
        (False, "market.trade.SOLUSDT", "nope too"),
    ]
    client.op("subscribe", "r2", "market.trade.ETHUSDT", "market.trade.SOLUSDT")  # one-shot
    assert client.recv()["success"] is True


# --------------------------------------------------------------------------- depth


def test_depth_rebuilt_from_snapshot_and_updates_equals_truth(quiet: Sandbox) -> None:
    clients: List[Any] = []
    first_updates: List[int] = []
    try:
        for round_ in range(8):  # several subscribers, joining at different versions
            ws = RawWS(quiet.ws_url)
            ws.op("subscribe", f"d{round_}", DEPTH)
            assert ws.recv_until(is_ack(f"d{round_}"))["success"] is True
            clients.append((ws, RawBook(), []))
            quiet.step(7)
        quiet.step(10)
        version, bids, asks = quiet.book_truth("BTCUSDT")
        for ws, book, outcomes in clients:
            frames = depth_frames(ws.recv_through_pong())
            assert frames[0]["data"]["type"] == "snapshot"
            for f in frames:
                outcomes.append(book.apply(f["data"]))
                assert not book.crossed()
            assert "gap" not in outcomes
            assert (book.version, book.bids, book.asks) == (version, bids, asks)
            assert 20 <= len(bids) <= 300 and 20 <= len(asks) <= 300
            assert max(map(Decimal, bids)) < min(map(Decimal, asks))
            first_updates.append(
                frames[1]["data"]["startVersion"] - frames[0]["data"]["endVersion"]
            )
        # depth_quirks: some snapshots are followed by a stale resend (start - snap <= 0 and
        # endVersion == snap) or by an update overlapping the snapshot; both must be handled
        assert min(first_updates) <= 0
        assert any(o == "stale" for _, _, outs in clients for o in outs)
    finally:
        for ws, _, _ in clients:
            ws.close()


def test_depth_updates_batch_versions_and_carry_deletions(quiet: Sandbox, client: RawWS) -> None:
    client.op("subscribe", "d", DEPTH)
    client.recv_until(is_ack("d"))
    quiet.step(200)
    frames = depth_frames(client.recv_through_pong())
    updates = [f["data"] for f in frames if f["data"]["type"] == "update"]
    assert len(updates) >= 199
    assert any(u["endVersion"] > u["startVersion"] for u in updates)  # range rule exercised
    assert all(u["endVersion"] >= u["startVersion"] for u in updates)
    zeros = sum(q == "0" for u in updates for _, q in u["bids"] + u["asks"])
    levels = sum(len(u["bids"]) + len(u["asks"]) for u in updates)
    assert 0.03 < zeros / levels < 0.4
    assert all(isinstance(p, str) and isinstance(q, str) for u in updates for p, q in u["bids"])


def test_skip_versions_produces_a_detectable_gap(quiet: Sandbox) -> None:
    with Sandbox(user_event_interval=0, depth_quirks=False) as sb:
        sb.pause_market()
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "g", DEPTH)
            ws.recv_until(is_ack("g"))
            snap = ws.recv()["data"]
            sb.skip_versions("BTCUSDT", 3)
            sb.step(1)
            upd = ws.recv_until(on_topic(DEPTH))["data"]
            assert upd["startVersion"] == snap["endVersion"] + 4
            book = RawBook()
            book.apply(snap)
            assert book.apply(upd) == "gap"
            ws.op("subscribe", "g2", DEPTH)  # resubscribing recovers with a fresh snapshot
            ws.recv_until(is_ack("g2"))
            book.apply(ws.recv_until(on_topic(DEPTH))["data"])
            assert (book.version, book.bids, book.asks) == sb.book_truth("BTCUSDT")
        finally:
            ws.close()


def test_cross_book_sends_one_crossed_update_truth_unaffected(
    quiet: Sandbox, client: RawWS
) -> None:
    client.op("subscribe", "c", DEPTH)
    client.recv_until(is_ack("c"))
    book = RawBook()
    book.apply(client.recv()["data"])
    client.recv_through_pong()  # a possible stale resend quirk
    truth_before = quiet.book_truth("BTCUSDT")
    quiet.cross_book("BTCUSDT")
    upd = client.recv_until(on_topic(DEPTH))["data"]
    assert upd["startVersion"] == upd["endVersion"] == truth_before[0] + 1
    assert book.apply(upd) == "applied" and book.crossed()
    version, bids, asks = quiet.book_truth("BTCUSDT")
    assert version == truth_before[0] + 1 and (bids, asks) == truth_before[1:]
    assert max(map(Decimal, bids)) < min(map(Decimal, asks))


@pytest.mark.parametrize("style", DEPTH_STYLES)
def test_depth_style_shapes(style: str) -> None:
    with Sandbox(user_event_interval=0, depth_style=style, depth_quirks=False) as sb:
        sb.pause_market()
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "s", DEPTH)
            ws.recv_until(is_ack("s"))
            snap_env = ws.recv()
            sb.step(3)
            upd_env = ws.recv_until(on_topic(DEPTH))
        finally:
            ws.close()
    snap, upd = snap_env["data"], upd_env["data"]
    version_type = str if style == "string_versions" else int
    assert isinstance(snap["endVersion"], version_type)
    assert isinstance(upd["endVersion"], version_type)
    if style in ("no_type", "envelope_snapshot"):
        assert "type" not in snap and "type" not in upd
    else:
        assert (snap["type"], upd["type"]) == ("snapshot", "update")
    assert snap_env["event"] == ("snapshot" if style == "envelope_snapshot" else "data")
    assert upd_env["event"] == "data"
    level = upd["bids"][0] if upd["bids"] else upd["asks"][0]
    if style == "object_levels":
        assert set(level) == {"price", "quantity"}
    else:
        assert isinstance(level, list) and len(level) == 2
    if style == "prev_field":
        assert "startVersion" not in upd and upd["prevEndVersion"] == snap["endVersion"]
    elif style == "unverified":
        assert "startVersion" not in upd and "prevEndVersion" not in upd
    else:
        assert int(upd["startVersion"]) == int(snap["endVersion"]) + 1


def test_same_seed_same_market() -> None:
    truths = []
    for seed in (7, 7, 8):
        with Sandbox(seed=seed, user_event_interval=0, tick_interval=0) as sb:
            sb.step(30)
            truths.append(sb.book_truth("ETHUSDT"))
    assert truths[0] == truths[1]
    assert truths[0] != truths[2]


# ---------------------------------------------------------------- other channels


def test_trade_kline_ticker_shapes() -> None:
    with Sandbox(
        user_event_interval=0, tick_interval=0.01, ticker_interval=0.05, kline_interval=0.05
    ) as sb:
        ws = RawWS(sb.ws_url)
        try:
            topics = [
                "market.trade.BTCUSDT",
                "market.kline.BTCUSDT.1m",
                "market.kline.SOLUSDT.1M",
                "market.ticker.ETHUSDT",
                "market.tickers",
            ]
            ws.op("subscribe", "all", *topics)
            ws.recv_until(is_ack("all"))
            seen: Dict[str, Any] = {}
            ws.recv_until(lambda f: bool(seen.update({f["topic"]: f})) or len(seen) == 5)
        finally:
            ws.close()
    trades = seen["market.trade.BTCUSDT"]["data"]
    assert 1 <= len(trades) <= 3
    assert set(trades[0]) == {"symbol", "tradeId", "price", "quantity", "side", "time"}
    assert isinstance(trades[0]["tradeId"], str) and trades[0]["side"] in ("BUY", "SELL")
    kline = seen["market.kline.SOLUSDT.1M"]["data"]
    assert kline["interval"] == "1M" and kline["closed"] is False
    assert kline["openTime"] < kline["closeTime"]
    assert {"open", "high", "low", "close", "volume", "openTime", "closeTime"} <= set(kline)
    ticker = seen["market.ticker.ETHUSDT"]["data"]
    fields = {
        "symbol", "lastPrice", "open", "high", "low", "volume", "quoteVolume", "priceChange",
        "priceChangePercent", "markPrice", "indexPrice", "fundingRate",
    }  # fmt: skip
    assert set(ticker) == fields and ticker["symbol"] == "ETHUSDT"
    tickers = seen["market.tickers"]["data"]
    assert [t["symbol"] for t in tickers] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for env in seen.values():
        assert env["event"] == "data" and isinstance(env["ts"], int)


def test_burst_publishes_n_trades(quiet: Sandbox, client: RawWS) -> None:
    client.op("subscribe", "t", "market.trade.SOLUSDT")
    client.recv_until(is_ack("t"))
    quiet.burst("SOLUSDT", 500)
    frames = [client.recv_until(on_topic("market.trade.SOLUSDT")) for _ in range(500)]
    ids = [int(f["data"][0]["tradeId"]) for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 500


# ------------------------------------------------------------------------- faults


def test_drop_all_closes_sockets(quiet: Sandbox) -> None:
    a, b = RawWS(quiet.ws_url), RawWS(quiet.ws_url)
    try:
        assert quiet.wait_for(lambda: len(quiet.connections) == 2)
        assert quiet.drop_all() == 2
        for ws in (a, b):
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                ws.recv(2.0)
        assert quiet.wait_for(lambda: quiet.connections == [])
    finally:
        a.close()
        b.close()


def test_go_silent_then_resume(quiet: Sandbox, client: RawWS) -> None:
    quiet.resume_market()
    client.op("subscribe", "s", DEPTH)
    client.recv_until(is_ack("s"))
    client.recv_until(on_topic(DEPTH))
    quiet.go_silent()
    client.recv_all(0.1)  # anything already in flight
    client.op("ping", "p")
    client.ws.ping(b"x")
    assert client.recv_all(0.3) == []  # no data, no pong, no websocket pong
    quiet.resume()
    client.op("ping", "p2")
    client.recv_until(lambda f: f == {"id": "p2", "event": "pong"})
    client.recv_until(on_topic(DEPTH))


def test_go_silent_for_seconds_ends_by_itself(quiet: Sandbox, client: RawWS) -> None:
    quiet.go_silent(0.5)
    client.op("ping", "lost")
    client.op("ping", "late")  # both during the silence: never answered
    assert quiet.wait_for(lambda: len(quiet.ops) == 2)
    answered: List[Any] = []
    for i in range(40):  # once the silence is over, pings are answered again
        client.op("ping", f"after-{i}")
        answered = client.recv_all(0.05)
        if answered:
            break
    assert answered and all(f["id"].startswith("after-") for f in answered)


def test_send_malformed_reaches_every_socket(quiet: Sandbox) -> None:
    a, b = RawWS(quiet.ws_url), RawWS(quiet.ws_url)
    try:
        assert quiet.wait_for(lambda: len(quiet.connections) == 2)
        quiet.send_malformed()
        quiet.send_malformed("<<garbage>>", count=2)
        for ws in (a, b):
            frames = ws.recv_through_pong("ok")  # the pong also proves the socket survived
            assert "{not json" in frames and frames.count("<<garbage>>") == 2
            assert any(isinstance(f, dict) and f.get("topic") == 42 for f in frames)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- lifecycle


def test_stop_is_idempotent_joins_thread_and_closes_clients() -> None:
    sb = Sandbox(user_event_interval=0).start()
    assert sb.start() is sb
    ws = RawWS(sb.ws_url)
    assert sb.wait_for(lambda: len(sb.connections) == 1)
    sb.stop()
    sb.stop()
    assert not [t for t in threading.enumerate() if t.name == "sixmm-sandbox"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv(2.0)
    ws.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sb.port), timeout=1)


def test_start_fails_loudly_on_a_busy_port() -> None:
    with Sandbox(user_event_interval=0) as first:
        second = Sandbox(port=first.port, user_event_interval=0)
        with pytest.raises(RuntimeError, match="failed to start"):
            second.start()


def test_invalid_depth_style_rejected() -> None:
    with pytest.raises(ValueError):
        Sandbox(depth_style="fancy")


def test_ops_are_recorded_with_connection_ids(quiet: Sandbox) -> None:
    a, b = RawWS(quiet.ws_url), RawWS(quiet.ws_url)
    try:
        a.op("ping", "pa")
        a.recv()
        b.op("subscribe", "sb", "market.tickers")
        b.recv()
        ops = quiet.ops
        assert [o["op"] for o in ops] == ["ping", "subscribe"]
        assert ops[0]["conn"] != ops[1]["conn"] and ops[1]["args"] == ["market.tickers"]
        assert ops[0]["t"] <= ops[1]["t"]
        json.dumps(ops)  # plain data
    finally:
        a.close()
        b.close()


def test_public_methods_are_safe_from_many_threads(quiet: Sandbox) -> None:
    errors: List[BaseException] = []
    ws = RawWS(quiet.ws_url)
    ws.op("subscribe", "d", DEPTH)

    def hammer() -> None:
        try:
            for _ in range(30):
                quiet.step(1)
                _, bids, asks = quiet.book_truth("BTCUSDT")
                assert max(map(Decimal, bids)) < min(map(Decimal, asks))
                assert quiet.connections and isinstance(quiet.ops, list)
                quiet.pause_market()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, name=f"hammer-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert not errors
        frames = depth_frames(ws.recv_through_pong())
        book = RawBook()
        assert "gap" not in [book.apply(f["data"]) for f in frames]
        assert book.version == quiet.book_truth("BTCUSDT")[0]
    finally:
        ws.close()


def test_wait_for_times_out_false(quiet: Sandbox) -> None:
    assert quiet.wait_for(lambda: False, timeout=0.05) is False
    assert quiet.wait_for(lambda: True, timeout=0.0) is True


def test_slow_consumer_is_dropped_when_its_queue_overflows() -> None:
    with Sandbox(user_event_interval=0, tick_interval=0, max_queue=50) as sb:
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "t", "market.trade.BTCUSDT")
            ws.recv_until(is_ack("t"))
            sb.burst("BTCUSDT", 1000)  # enqueued in one go: more than 50 waiting
            assert sb.wait_for(lambda: sb.connections == [])
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                ws.recv_all(2.0)
        finally:
            ws.close()


def test_clear_records(quiet: Sandbox, client: RawWS) -> None:
    client.op("ping", "1")
    client.recv()
    assert quiet.ops
    quiet.clear_records()
    assert quiet.ops == [] and quiet.rest_calls == []


def test_stop_from_the_sandbox_thread_itself_does_not_deadlock() -> None:
    sb = Sandbox(user_event_interval=0).start()
    sb._call(sb.stop)  # as if a hook running on the loop stopped it
    sb.stop(timeout=5)  # from outside: joins
    assert not [t for t in threading.enumerate() if t.name == "sixmm-sandbox"]


def test_ack_style_variants() -> None:
    with Sandbox(user_event_interval=0, tick_interval=0, ack_style="msg_field") as sb:
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "m", "market.trade.NOPE")
            ack = ws.recv()
            assert ack["success"] is False and ack["msg"] and "message" not in ack
        finally:
            ws.close()
    with Sandbox(user_event_interval=0, tick_interval=0, ack_style="numeric_ids") as sb:
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "1772007814666", "market.tickers")
            assert ws.recv()["id"] == 1772007814666
            ws.op("subscribe", "abc", "market.tickers")
            assert ws.recv()["id"] == "abc"
        finally:
            ws.close()


def test_trade_style_object_sends_one_push_per_trade() -> None:
    with Sandbox(user_event_interval=0, tick_interval=0, trade_style="object") as sb:
        ws = RawWS(sb.ws_url)
        try:
            ws.op("subscribe", "t", "market.trade.ETHUSDT")
            ws.recv_until(is_ack("t"))
            sb.burst("ETHUSDT", 3)
            pushes = [ws.recv_until(on_topic("market.trade.ETHUSDT")) for _ in range(3)]
        finally:
            ws.close()
    assert all(isinstance(p["data"], dict) and p["data"]["symbol"] == "ETHUSDT" for p in pushes)


def test_client_close_is_answered_after_the_connection_is_forgotten(quiet: Sandbox) -> None:
    for _ in range(5):
        ws = RawWS(quiet.ws_url)
        ws.op("subscribe", "s", "market.tickers")
        ws.recv_until(is_ack("s"))
        ws.ws.close(timeout=2)  # sends a close frame and waits for the server's reply
        assert quiet.connections == []  # no waiting needed: forgotten before the reply
