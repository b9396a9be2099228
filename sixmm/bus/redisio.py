"""The one place that builds a redis-py client for the bus (imports ``redis`` lazily)."""

from __future__ import annotations

from typing import Any, Tuple, Type
from urllib.parse import urlsplit, urlunsplit

from ..protocol import redact

__all__ = ["connect", "display_url", "redis_errors"]

_HINT = "the Redis bus needs the bus extra: pip install 'sixmm[bus]'"


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(_HINT) from None
    return redis


def display_url(url: str) -> str:
    """``url`` without its password (safe to log); the password is remembered as a secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        scheme = parts.scheme or "no scheme"
        raise ValueError(f"not a Redis URL (redis://HOST:PORT/DB): {scheme}://...")
    if parts.password:
        redact.remember(parts.password)
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def connect(url: str, timeout: float = 5.0) -> Any:
    """A sync ``redis.Redis`` for ``url``: every call bounded by ``timeout`` seconds, one
    immediate retry on a dropped connection (the caller owns backoff and reconnect policy)."""
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    display_url(url)  # validates, remembers the password
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 3.0),
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


def redis_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions that mean "Redis trouble" (connection, timeout, server error)."""
    redis = _redis()
    return (redis.exceptions.RedisError, OSError)
