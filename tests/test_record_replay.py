"""Record a live session against the sandbox (drops, gaps, a refused subscribe, the private
stream), then replay it with the sandbox stopped: the same callbacks, in the same order, the
same books; no credential in the file."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import sixmm.replay as replay_module
from sixmm import Backoff, RestClient, StreamManager, SubscriptionError
from sixmm.orderbook import OrderBook
from sixmm.recording import FORMAT, Recorder
from sixmm.replay import RecordingError, read_recording
from sixmm.sandbox import Sandbox

from .helpers import wait_until

FAST: Dict[str, Any] = {
    "ping_interval": 0.2,
    "stale_after": 2.0,
    "backoff": Backoff(initial=0.05, maximum=0.2),
    "max_topics_per_connection": 2,
}


class Session:
    """One set of registrations and what each callback received."""

    def __init__(self) -> None:
        self.seen: Dict[str, List[Any]] = {}

    def cb(self, name: str) -> Any:
        items = self.seen.setdefault(name, [])
        return items.append

    def register(self, streams: StreamManager) -> OrderBook:
        streams.trades("BTCUSDT", self.cb("trades"))
        streams.klines("ETHUSDT", "1m", self.cb("klines"))
        streams.depth("ETHUSDT", self.cb("depth"))
        streams.ticker("SOLUSDT", self.cb("ticker"))  # refused by the sandbox
        books = self.seen.setdefault("book", [])

        def on_update(b: OrderBook) -> None:
            books.append((b.version, b.synced, b.top(5)))

        book = streams.order_book("BTCUSDT", on_update)
        streams.user(
            on_order=self.cb("orders"), on_account=self.cb("accounts"), on_event=self.cb("events")
        )
        return book

    def states(self, event: Any) -> None:
        self.seen.setdefault("state:" + event.connection, []).append(event.state)

    def gaps(self, gap: Any) -> None:
        self.seen.setdefault("gaps", []).append(gap.topic)

    def errors(self, exc: BaseException) -> None:
        self.seen.setdefault("errors", []).append(type(exc).__name__)

    def kwargs(self) -> Dict[str, Any]:
        return {"on_state": self.states, "on_gap": self.gaps, "on_error": self.errors}


def _record(sb: Sandbox, path: Path) -> Tuple[Session, Any, List[str]]:
    live = Session()
    rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
    sb.reject_next_subscribe("market.ticker.SOLUSDT", "no such ticker here")
    keys: List[str] = []
    with rest, StreamManager(sb.ws_url, rest=rest, record=str(path), **FAST, **live.kwargs()) as s:
        book = live.register(s)
        assert book.wait_synced(10)
        wait_until(lambda: sb.listen_keys)
        keys.extend(sb.listen_keys)
        wait_until(lambda: len(live.seen.get("trades", [])) >= 5)
        sb.skip_versions("BTCUSDT", 3)  # a gap: resync
        wait_until(lambda: s.stats()["books"]["BTCUSDT"]["resyncs"] >= 1 and book.synced)
        sb.push_user_event("ORDER_TRADE_UPDATE")
        sb.push_user_event("ACCOUNT_UPDATE")
        wait_until(lambda: live.seen["orders"] and live.seen["accounts"])
        sb.drop_all()  # every connection drops: reconnect, resubscribe, resync
        wait_until(lambda: s.stats()["connections"]["public-0"]["reconnects"] >= 1)
        wait_until(lambda: book.synced and len(live.seen.get("gaps", [])) >= 3)
        sb.push_user_event("ORDER_TRADE_UPDATE")
        wait_until(lambda: len(live.seen["orders"]) >= 2)
        n = len(live.seen["trades"])
        wait_until(lambda: len(live.seen["trades"]) > n + 3)
        stats = s.stats()
        assert stats["recorder"]["dropped"] == 0
    end = (book.version, book.synced, book.top(50))
    return live, end, keys


def _replay(path: Path, **kwargs: Any) -> Tuple[Session, Any]:
    again = Session()
    with StreamManager.replay(str(path), **kwargs, **again.kwargs()) as r:
        book = again.register(r)
        assert r.wait(60)
    return again, (book.version, book.synced, book.top(50))


@pytest.mark.parametrize("name", ["session.jsonl", "session.jsonl.gz"])
def test_replay_delivers_what_the_live_session_delivered(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / name
    with Sandbox(port=0, seed=3, user_event_interval=0.3) as sb:
        live, live_end, keys = _record(sb, path)
        secrets = [*keys, sb.api_key, sb.api_secret]
    # the sandbox is gone: replay needs no network and no credentials
    again, replay_end = _replay(path)
    assert SubscriptionError.__name__ in live.seen["errors"]
    assert set(again.seen) == set(live.seen)
    for key, items in live.seen.items():
        assert again.seen[key] == items, key
    assert replay_end == live_end
    assert len(live.seen["book"]) > 10 and live.seen["state:public-0"][-1].value == "LOST"
    # deterministic: a second replay gives the same again, on the pure-Python loop (the
    # first fed the frames through _recfast.feed_recv where it is built)
    monkeypatch.setattr(replay_module, "_recfast", None)
    third, third_end = _replay(path)
    assert third.seen == again.seen and third_end == replay_end

    raw = path.read_bytes()
    text = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert text.startswith(b'{"format":"' + FORMAT.encode())
    for secret in secrets:
        assert secret.encode() not in raw
        assert secret.encode() not in text
    assert b"signature=" not in text and b"listenKey=<redacted>" in text
    kinds = {json.loads(line)["ev"] for line in text.splitlines()[1:]}
    assert {"open", "recv", "sent", "close", "rest", "listen_key", "stop"} <= kinds


def test_a_truncated_last_line_replays_up_to_it(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl"
    with Sandbox(port=0, seed=4) as sb:
        live = Session()
        with StreamManager(sb.ws_url, record=str(path), **FAST) as s:
            s.trades("BTCUSDT", live.cb("trades"))
            wait_until(lambda: len(live.seen["trades"]) >= 20)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    recv = [
        i
        for i, line in enumerate(lines)
        if b'"ev":"recv"' in line and b'\\"topic\\":\\"market.trade' in line
    ]
    cut = recv[len(recv) // 2]
    crashed = tmp_path / "cut.jsonl"
    crashed.write_bytes(b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    kept = [
        json.loads(json.loads(line)["text"])
        for line in lines[:cut]
        if line in [lines[i] for i in recv]
    ]
    expected = sum(len(k["data"]) if isinstance(k["data"], list) else 1 for k in kept)
    trades: List[Any] = []
    with StreamManager.replay(str(crashed)) as r:
        r.trades("BTCUSDT", trades.append)
        assert r.wait(30)
        assert r.stats()["replay"]["truncated"] == 1
    assert len(trades) == expected and trades == live.seen["trades"][:expected]


def test_a_cut_gzip_stream_replays_what_was_flushed(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl.gz"
    with Sandbox(port=0, seed=5) as sb:
        got: List[Any] = []
        with StreamManager(sb.ws_url, record=str(path), **FAST) as s:
            s.trades("BTCUSDT", got.append)
            wait_until(lambda: len(got) >= 20)
            wait_until(lambda: s.stats()["recorder"]["flushes"] >= 3)
            size = os.path.getsize(path)
            flushed = path.read_bytes()  # what a crash now would leave: no gzip trailer
        assert size > 0
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(flushed)
    trades: List[Any] = []
    with StreamManager.replay(str(cut)) as r:
        r.trades("BTCUSDT", trades.append)
        assert r.wait(30)
    assert trades and trades == got[: len(trades)]


def _last_mono(path: Path) -> float:
    try:
        return int(json.loads(path.read_bytes().splitlines()[-1]).get("us", 0)) / 1e6
    except ValueError:  # caught a line half written
        return 0.0


def test_replay_at_recorded_speed_keeps_the_timing(tmp_path: Path) -> None:
    path = tmp_path / "timed.jsonl"
    with Sandbox(port=0, seed=6) as sb:
        got: List[Any] = []
        with StreamManager(sb.ws_url, record=str(path), **FAST) as s:
            s.trades("BTCUSDT", got.append)
            wait_until(lambda: len(got) >= 5)
            wait_until(lambda: _last_mono(path) > 1.5)
    _h, events, _i = read_recording(str(path))
    span = [e["us"] / 1e6 for e in events]
    recorded = span[-1] - span[0]
    started = time.monotonic()
    with StreamManager.replay(str(path), speed=2.0) as r:
        r.trades("BTCUSDT", lambda t: None)
        assert r.wait(60)
    assert time.monotonic() - started >= recorded / 2 * 0.9


def test_not_a_recording(tmp_path: Path) -> None:
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"hello": 1}\n')
    with pytest.raises(RecordingError):
        StreamManager.replay(str(bad))


def test_a_full_writer_drops_counts_and_reports_never_blocks(tmp_path: Path) -> None:
    errors: List[BaseException] = []
    rec = Recorder(str(tmp_path / "r.jsonl"), report=errors.append, max_pending=10)
    for i in range(100):  # not started: nothing drains, the queue stays full
        rec.received("public-0", b'{"n":%d}' % i)
    assert rec.stats()["dropped"] == 90 and rec.stats()["pending"] == 10
    rec.start()
    rec.stop()
    assert errors and "dropped 90" in str(errors[0])
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {**json.loads(lines[-1]), "ev": "dropped", "count": 90}
    assert sum('"ev":"recv"' in line for line in lines) == 10


def test_a_listen_key_outcome_replays_as_it_was_told_wherever_it_lands(tmp_path: Path) -> None:
    # The keeper's "created" races the user stream's first connect: what on_state was told
    # (nothing, before the first connect) is recorded with it, and a replay follows the
    # record even when the line lands after the authentication (as it may on a busy machine).
    path = tmp_path / "user.jsonl"
    live = Session()
    with Sandbox(port=0, seed=5) as sb:
        rest = RestClient(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.rest_url)
        with rest, StreamManager(sb.ws_url, rest=rest, record=str(path), **live.kwargs()) as s:
            assert s.user(on_order=live.cb("orders")).wait_ready(10)
            sb.push_user_event("ORDER_TRADE_UPDATE")
            wait_until(lambda: live.seen["orders"])
    lines = path.read_bytes().splitlines(keepends=True)
    events = [json.loads(line) for line in lines[1:]]
    created = [i for i, e in enumerate(events) if e["ev"] == "listen_key"]
    # recorded with what on_state had been told: nothing yet, or the user stream's CONNECTED
    assert events[created[0]]["kind"] == "created"
    assert events[created[0]]["state"] in ("", "CONNECTED"), events[created[0]]
    first_recv = next(i for i, e in enumerate(events) if e["ev"] == "recv")
    # the line moves to the other side of the first frame the stream received (usually before
    # it, told nothing yet; on a busy machine the dispatcher may have told CONNECTED first)
    moved = list(lines[1:])
    line = moved.pop(created[0])
    moved.insert(first_recv if created[0] < first_recv else 0, line)
    raced = tmp_path / "raced.jsonl"
    raced.write_bytes(lines[0] + b"".join(moved))
    for recording in (path, raced):
        again = Session()
        with StreamManager.replay(str(recording), **again.kwargs()) as r:
            r.user(on_order=again.cb("orders"))
            assert r.wait(60)
        assert again.seen["state:user"] == live.seen["state:user"]
        assert again.seen["orders"] == live.seen["orders"]
