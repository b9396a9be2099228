"""One manager's settings: every keyword of :class:`~sixmm.StreamManager` that tunes
behaviour, validated once into one frozen value that the manager hands to what it builds
(sessions, connections, the supervisor, the listenKey keeper).

The defaults are :mod:`sixmm.config`'s; ``StreamManager``'s signature uses the same ones.
``manager.settings`` shows what a manager runs with; change one with ``attrs.evolve``.
"""

from __future__ import annotations

from typing import Optional

import attrs

from .config import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LISTEN_KEY_RENEW_INTERVAL,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_TOPICS_PER_CONNECTION,
    DEFAULT_PING_INTERVAL,
    DEFAULT_REPORT_PACING,
    DEFAULT_SLOW_CALLBACK,
    DEFAULT_STABLE_AFTER,
    DEFAULT_STALE_AFTER,
    Backoff,
    ReportPacing,
)
from .protocol.liveness import DEFAULT_LIVENESS, Liveness

__all__ = ["Settings"]


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:  # type: ignore[type-arg]
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute, value: int) -> None:  # type: ignore[type-arg]
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


_KINDS = {"backoff": Backoff, "liveness": Liveness, "report_pacing": ReportPacing}


def _kind(instance: object, attribute: attrs.Attribute, value: object) -> None:  # type: ignore[type-arg]
    kind = _KINDS[attribute.name]
    if not isinstance(value, kind):
        raise TypeError(f"{attribute.name} must be a sixmm.{kind.__name__}, got {value!r}")


@attrs.frozen(slots=True)
class Settings:
    """What one :class:`~sixmm.StreamManager` runs with (see its docstring for each).

    Thread-safety: immutable; share freely.
    """

    ping_interval: float = attrs.field(default=DEFAULT_PING_INTERVAL, validator=_positive)
    stale_after: float = attrs.field(default=DEFAULT_STALE_AFTER, validator=_positive)
    backoff: Backoff = attrs.field(factory=Backoff, validator=_kind)
    max_topics_per_connection: int = attrs.field(
        default=DEFAULT_MAX_TOPICS_PER_CONNECTION, validator=_at_least_one
    )
    listen_key_renew_interval: float = attrs.field(
        default=DEFAULT_LISTEN_KEY_RENEW_INTERVAL, validator=_positive
    )
    allow_insecure: bool = False
    ca_certs: Optional[str] = None
    slow_callback: float = attrs.field(default=DEFAULT_SLOW_CALLBACK, validator=_positive)
    ack_timeout: float = attrs.field(default=DEFAULT_ACK_TIMEOUT, validator=_positive)
    connect_timeout: float = attrs.field(default=DEFAULT_CONNECT_TIMEOUT, validator=_positive)
    stable_after: float = attrs.field(default=DEFAULT_STABLE_AFTER, validator=_positive)
    max_frame_bytes: int = attrs.field(default=DEFAULT_MAX_FRAME_BYTES, validator=_at_least_one)
    max_json_depth: int = attrs.field(default=DEFAULT_MAX_JSON_DEPTH, validator=_at_least_one)
    liveness: Liveness = attrs.field(default=DEFAULT_LIVENESS, validator=_kind)
    report_pacing: ReportPacing = attrs.field(default=DEFAULT_REPORT_PACING, validator=_kind)

    def __attrs_post_init__(self) -> None:
        if self.stale_after <= self.ping_interval:
            raise ValueError("stale_after must be longer than ping_interval")

    @property
    def default_limits(self) -> bool:
        """True when frames are checked against the default size and depth limits."""
        return (self.max_frame_bytes, self.max_json_depth) == (
            DEFAULT_MAX_FRAME_BYTES,
            DEFAULT_MAX_JSON_DEPTH,
        )
