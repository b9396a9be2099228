"""One frozen settings value per manager: the keywords validated once, the defaults in one
place (sixmm.config) and used by every signature that takes them."""

from __future__ import annotations

import inspect
from typing import Any, Dict

import attrs
import pytest

from sixmm import Backoff, Liveness, Settings, StreamManager
from sixmm.dispatch.invoker import Invoker
from sixmm.protocol.public_engine import PublicEngine
from sixmm.protocol.user_engine import UserEngine
from sixmm.supervisor import Heartbeat
from sixmm.transport import Transport

URL = "ws://127.0.0.1:1/ws"


def test_the_manager_signature_defaults_are_the_settings_defaults() -> None:
    params = inspect.signature(StreamManager.__init__).parameters
    defaults = Settings()
    for field in attrs.fields(Settings):
        if field.name not in params:
            assert field.name == "report_pacing"  # not a manager keyword
            continue
        given = params[field.name].default
        if field.name in ("backoff", "liveness"):  # None: the settings' default object
            assert given is None and getattr(defaults, field.name) is not None
        else:
            assert given == getattr(defaults, field.name), field.name


@pytest.mark.parametrize(
    ("signature", "name", "setting"),
    [
        (Heartbeat.__init__, "ping_interval", "ping_interval"),
        (Invoker.__init__, "slow_callback", "slow_callback"),
        (PublicEngine.__init__, "ack_timeout", "ack_timeout"),
        (UserEngine.__init__, "auth_timeout", "ack_timeout"),
        (Transport.__init__, "timeout", "connect_timeout"),
        (Transport.__init__, "max_frame_bytes", "max_frame_bytes"),
    ],
)
def test_other_signatures_use_the_same_defaults(signature: Any, name: str, setting: str) -> None:
    assert inspect.signature(signature).parameters[name].default == getattr(Settings(), setting)


def test_the_manager_keeps_its_keywords_as_one_frozen_value() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    streams = StreamManager(URL, ping_interval=1.0, stale_after=3.0, backoff=backoff)
    assert streams.settings.backoff is backoff
    assert (streams.settings.ping_interval, streams.settings.stale_after) == (1.0, 3.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        streams.settings.ping_interval = 2.0  # type: ignore[misc]
    streams.trades("BTCUSDT", print)
    # what the manager builds gets the same value, not copies of its fields
    conns = streams._connections()
    assert conns and all(c.settings is streams.settings for c in conns)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"ping_interval": 0}, ValueError, "ping_interval must be > 0"),
        ({"stale_after": float("nan")}, ValueError, "stale_after must be > 0"),
        ({"ping_interval": 5.0, "stale_after": 5.0}, ValueError, "longer than ping_interval"),
        ({"max_topics_per_connection": 0}, ValueError, "max_topics_per_connection must be >= 1"),
        ({"ack_timeout": -1.0}, ValueError, "ack_timeout must be > 0"),
        ({"connect_timeout": 0.0}, ValueError, "connect_timeout must be > 0"),
        ({"max_frame_bytes": 0}, ValueError, "max_frame_bytes must be >= 1"),
        ({"liveness": {"depth": 5}}, TypeError, "liveness must be a sixmm.Liveness"),
        ({"backoff": 3}, TypeError, "backoff must be a sixmm.Backoff"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(
    kwargs: Dict[str, Any], error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        StreamManager(URL, **kwargs)


def test_settings_change_by_evolve() -> None:
    s = attrs.evolve(Settings(), liveness=Liveness(depth=5.0))
    assert s.liveness.depth == 5.0 and s.ping_interval == Settings().ping_interval
