"""Scrubbing credentials out of text: the one place every server-provided string passes.

A server, proxy or captive portal may quote our listenKey, token, api key or a signature back
to us in an auth refusal, a close reason, an error frame, an HTTP error page or a REST message.
Before such text is logged, raised, stored in ``stats()`` or recorded, it goes through
:func:`scrub`, which removes

- every secret value registered with :func:`remember` (the listenKeys we created, the token,
  the api key), wherever it appears, and
- anything that looks like a credential by its name: ``listenKey=…``, ``token=…``,
  ``signature=…``, ``"listenKey": "…"``, ``listenKey '…'``, ``listenKey <a long token>``,
  ``Bearer …``, ``X-API-KEY: …`` (a key the client never learned, such as one created by a
  request whose answer was lost, is quoted back just the same).

The registry is process-wide on purpose: a secret must be scrubbed from every text in the
process, whichever manager or client saw it. It holds at most :data:`MAX_SECRETS` values
(oldest forgotten first) and is replaced atomically (no lock: a tuple swap under the GIL).

Pure: no sockets, threads or clocks.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

__all__ = ["MAX_SECRETS", "REDACTED", "forget", "remember", "scrub"]

REDACTED = "<redacted>"
MAX_SECRETS = 256
_MIN_SECRET_LEN = 6  # shorter values would scrub ordinary words

_secrets: Tuple[str, ...] = ()  # longest first: a secret containing another goes whole
_recent: Tuple[str, ...] = ()  # the same values, oldest first: the one forgotten at the cap

_BY_NAME = re.compile(
    r"""(?ix)
    (?P<key>listen[_-]?key|token|access[_-]?token|signature|api[_-]?key|secret|x-api-key)
    (?:
      (?P<sep>\s*(?:=|:)\s*["']?|["']\s*:\s*["']|\s+["'])
      (?P<value>[^\s&"',;}<>]{4,})
    | (?P<gap>\s+)  # a bare value after the name counts only if it looks like a token
      (?P<bare>[A-Za-z0-9_.~+/=-]{16,})
    )
    """
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")


def remember(secret: Optional[str]) -> None:
    """Register a credential so that :func:`scrub` removes it from any text from now on."""
    global _secrets, _recent
    if not secret or len(secret) < _MIN_SECRET_LEN:
        return
    recent = _recent
    if secret in recent:
        return
    recent = (*recent[-(MAX_SECRETS - 1) :], secret)
    _recent = recent
    _secrets = tuple(sorted(recent, key=len, reverse=True))


def forget(secret: Optional[str]) -> None:
    """Stop scrubbing ``secret`` specifically (the name patterns still apply)."""
    global _secrets, _recent
    if secret:
        _recent = tuple(s for s in _recent if s != secret)
        _secrets = tuple(s for s in _secrets if s != secret)


def scrub(text: str) -> str:
    """``text`` with every known secret and every credential-looking value redacted."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BY_NAME.sub(_replace_named, text)
    return _BEARER.sub(r"\1 " + REDACTED, text)


def _replace_named(match: re.Match[str]) -> str:
    if match.group("bare") is not None:
        return f"{match.group('key')}{match.group('gap')}{REDACTED}"
    if match.group("value") == REDACTED:
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{REDACTED}"
