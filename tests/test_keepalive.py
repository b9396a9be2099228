"""ListenKeyKeeper: schedule, retries, re-creation, fatal auth, stop.

The first half drives the keeper with a scripted in-memory REST double (fast, exact); the
second half runs it against the sandbox exchange over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, cast

import pytest

from sixmm.config import Backoff
from sixmm.errors import ApiError, AuthError, ConnectionLost
from sixmm.keepalive import ListenKeyKeeper
from sixmm.rest.client import RestClient
from tests.helpers import Recorder, wait_until

FAST = Backoff(initial=0.01, maximum=0.02, jitter=False)


class FakeRest:
    """Records listen-key calls; each call pops a scripted outcome (an exception) if any."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Optional[str]]] = []
        self.script: List[Tuple[str, BaseException]] = []
        self.counter = 0
        self.lock = threading.Lock()

    def _next(self, op: str, key: Optional[str]) -> None:
        with self.lock:
            self.calls.append((op, key))
            for i, (want, exc) in enumerate(self.script):
                if want == op:
                    del self.script[i]
                    raise exc

    def ops(self, op: str) -> List[Optional[str]]:
        with self.lock:
            return [k for o, k in self.calls if o == op]

    def create_listen_key(
        self, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> str:
        self._next("create", None)
        with self.lock:
            self.counter += 1
            return f"key-{self.counter:04d}-0123456789abcdef"

    def renew_listen_key(
        self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        self._next("renew", key)

    def close_listen_key(
        self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        self._next("close", key)


class Harness:
    def __init__(self, rest: Any, **kw: Any) -> None:
        self.new_keys = Recorder()
        self.statuses = Recorder()
        self.fatals = Recorder()
        kw.setdefault("backoff", FAST)
        kw.setdefault("renew_interval", 0.05)
        self.keeper = ListenKeyKeeper(
            cast(RestClient, rest),
            on_new_key=self.new_keys,
            on_status=lambda kind, reason: self.statuses((kind, reason)),
            on_fatal=self.fatals,
            **kw,
        )

    def kinds(self) -> List[str]:
        return [k for k, _ in self.statuses.snapshot()]


@pytest.fixture
def fake() -> FakeRest:
    return FakeRest()


@pytest.fixture
def harness(fake: FakeRest) -> Iterator[Harness]:
    h = Harness(fake)
    yield h
    h.keeper.stop()


def keeper_thread_alive() -> bool:
    return any(t.name == "sixmm-listenkey" for t in threading.enumerate())


def test_start_creates_key_and_renews_on_schedule(fake: FakeRest, harness: Harness) -> None:
    key = harness.keeper.start()
    assert key == harness.keeper.key == "key-0001-0123456789abcdef"
    assert harness.keeper.start() == key  # idempotent
    assert len(fake.ops("create")) == 1
    # the fake records a renewal when it starts; the keeper counts it once it returned
    wait_until(lambda: harness.keeper.stats()["renewals"] >= 3, timeout=10)
    assert len(fake.ops("renew")) >= 3
    assert set(fake.ops("renew")) == {key}
    assert harness.kinds()[0] == "created"
    assert "renewed" in harness.kinds()
    stats = harness.keeper.stats()
    assert stats["renewals"] >= 3 and stats["renew_failures"] == 0
    assert stats["last_renew_ok"] is not None and stats["next_renew_in"] is not None


def test_transient_failures_are_retried_and_reported(fake: FakeRest, harness: Harness) -> None:
    fake.script = [
        ("renew", ApiError(5002, "service unavailable")),
        ("renew", ApiError(None, "too many requests", http_status=429)),
        ("renew", ConnectionLost("PUT /v1/private/user/listen-key: refused")),
    ]
    harness.keeper.start()
    wait_until(lambda: harness.keeper.stats()["renewals"] >= 1, timeout=5)
    assert harness.kinds().count("renew_failed") == 3
    assert harness.keeper.stats()["renew_failures"] == 3
    assert not fake.ops("create")[1:], "a transient failure must not re-create the key"
    assert harness.new_keys.snapshot() == []


def test_gone_key_is_recreated_and_old_one_closed(fake: FakeRest, harness: Harness) -> None:
    fake.script = [("renew", ApiError(2002, "listenKey does not exist"))]
    old = harness.keeper.start()
    new = wait_until(lambda: harness.new_keys.snapshot(), timeout=5)[0]
    assert new != old and harness.keeper.key == new
    assert "recreated" in harness.kinds()
    wait_until(lambda: old in fake.ops("close"), timeout=5)
    wait_until(lambda: new in fake.ops("renew"), timeout=5)  # the new key is kept alive
    assert harness.keeper.stats()["recreations"] == 1


def test_recreate_failure_is_retried(fake: FakeRest) -> None:
    harness = Harness(fake, renew_interval=3600.0)
    harness.keeper.start()
    fake.script = [
        ("renew", ApiError(2002, "listenKey does not exist")),
        ("create", ApiError(5001, "internal error")),
    ]
    harness.keeper.renew_now()
    try:
        wait_until(lambda: harness.new_keys.snapshot(), timeout=5)
        assert "renew_failed" in harness.kinds()
        assert len(fake.ops("create")) == 3  # start, failed re-create, successful re-create
    finally:
        harness.keeper.stop()


def test_auth_error_is_fatal_without_retry_storm(fake: FakeRest, harness: Harness) -> None:
    fake.script = [("renew", AuthError(1003, "Invalid signature", http_status=401))]
    harness.keeper.start()
    err = wait_until(lambda: harness.fatals.snapshot(), timeout=5)[0]
    assert isinstance(err, AuthError) and err.code == 1003
    wait_until(lambda: not keeper_thread_alive(), timeout=5)
    assert len(fake.calls) == 2  # create + the one refused renewal
    assert harness.kinds()[-1] == "fatal"
    harness.keeper.renew_now()  # ignored after a fatal error
    harness.keeper.key_rejected("auth refused")
    harness.keeper.stop()
    assert fake.ops("close") == []  # no point closing with rejected credentials
    assert len(fake.calls) == 2


def test_start_propagates_auth_error_and_starts_no_thread(fake: FakeRest) -> None:
    fake.script = [("create", AuthError(1001, "no auth", http_status=401))]
    h = Harness(fake)
    with pytest.raises(AuthError):
        h.keeper.start()
    assert not keeper_thread_alive()
    h.keeper.stop()
    assert h.keeper.key is None


def test_stop_closes_key_once_and_is_idempotent(fake: FakeRest) -> None:
    h = Harness(fake, renew_interval=3600.0)
    key = h.keeper.start()
    h.keeper.stop()
    h.keeper.stop()
    assert fake.ops("close") == [key]
    assert h.keeper.key is None
    assert h.kinds()[-1] == "closed"
    assert not keeper_thread_alive()
    with pytest.raises(RuntimeError):
        h.keeper.start()


def test_stop_during_start_leaks_neither_key_nor_thread(fake: FakeRest) -> None:
    entered, release = threading.Event(), threading.Event()
    create = fake.create_listen_key

    def slow_create(*, max_retries: Optional[int] = None) -> str:
        entered.set()
        release.wait(5)
        return create()

    fake.create_listen_key = slow_create  # type: ignore[method-assign]
    h = Harness(fake)
    errors: List[BaseException] = []

    def starter() -> None:
        try:
            h.keeper.start()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=starter, name="test-starter")
    t.start()
    assert entered.wait(5)
    h.keeper.stop()
    release.set()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert fake.ops("close") == ["key-0001-0123456789abcdef"]
    assert not keeper_thread_alive() and h.keeper.key is None


def test_stop_from_inside_a_callback_does_not_deadlock(fake: FakeRest) -> None:
    holder: List[ListenKeyKeeper] = []
    done = threading.Event()

    def on_status(kind: str, reason: str) -> None:
        if kind == "renewed":
            holder[0].stop()
            done.set()

    keeper = ListenKeyKeeper(
        cast(RestClient, fake),
        renew_interval=0.02,
        on_new_key=lambda k: None,
        on_status=on_status,
        on_fatal=lambda e: None,
    )
    holder.append(keeper)
    key = keeper.start()
    assert done.wait(5)
    wait_until(lambda: not keeper_thread_alive(), timeout=5)
    assert fake.ops("close") == [key]


def test_renew_now_and_key_rejected_wake_the_thread(fake: FakeRest) -> None:
    h = Harness(fake, renew_interval=3600.0)
    key = h.keeper.start()
    try:
        h.keeper.renew_now()
        wait_until(lambda: len(fake.ops("renew")) == 1, timeout=5)
        h.keeper.key_rejected("auth refused by the stream")  # key still valid: just renewed
        wait_until(lambda: len(fake.ops("renew")) == 2, timeout=5)
        assert h.new_keys.snapshot() == []
        fake.script = [("renew", ApiError(2002, "listenKey expired"))]
        h.keeper.key_rejected("auth refused by the stream")
        new = wait_until(lambda: h.new_keys.snapshot(), timeout=5)[0]
        assert new != key and h.keeper.key == new
        assert h.keeper.stats()["next_renew_in"] > 3000
    finally:
        h.keeper.stop()


def test_raising_callbacks_are_contained(fake: FakeRest, caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("user bug")

    fake.script = [("renew", ApiError(2002, "gone"))]
    keeper = ListenKeyKeeper(
        cast(RestClient, fake),
        renew_interval=0.02,
        backoff=FAST,
        on_new_key=boom,
        on_status=boom,
        on_fatal=boom,
    )
    with caplog.at_level(logging.ERROR, logger="sixmm.keepalive"):
        keeper.start()
        wait_until(lambda: len(fake.ops("renew")) >= 2, timeout=5)  # still renewing the new key
        keeper.stop()
    assert len(fake.ops("create")) == 2
    assert any("callback raised" in r.getMessage() for r in caplog.records)


def test_repr_and_logs_never_show_the_key(fake: FakeRest, caplog: pytest.LogCaptureFixture) -> None:
    fake.script = [("renew", ApiError(2002, "gone")), ("renew", ApiError(5002, "busy"))]
    h = Harness(fake, renew_interval=0.02)
    with caplog.at_level(logging.DEBUG):
        h.keeper.start()
        wait_until(lambda: h.keeper.stats()["renewals"] >= 1, timeout=5)
        text = repr(h.keeper)
        h.keeper.stop()
    keys = [k for _, k in fake.calls if k] + [f"key-{i:04d}" for i in (1, 2)]
    lines = (
        [r.getMessage() for r in caplog.records] + [text] + [r for _, r in h.statuses.snapshot()]
    )
    for key in keys:
        assert not any(key in line for line in lines), key


# ------------------------------------------------------------------- against the sandbox

LISTEN_KEY_PATH = "/v1/private/user/listen-key"


def key_calls(sb: Any, method: str) -> List[Dict[str, Any]]:
    return [
        c for c in list(sb.rest_calls) if c["path"] == LISTEN_KEY_PATH and c["method"] == method
    ]


def body_key(call: Dict[str, Any]) -> Any:
    return json.loads(call["body"])["listenKey"]


@pytest.fixture
def sb_rest(sandbox: Any) -> Iterator[RestClient]:
    with RestClient(
        base_url=sandbox.rest_url,
        api_key=str(getattr(sandbox, "api_key", "sandbox-key")),
        api_secret=str(getattr(sandbox, "api_secret", "sandbox-secret")),
        retry_backoff=FAST,
    ) as client:
        yield client


def test_sandbox_renews_on_schedule_and_stop_deletes(sandbox: Any, sb_rest: RestClient) -> None:
    h = Harness(sb_rest, renew_interval=0.2)
    started = time.monotonic()
    key = h.keeper.start()
    try:
        assert key in sandbox.listen_keys
        wait_until(lambda: len([c for c in key_calls(sandbox, "PUT") if c["code"] == 0]) >= 3)
        assert time.monotonic() - started >= 0.55  # on schedule, not a storm
        assert {body_key(c) for c in key_calls(sandbox, "PUT")} == {key}
    finally:
        h.keeper.stop()
    deletes = key_calls(sandbox, "DELETE")
    assert [body_key(c) for c in deletes] == [key] and deletes[0]["code"] == 0
    assert key not in sandbox.listen_keys
    assert h.kinds()[0] == "created" and h.kinds()[-1] == "closed"


def test_sandbox_failed_renewal_is_retried(sandbox: Any, sb_rest: RestClient) -> None:
    h = Harness(sb_rest, renew_interval=3600.0)
    key = h.keeper.start()
    try:
        sandbox.fail_next_rest(5002, http_status=503, count=2, message="Service unavailable")
        h.keeper.renew_now()
        wait_until(lambda: h.keeper.stats()["renewals"] == 1)
        assert [c["code"] for c in key_calls(sandbox, "PUT")] == [5002, 5002, 0]
        assert h.keeper.stats()["renew_failures"] == 2
        assert h.kinds().count("renew_failed") == 2
        assert h.keeper.key == key and h.new_keys.snapshot() == []
    finally:
        h.keeper.stop()


def test_sandbox_expired_key_is_replaced(sandbox: Any, sb_rest: RestClient) -> None:
    h = Harness(sb_rest, renew_interval=3600.0)
    old = h.keeper.start()
    try:
        sandbox.expire_listen_key(old)
        h.keeper.key_rejected("private stream refused: listenKey expired")
        new = wait_until(lambda: h.new_keys.snapshot())[0]
        assert new != old and h.keeper.key == new
        assert new in sandbox.listen_keys and old not in sandbox.listen_keys
        assert "recreated" in h.kinds()
        h.keeper.renew_now()
        wait_until(lambda: any(body_key(c) == new for c in key_calls(sandbox, "PUT")))
    finally:
        h.keeper.stop()
    assert new not in sandbox.listen_keys


def test_sandbox_bad_credentials_are_fatal_and_bounded(sandbox: Any, sb_rest: RestClient) -> None:
    h = Harness(sb_rest, renew_interval=0.05)
    h.keeper.start()
    sandbox.reject_credentials(True)
    try:
        err = wait_until(lambda: h.fatals.snapshot())[0]
        assert isinstance(err, AuthError)
        wait_until(lambda: not keeper_thread_alive())
        h.keeper.renew_now()
        h.keeper.key_rejected("auth refused")
        h.keeper.stop()
        calls = [c for c in list(sandbox.rest_calls) if c["path"] == LISTEN_KEY_PATH]
        # renewals may succeed before reject_credentials() lands (every 0.05 s, and this
        # thread may be descheduled meanwhile); after the first refused one: nothing at all
        methods = [c["method"] for c in calls]
        refused = [i for i, c in enumerate(calls) if c["code"] != 0]
        assert methods[0] == "POST" and set(methods[1:]) == {"PUT"}, methods
        assert refused == [len(calls) - 1], calls  # no retry storm, no DELETE
        with pytest.raises(AuthError):
            Harness(sb_rest).keeper.start()
    finally:
        sandbox.reject_credentials(False)


def test_sandbox_session_logs_no_key(
    sandbox: Any, sb_rest: RestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        h = Harness(sb_rest, renew_interval=0.05)
        first = h.keeper.start()
        wait_until(lambda: h.keeper.stats()["renewals"] >= 1)
        sandbox.expire_listen_key(first)
        second = wait_until(lambda: h.new_keys.snapshot())[0]
        h.keeper.stop()
    lines = [r.getMessage() for r in caplog.records] + [r for _, r in h.statuses.snapshot()]
    lines += [repr(h.keeper), repr(sb_rest)]
    assert any("listen-key" in line for line in lines)
    for key in (first, second):
        assert not any(key[:8] in line for line in lines)


class DeadKeysRest(FakeRest):
    """Every key is dead on arrival: each renewal says it is gone. Records creation times."""

    def __init__(self) -> None:
        super().__init__()
        self.created_at: List[float] = []

    def create_listen_key(
        self, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> str:
        with self.lock:
            self.created_at.append(time.monotonic())
        return super().create_listen_key(max_retries=max_retries)

    def renew_listen_key(
        self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        self._next("renew", key)
        raise ApiError(2002, f"listenKey {key} not found")  # quoting it, as careless servers do


def test_keys_dead_on_arrival_are_replaced_once_at_once_then_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sixmm")
    rest = DeadKeysRest()
    holder: List[ListenKeyKeeper] = []
    h = Harness(rest, backoff=Backoff(initial=0.3, maximum=0.3, jitter=False), renew_interval=60)
    holder.append(h.keeper)
    # the stream refuses every key at once: the keeper is told so for each new one
    h.keeper._on_new_key = lambda key: (h.new_keys(key), holder[0].key_rejected("refused"))
    try:
        h.keeper.start()
        h.keeper.key_rejected("refused")
        wait_until(lambda: h.kinds().count("dead_on_arrival") >= 1, timeout=10)
        wait_until(lambda: len(rest.created_at) >= 6, timeout=10)
        stats = h.keeper.stats()
    finally:
        h.keeper.stop()
    gaps = [b - a for a, b in zip(rest.created_at, rest.created_at[1:])]
    assert all(g >= 0.25 for g in gaps[1:5]), gaps  # after the one immediate replacement
    assert stats["dead_on_arrival"] >= 3 and stats["paced_creations"] >= 3
    # reported after DEAD_KEYS_REPORT_AFTER keys, not for each one
    assert h.kinds().count("dead_on_arrival") <= 1 + stats["dead_on_arrival"] // 10
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(h.statuses.snapshot())
    assert not any(key in text for key in rest.ops("renew") if key)


def test_stop_bounds_the_close_of_the_key() -> None:
    class SlowClose(FakeRest):
        def close_listen_key(
            self, key: str, *, max_retries: Optional[int] = None, timeout: Optional[float] = None
        ) -> None:
            self._next("close", key)
            assert timeout is not None and timeout <= 1.0  # the stop's budget, not 10 s
            time.sleep(timeout)  # stands in for a server that never answers

    h = Harness(SlowClose())
    h.keeper.start()
    started = time.monotonic()
    h.keeper.stop(timeout=1.0)
    assert time.monotonic() - started < 1.5
