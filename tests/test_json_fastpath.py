"""sixmm._json's stdlib loads takes a shortcut for ``{...}`` text (the scanner directly):
it must give exactly what ``JSONDecoder.decode`` gives -- the same object, or the same
exception with the same message -- for any text (hypothesis, plus the edge cases)."""

from __future__ import annotations

from typing import Any, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm import _json


def outcome(fn: Any, text: Any) -> Tuple[Any, ...]:
    try:
        return ("ok", fn(text))
    except Exception as exc:  # compared as type + message
        return ("raised", type(exc), str(exc))


def reference(text: Any) -> Any:
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError("UTF-8 byte order mark (BOM) is not supported")
    return _json._DECODER.decode(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    value=json_values,
    before=st.sampled_from(["", " ", "\n", "x", "{", "}"]),
    after=st.sampled_from(["", " ", "\n", "x", "}", "{}", ",", "]"]),
    as_bytes=st.booleans(),
)
def test_the_shortcut_matches_decode(value: Any, before: str, after: str, as_bytes: bool) -> None:
    import json

    text = before + json.dumps(value, separators=(",", ":")) + after
    data: Any = text.encode() if as_bytes else text
    assert outcome(_json._stdlib_loads, data) == outcome(reference, data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,0123456789.eE-+ tnrufals\\', max_size=20))
def test_any_brace_text_matches_decode(body: str) -> None:
    for text in ("{" + body + "}", body, "{" + body, body + "}"):
        assert outcome(_json._stdlib_loads, text) == outcome(reference, text)


def test_edge_cases_match_decode() -> None:
    for text in (
        "{}",
        "{} ",
        " {}",
        "{}}",
        '{"a":NaN}',
        '{"a":1e400}',
        "{",
        "}",
        "",
        "\ufeff{}",
        '{"a":[1,2]}{"b":3}',
        '{"a":"}"}',
    ):
        assert outcome(_json._stdlib_loads, text) == outcome(reference, text), text
