"""Pure tests of REST request signing (PROTOCOL.md §6.1): no sockets, fixed clocks."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import requests
from hypothesis import given
from hypothesis import strategies as st

from sixmm.rest.auth import HmacAuth, TokenAuth, sign, signing_payload
from sixmm.rest.client import _encode_body, _encode_query

SECRET = "my-very-secret-api-secret"
KEY = "abcdef0123456789"
TS = 1772710377808
BASE = "https://api.6mm.com"


def expected(payload: str) -> str:
    return hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()


def prepare(
    method: str, url: str, body: Optional[bytes] = None, ts: int = TS
) -> requests.PreparedRequest:
    auth = HmacAuth(KEY, SECRET, lambda: ts)
    return requests.Request(method, url, data=body, auth=auth).prepare()


def split_signature(url: str) -> Tuple[str, str]:
    query = urlsplit(url).query
    unsigned, _, signature = query.rpartition("&signature=")
    return unsigned, signature


def test_documented_get_example() -> None:
    r = prepare("GET", BASE + "/v1/private/order/current?symbol=BTCUSDT")
    assert r.url == (
        BASE
        + "/v1/private/order/current?symbol=BTCUSDT&timestamp=1772710377808&signature="
        + expected("symbol=BTCUSDT&timestamp=1772710377808")
    )
    assert r.headers["X-API-KEY"] == KEY


def test_documented_post_example() -> None:
    body = '{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","price":"85000.1","quantity":"0.01"}'
    r = prepare("POST", BASE + "/v1/private/order/place", body.encode())
    unsigned, signature = split_signature(str(r.url))
    assert unsigned == "timestamp=1772710377808"
    assert signature == expected("timestamp=1772710377808" + body)
    assert r.body == body.encode()  # the body sent is exactly the one signed


def test_signature_is_lowercase_hex_sha256() -> None:
    r = prepare("GET", BASE + "/v1/time")
    _, signature = split_signature(str(r.url))
    assert len(signature) == 64 and signature == signature.lower()
    int(signature, 16)


def test_str_and_bytes_bodies_sign_the_same() -> None:
    assert signing_payload("a=1", '{"x":"é"}') == signing_payload("a=1", '{"x":"é"}'.encode())
    assert sign(SECRET, b"abc") == expected("abc")


def test_wrong_secret_gives_another_signature() -> None:
    good = prepare("GET", BASE + "/p?a=1")
    bad = requests.Request(
        "GET", BASE + "/p?a=1", auth=HmacAuth(KEY, SECRET + "x", lambda: TS)
    ).prepare()
    assert split_signature(str(good.url))[1] != split_signature(str(bad.url))[1]


def test_timestamps_strictly_increase_within_a_millisecond() -> None:
    auth = HmacAuth(KEY, SECRET, lambda: TS)
    stamps = [auth.next_timestamp() for _ in range(5)]
    assert stamps == [TS, TS + 1, TS + 2, TS + 3, TS + 4]


def test_a_resynced_clock_jumping_back_is_followed() -> None:
    now = [TS]
    auth = HmacAuth(KEY, SECRET, lambda: now[0])
    assert auth.next_timestamp() == TS
    now[0] = TS - 20_000  # offset re-synced: 20 s earlier
    assert auth.next_timestamp() == TS - 20_000


def test_reprs_hide_secret_and_token() -> None:
    auth = HmacAuth(KEY, SECRET, lambda: TS)
    text = repr(auth)
    assert SECRET not in text and KEY not in text and "HmacAuth" in text
    tok = TokenAuth("eyJhbGciOiJIUzI1NiJ9.payload.sig")
    assert "eyJ" not in repr(tok) and "payload" not in repr(tok)


def test_token_auth_sets_bearer_and_leaves_query() -> None:
    r = requests.Request("GET", BASE + "/v1/x?a=1", auth=TokenAuth("tok123")).prepare()
    assert r.headers["Authorization"] == "Bearer tok123"
    assert r.url == BASE + "/v1/x?a=1"


def test_query_encoding_keeps_order_and_rejects_reserved_names() -> None:
    assert _encode_query({"symbol": "BTCUSDT", "limit": 5, "flag": True}) == (
        "symbol=BTCUSDT&limit=5&flag=true"
    )
    assert _encode_query([("b", "2"), ("a", "1")]) == "b=2&a=1"
    for bad in ({"timestamp": 1}, {"signature": "x"}):
        try:
            _encode_query(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("reserved query name accepted")


def test_body_is_compact_json() -> None:
    assert _encode_body({"listenKey": "k", "n": [1, 2]}) == b'{"listenKey":"k","n":[1,2]}'
    assert _encode_body('{"a": 1}') == b'{"a": 1}'  # a str body goes out untouched
    assert _encode_body(None) is None


_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)


@given(
    params=st.lists(
        st.tuples(st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,8}", fullmatch=True), _text),
        max_size=5,
    ).filter(lambda ps: all(k not in ("timestamp", "signature") for k, _ in ps)),
    body=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), _text, max_size=4)),
    ts=st.integers(min_value=1, max_value=10**13),
)
def test_signature_covers_exactly_what_is_sent(
    params: List[Tuple[str, str]], body: Optional[Dict[str, str]], ts: int
) -> None:
    query = _encode_query(params)
    raw = _encode_body(body)
    url = BASE + "/v1/private/x" + ("?" + query if query else "")
    r = prepare("POST" if raw is not None else "GET", url, raw, ts)
    unsigned, signature = split_signature(str(r.url))
    sent_body = r.body if r.body is not None else b""
    assert isinstance(sent_body, bytes)
    assert (
        signature
        == hmac.new(SECRET.encode(), unsigned.encode() + sent_body, hashlib.sha256).hexdigest()
    )
    # The sent query still decodes to the caller's params, in order, then timestamp.
    decoded = parse_qsl(unsigned, keep_blank_values=True)
    assert decoded == [*params, ("timestamp", str(ts))]
    if body is not None:
        assert json.loads(sent_body) == body
