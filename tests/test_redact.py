"""The scrubber (sixmm.protocol.redact): every way a credential comes back to us is removed."""

from __future__ import annotations

import secrets
from typing import Iterator

import pytest

from sixmm.protocol import redact
from sixmm.protocol.redact import REDACTED, remember, scrub

UNKNOWN_KEY = "40a6966758c1375769c175247bf7753fcf55091459a0694bcccb5c7b8b7a6e17"


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    saved = (redact._secrets, getattr(redact, "_recent", ()))
    yield
    redact._secrets, redact._recent = saved


@pytest.mark.parametrize(
    "text",
    [
        # a key the client never learned (its create answer was lost), quoted back by name
        f"listenKey '{UNKNOWN_KEY}' not found or expired",
        f'listenKey "{UNKNOWN_KEY}" not found or expired',
        f"listenKey {UNKNOWN_KEY} expired",
        f"listenKey={UNKNOWN_KEY}",
        f'{{"listenKey": "{UNKNOWN_KEY}"}}',
        f"listen_key: {UNKNOWN_KEY}",
        f"Authorization: Bearer {UNKNOWN_KEY}",
        f"token '{UNKNOWN_KEY}' refused",
    ],
)
def test_a_credential_quoted_by_name_is_scrubbed_without_being_known(text: str) -> None:
    out = scrub(text)
    assert UNKNOWN_KEY not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "listenKey not found or expired",
        "the token expired",
        "listenKey expired, create a new one",
        "api key rejected",
    ],
)
def test_ordinary_words_after_a_credential_name_are_kept(text: str) -> None:
    assert scrub(text) == text


def test_scrubbing_twice_changes_nothing_more() -> None:
    once = scrub(f"listenKey '{UNKNOWN_KEY}' and listenKey {UNKNOWN_KEY}")
    assert scrub(once) == once


def test_a_new_secret_outlives_the_older_ones_whatever_its_length() -> None:
    # the registry is full of shorter secrets (a long test run, a long-lived process): a new,
    # longer listenKey must not be the next one forgotten
    redact._secrets = redact._recent = ()
    older = [secrets.token_hex(10) for _ in range(redact.MAX_SECRETS)]
    for value in older:
        remember(value)
    key = secrets.token_hex(32)
    remember(key)
    for _ in range(10):
        remember(secrets.token_hex(10))
    assert scrub(f"listen key {key}!") == f"listen key {REDACTED}!"
    assert len(redact._secrets) == redact.MAX_SECRETS
    assert all(value not in redact._secrets for value in older[:11])  # the oldest went
    assert older[11] in redact._secrets
