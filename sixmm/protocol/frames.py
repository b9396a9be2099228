"""Frames on the wire (PROTOCOL.md §2, §3, §5, §8): request ids, encoders, and :func:`decode`.

Pure: no sockets, threads or clocks (the clock for :class:`RequestIds` is injectable).

:func:`decode` turns one inbound text frame into one :data:`~sixmm.protocol.events.Event`
and never raises. How each shape is read (rules marked ``[assumed]`` are our reading where
the exchange's documentation is silent; they all live in this module):

===============================================================  ==========================
frame                                                            event
===============================================================  ==========================
``{"topic", "event": "data", "ts", "data"}`` (the common case)   ``Push``
same with ``"event": "snapshot"`` or no ``event``                ``Push`` (``snapshot`` set
                                                                 for ``"snapshot"``)
``topic`` starting ``user.``, or no ``event`` and                ``PrivatePush``
``data.eventType``, or a bare ``{"eventType", ...}``
``{"id", "event": "subscribe"|"unsubscribe", "success", ...}``   ``Ack``
``{"event": "pong"}``, ``{"op": "pong"}``, text ``pong``         ``Pong``
``{"event": "auth", "success", "data": user id}``                ``AuthResult``
``{"event": "error", "id", ...}``                                failed ``Ack``
``{"event": "error"}`` without ``id``                            ``Malformed`` (server's
                                                                 message as the reason)
anything else                                                    ``Malformed``
===============================================================  ==========================

Field rules: ids are compared as strings (a numeric ``id`` becomes its ``str``); a failure
reason comes from ``message``, ``msg``, ``error`` or ``reason``; an ack's topics come from
``data`` (a list or one string), else ``args``, else ``topic`` -- empty when none are named
(then the ack speaks for every topic of its request); ``ts`` is an int or ``None`` (a digit
string is converted, anything else becomes ``None`` rather than failing the frame).

Server text (error messages, refusal reasons, the frame quoted in a ``Malformed``) passes
through :func:`sixmm.protocol.redact.scrub` here, before anyone can log, raise or store it.

Limits: frames over ``max_bytes`` (UTF-8 bytes) or nested deeper than ``max_depth`` are
``Malformed``; so are invalid UTF-8, ``NaN``/``Infinity`` tokens and non-string topics.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from sixmm import _json
from sixmm.config import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_JSON_DEPTH
from sixmm.protocol._speedups import load as load_extension
from sixmm.protocol.events import Ack, AuthResult, Event, Malformed, Pong, PrivatePush, Push
from sixmm.protocol.redact import scrub

__all__ = [
    "MALFORMED_TEXT_CHARS",
    "RequestIds",
    "acked_topics",
    "decode",
    "encode_ping",
    "encode_subscribe",
    "encode_unsubscribe",
    "unparsed",
]

#: ``Malformed.text`` keeps at most this many characters of the frame (for logs).
MALFORMED_TEXT_CHARS = 200

# Looked up once; tests swap it to exercise the stdlib backend.
_loads = _json.loads

_wirefast = load_extension("_wirefast")
# decode's common case in C (see _wirefast.c): a public push, or the parsed object for the
# classification below, or None and decode runs in Python from the start. The nesting
# pre-count in one C pass for the rest (two bytes.count calls cost ~4,000 instructions on a
# 200-byte frame). None: Python. Tests swap them to exercise both.
_c_decode = None if _wirefast is None else _wirefast.decode_push
_opens = None if _wirefast is None else _wirefast.opens
if _wirefast is not None:
    # Push.__init__ only stores its arguments: C fills the slots (in the __init__'s order)
    _wirefast.bind("push", Push, ("topic", "ts", "data", "snapshot", "raw"))


class RequestIds:
    """Unique request ids: decimal strings ``start_ms * 1000 + n`` for ``n = 1, 2, ...``.

    ``start_ms`` defaults to the wall clock at construction (pass ``now_ms`` in tests). Ids
    look like the documented examples (digits only) and stay below 2**53, so they survive a
    server that echoes them back as JSON numbers. They are unique and increasing within one
    instance -- keep one per manager so ids stay unique across reconnects; an instance made
    later cannot clash unless an earlier one issued over 1000 ids per millisecond of its age.

    Thread-safety: ``next()`` may be called from any thread (one atomic ``itertools.count``
    step under the GIL).
    """

    __slots__ = ("_base", "_counter")

    def __init__(self, now_ms: Optional[int] = None) -> None:
        start = int(time.time() * 1000) if now_ms is None else int(now_ms)
        if start < 0:
            raise ValueError("now_ms must be >= 0")
        self._base = start * 1000
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A new id, never returned before by this instance."""
        return str(self._base + next(self._counter))

    def __iter__(self) -> Iterator[str]:
        while True:
            yield self.next()

    def __repr__(self) -> str:
        return f"RequestIds(base={self._base})"


# --------------------------------------------------------------------------- encoders


def _encode_op(req_id: str, op: str, topics: Iterable[str]) -> str:
    if not isinstance(req_id, str) or not req_id:
        raise ValueError(f"request id must be a non-empty str, got {req_id!r}")
    args: List[str] = [topics] if isinstance(topics, str) else list(topics)
    for topic in args:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topics must be non-empty strings, got {topic!r}")
    return _json.dumps({"id": req_id, "op": op, "args": args})


def encode_subscribe(req_id: str, topics: Iterable[str]) -> str:
    """``{"id":ID,"op":"subscribe","args":[...]}`` (a lone ``str`` is one topic)."""
    return _encode_op(req_id, "subscribe", topics)


def encode_unsubscribe(req_id: str, topics: Iterable[str]) -> str:
    """``{"id":ID,"op":"unsubscribe","args":[...]}`` (a lone ``str`` is one topic)."""
    return _encode_op(req_id, "unsubscribe", topics)


def encode_ping(req_id: str) -> str:
    """``{"id":ID,"op":"ping","args":[]}``."""
    return _encode_op(req_id, "ping", ())


def acked_topics(ack: Ack, outstanding: Iterable[str]) -> List[str]:
    """The topics ``ack`` answers, out of its request's ``outstanding`` (unanswered) topics.

    [assumed] (PROTOCOL.md §8) An ack's ``data`` lists the topics it speaks for; one request may
    get a success ack for some topics and a failure ack (same id) for the others. An ack that
    names no topics speaks for every outstanding topic of its request.
    """
    return list(ack.topics) if ack.topics else sorted(outstanding)


# --------------------------------------------------------------------------- decode

#: ``Malformed`` reasons of frames whose content could not be read at all (so nobody knows
#: which topic they carried), as opposed to well-formed JSON of the wrong shape.
_UNPARSED_REASONS = (
    "frame too large",
    "JSON nested",
    "invalid UTF-8",
    "invalid JSON",
    "decoder error",
)


def unparsed(event: Malformed) -> bool:
    """True when ``event`` is a frame that failed to parse (not JSON, too large, too deep):
    it may have been any push, e.g. a depth update a book now lacks."""
    return event.reason.startswith(_UNPARSED_REASONS)


def decode(
    text: Union[str, bytes],
    *,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> Event:
    """Decode one inbound frame (``str`` or UTF-8 ``bytes``) into an event. Never raises."""
    try:
        if _c_decode is not None and type(text) is bytes:
            got = _c_decode(text, _loads, max_bytes, max_depth, Push)
            if got is not None:
                if got.__class__ is Push:
                    return got
                return _event(got[0], text)
        if type(text) is str:
            size = len(text)
            if size * 4 > max_bytes and (
                size > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes
            ):
                return Malformed(f"frame too large (over {max_bytes} bytes)", _clip(text))
            opens = text.count("{") + text.count("[")
        else:
            if type(text) is not bytes:
                if not isinstance(text, (bytes, bytearray, memoryview)):
                    return Malformed(f"frame is {type(text).__name__}, not text", "")
                text = bytes(text)
            if len(text) > max_bytes:
                return Malformed(f"frame too large (over {max_bytes} bytes)", _clip(text))
            opens = -1 if _opens is None else _opens(text)
            if opens < 0:
                opens = text.count(b"{") + text.count(b"[")
        try:
            obj = _loads(text)
        except (ValueError, RecursionError) as exc:
            return _unparsable(text, exc)
        if opens > max_depth and _too_deep(obj, max_depth):
            return Malformed(f"JSON nested deeper than {max_depth} levels", _clip(text))
        return _event(obj, text)
    except Exception as exc:  # a bug here must not take the reader down
        return Malformed(f"decoder error: {type(exc).__name__}: {exc}", _safe_clip(text))


def _event(obj: Any, text: Union[str, bytes]) -> Event:
    """The event of a parsed frame (within the size and depth limits)."""
    if type(obj) is not dict:
        if obj == "pong":  # [assumed] a JSON string "pong"
            return Pong(None, {})
        return Malformed(f"frame is a JSON {type(obj).__name__}, not an object", _clip(text))
    # The common case first: a public push (decode_push in _wirefast.c does the same in C).
    topic = obj.get("topic")
    if obj.get("event") == "data" and type(topic) is str and not topic.startswith("user."):
        data = obj.get("data")
        if data is None:
            return Malformed("push without data", _clip(text))
        ts = obj.get("ts")
        if type(ts) is not int:
            ts = _opt_int(ts)
        return Push(topic, ts, data, False, obj)
    return _classify(obj, topic, text)


def _unparsable(text: Union[str, bytes], exc: BaseException) -> Event:
    stripped = text.strip()
    if stripped == "pong" or stripped == b"pong":  # [assumed] plain-text pong
        return Pong(None, {})
    if isinstance(exc, RecursionError):
        return Malformed("JSON nested too deeply", _clip(text))
    if isinstance(exc, UnicodeDecodeError):
        return Malformed("invalid UTF-8", _clip(text))
    reason = str(exc)
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return Malformed(f"invalid JSON: {reason}", _clip(text))


def _classify(obj: Dict[str, Any], topic: Any, text: Union[str, bytes]) -> Event:
    """Everything but the common public push."""
    event = obj.get("event")
    if event is None or event == "data" or event == "snapshot":
        if topic is not None:
            if type(topic) is not str:
                return Malformed(f"topic is a {type(topic).__name__}, not a string", _clip(text))
            data = obj.get("data")
            if data is None:
                return Malformed("push without data", _clip(text))
            ts = _opt_int(obj.get("ts"))
            if topic.startswith("user.") or (
                event is None and type(data) is dict and "eventType" in data
            ):
                return PrivatePush(topic, ts, _event_type(data), data, obj)
            return Push(topic, ts, data, event == "snapshot", obj)
        if event is not None:
            return Malformed(f"push ({event}) without topic", _clip(text))
        return _classify_no_event(obj, text)
    if event == "subscribe" or event == "unsubscribe":
        return _ack(obj, event, text)
    if event == "pong":
        return _pong(obj)
    if event == "auth":
        success = _success(obj)
        if success is None:
            return Malformed("auth ack with unusable 'success'", _clip(text))
        return AuthResult(success, _user_id(obj.get("data")), _message(obj), obj)
    if event == "error":
        # [assumed] An error frame carrying an id answers that request: read it as a failed
        # ack (op from its "op" field when that names one, else "subscribe"; the caller's
        # table of pending ids knows the real op). Without an id it answers nothing we can
        # match: Malformed, with the server's message as the reason.
        if obj.get("id") is None:
            message = _message(obj) or "no message"
            return Malformed(f"server error: {_shorten(message)}", _clip(text))
        op = obj.get("op")
        return _ack(obj, op if op == "unsubscribe" else "subscribe", text, success=False)
    if type(event) is not str:
        return Malformed(f"event is a {type(event).__name__}, not a string", _clip(text))
    if event == "ping":
        # [assumed] A server-initiated application ping: proof of life like a pong (the
        # transport already answers websocket pings); nothing else to do with it.
        return Pong(_opt_id(obj.get("id")), obj)
    # [assumed] Other unknown event names are reported, not guessed.
    return Malformed(f"unknown event {event[:40]!r}", _clip(text))


def _classify_no_event(obj: Dict[str, Any], text: Union[str, bytes]) -> Event:
    """A frame with neither ``topic`` nor ``event``."""
    data = obj.get("data")
    if type(data) is dict and "eventType" in data:
        # [assumed] a private push whose envelope lost its topic.
        return PrivatePush(None, _opt_int(obj.get("ts")), _event_type(data), data, obj)
    if "eventType" in obj:
        # [assumed] a bare private event without an envelope.
        ts = _opt_int(obj.get("ts"))
        if ts is None:
            ts = _opt_int(obj.get("eventTime"))
        return PrivatePush(None, ts, _event_type(obj), obj, obj)
    op = obj.get("op")
    if op == "pong" or (op == "ping" and "success" in obj) or "pong" in obj:
        # [assumed] {"op": "pong"}, {"id", "op": "ping", "success": true}, {"pong": ts}.
        return _pong(obj)
    if "id" in obj and "success" in obj:
        # [assumed] an ack without "event": its op from "op" when it names one.
        return _ack(obj, op if op == "unsubscribe" else "subscribe", text)
    return Malformed("unrecognised frame (no topic, no event)", _clip(text))


def _ack(
    obj: Dict[str, Any], op: str, text: Union[str, bytes], success: Optional[bool] = None
) -> Event:
    if success is None:
        success = _success(obj)
        if success is None:
            return Malformed(f"{op} ack with unusable 'success'", _clip(text))
    try:
        ack_id = _opt_id(obj.get("id"))
    except ValueError:
        return Malformed(f"{op} ack id is a {type(obj.get('id')).__name__}", _clip(text))
    return Ack(ack_id, op, success, _ack_topics(obj), _message(obj) if not success else None, obj)


def _pong(obj: Dict[str, Any]) -> Pong:
    try:
        return Pong(_opt_id(obj.get("id")), obj)
    except ValueError:  # an unusable id cannot match a ping; the pong still proves life
        return Pong(None, obj)


def _success(obj: Dict[str, Any]) -> Optional[bool]:
    """``success`` as a bool; None when it is present but unusable."""
    value = obj.get("success")
    if value is True or value is False:
        return value
    if value is None:
        # [assumed] no "success": a "code" decides (0 is success); with neither, the frame
        # succeeded unless it is an error event.
        code = obj.get("code")
        if code is not None:
            return bool(code == 0 or code == "0")
        return bool(obj.get("event") != "error")
    if value == "true" or value == 1:
        return True
    if value == "false" or value == 0:
        return False
    return None


def _message(obj: Dict[str, Any]) -> Optional[str]:
    text = _raw_message(obj)
    return None if text is None else scrub(text)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw_message(obj: Dict[str, Any]) -> Optional[str]:
    for key in ("message", "msg", "error", "reason"):
        value = obj.get(key)
        if value is None:
            continue
        if type(value) is dict:
            inner = value.get("message") or value.get("msg")
            if isinstance(inner, str):
                return inner
        return value if type(value) is str else _json_or_str(value)
    return None


def _json_or_str(value: Any) -> str:
    try:
        return _json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def _ack_topics(obj: Dict[str, Any]) -> Tuple[str, ...]:
    value = obj.get("data")
    if value is None:
        value = obj.get("args")
        if value is None:
            value = obj.get("topic")
    if type(value) is str:
        return (value,)
    if type(value) is list:
        return tuple(x for x in value if type(x) is str)
    if type(value) is dict:  # [assumed] {"data": {"topics": [...]}} / {"topic": "..."}
        inner = value.get("topics", value.get("topic"))
        if type(inner) is str:
            return (inner,)
        if type(inner) is list:
            return tuple(x for x in inner if type(x) is str)
    return ()


def _opt_id(value: Any) -> Optional[str]:
    """A request id as a string; None when absent; ValueError for an unusable type."""
    if value is None or type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value) and value.is_integer():
        return str(int(value))
    raise ValueError("unusable id")


def _opt_int(value: Any) -> Optional[int]:
    """An int (from int, integral float or digit string), else None."""
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]
    if t is str:
        if 0 < len(value) <= 20 and value.isdigit() and value.isascii():
            return int(value)
        return None
    if t is float and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _user_id(value: Any) -> Optional[str]:
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    if type(value) is dict:  # [assumed] {"data": {"userId": ...}}
        for key in ("userId", "uid", "id"):
            inner = value.get(key)
            if type(inner) is str or type(inner) is int:
                return str(inner)
    return None


def _event_type(data: Dict[str, Any]) -> Optional[str]:
    value = data.get("eventType")
    return value if type(value) is str else None


def _too_deep(obj: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (iterative: no recursion)."""
    t = type(obj)
    if t is not dict and t is not list:
        return False
    if limit < 1:
        return True
    stack: List[Tuple[Any, int]] = [(obj, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        children = node.values() if type(node) is dict else node
        deeper = depth + 1
        for child in children:
            ct = type(child)
            if ct is list or ct is dict:
                if deeper > limit:
                    return True
                push((child, deeper))
    return False


def _clip(text: Union[str, bytes]) -> str:
    """The start of a frame for ``Malformed.text``, credentials scrubbed (the cut is made
    after scrubbing, so a secret straddling it cannot leak in part)."""
    if not isinstance(text, str):
        text = bytes(text[: MALFORMED_TEXT_CHARS * 8]).decode("utf-8", "replace")
    else:
        text = text[: MALFORMED_TEXT_CHARS * 2]
    text = scrub(text)
    if len(text) <= MALFORMED_TEXT_CHARS:
        return text
    return text[:MALFORMED_TEXT_CHARS] + "..."


def _safe_clip(text: Any) -> str:
    try:
        return _clip(text)
    except Exception:
        return ""
