"""Server text on the public session (error frames, refused subscriptions, garbage quoting a
credential) is scrubbed before it reaches logs, exceptions, on_error or stats()."""

from __future__ import annotations

import json
import logging
from typing import Iterator

import pytest

from sixmm import ProtocolError, StreamManager, SubscriptionError
from sixmm.protocol import redact
from sixmm.protocol.events import Ack, Malformed
from sixmm.protocol.frames import decode
from sixmm.sandbox import Sandbox

from .helpers import Recorder, wait_until

SECRET = "Lk9dQ2vX7pR4mZ8sT1wY"  # a listenKey the client knows (remembered)
NAMED = "Zq8Vn3Lm6Kj2Hg5Fd"  # unknown to the client, but quoted as token=...


@pytest.fixture
def secret() -> Iterator[str]:
    redact.remember(SECRET)
    yield SECRET
    redact.forget(SECRET)


def test_decode_scrubs_error_frames_and_refusals(secret: str) -> None:
    frame = decode(json.dumps({"event": "error", "message": f"bad listenKey {secret}"}))
    assert isinstance(frame, Malformed)
    assert secret not in frame.reason and secret not in frame.text
    refusal = decode(
        json.dumps({"id": "1", "event": "error", "msg": f"denied token={NAMED} for {secret}"})
    )
    assert isinstance(refusal, Ack) and not refusal.success
    assert refusal.message is not None
    assert secret not in refusal.message and NAMED not in refusal.message
    garbage = decode("{oops " + secret)
    assert isinstance(garbage, Malformed) and secret not in garbage.text


def test_public_session_never_shows_server_quoted_secrets(
    sandbox: Sandbox, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sixmm")
    errors = Recorder()
    with StreamManager(sandbox.ws_url, on_error=errors) as streams:
        assert streams.trades("BTCUSDT", lambda t: None).wait_ready(10)
        sandbox.reject_next_subscribe(
            "market.trade.ETHUSDT", f"listenKey {secret} not allowed, token={NAMED}"
        )
        refused = streams.trades("ETHUSDT", lambda t: None)
        with pytest.raises(SubscriptionError) as info:
            refused.wait_ready(10)
        for text in (
            json.dumps({"event": "error", "message": f"session {secret} token={NAMED}"}),
            "{not json " + secret,
            json.dumps({"topic": f"market.x.{secret}", "event": "data", "data": {}}),
            json.dumps({"event": f"weird-{secret}", "token": NAMED}),
        ):
            sandbox.send_malformed(text)
        wait_until(lambda: len(errors) >= 5)
        stats = json.dumps(streams.stats(), default=str)
    texts = [str(info.value), info.value.reason, stats]
    texts += [str(e) for e in errors.snapshot()] + [repr(e) for e in errors.snapshot()]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert any(isinstance(e, SubscriptionError) for e in errors.snapshot())
    assert sum(isinstance(e, ProtocolError) for e in errors.snapshot()) >= 4
    assert "not allowed" in info.value.reason  # the message is kept, only the secret goes
    leaks = [t for t in texts if secret in t or NAMED in t]
    assert leaks == []
