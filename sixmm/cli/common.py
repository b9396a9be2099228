"""What every subcommand shares: one-line errors, the source options, and :class:`Watch`, which
turns ``on_state`` / ``on_error`` into a verdict (connected in time? a refusal?) and a status
line."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Set, Tuple

from ..config import DEFAULT_WS_URL
from ..errors import SubscriptionError
from ..protocol.redact import scrub
from ..protocol.topics import CHANNELS, parse_topic
from ..states import StateEvent, StreamState

__all__ = [
    "CliError",
    "OneLineParser",
    "PacedWarnings",
    "Watch",
    "add_command",
    "add_source_args",
    "manager_kwargs",
    "normalize_topic",
    "one_line",
    "positive_float",
    "positive_int",
    "source",
]

SANDBOX_HINT = "this command needs the sandbox extra: pip install -e '.[sandbox]'"
DEFAULT_CONNECT_WITHIN = 10.0


class CliError(Exception):
    """Ends the command with ``sixmm: <message>`` on stderr and exit ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


_RETRY = re.compile(r";? retry in [0-9.]+ ?s$")
_DOUBLED = re.compile(r"([^:\n]{1,80}: )\1+")


def one_line(error: Any) -> str:
    """An error as one scrubbed line, without doubled prefixes (``x: x: why`` -> ``x: why``)."""
    if isinstance(error, BaseException):
        text = str(error) or type(error).__name__
        if isinstance(error, SubscriptionError):
            text = f"subscription to {error.topic!r} refused: {error.reason}"
        elif type(error) not in (ValueError, CliError):  # sixmm's own errors keep their name
            text = f"{type(error).__name__}: {text}"
    else:
        text = str(error)
    text = " ".join(scrub(text).split())
    previous = None
    while previous != text:
        previous, text = text, _DOUBLED.sub(r"\1", text)
    return text.replace("allow_insecure=True", "--allow-insecure")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_command(subparsers: Any, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (help shows every option's default)."""
    kwargs.setdefault("formatter_class", _Formatter)
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=kwargs.pop("description", help), **kwargs
    )
    return parser


def to_json(value: Any) -> Any:
    """A callback's item as JSON-ready data: a model's ``raw`` payload (lists item by item)."""
    raw = getattr(value, "raw", None)
    if raw is not None:
        return raw
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_source_args(parser: argparse.ArgumentParser, seconds: bool = True) -> None:
    """``--url`` / ``--sandbox``, ``--allow-insecure``, ``--connect-within`` (and ``--seconds``)."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--url", default=None, help=f"WebSocket URL (default: {DEFAULT_WS_URL})")
    src.add_argument("--sandbox", action="store_true", help="use an in-process sandbox exchange")
    parser.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow plain ws:// to a non-loopback host (no TLS: only on a network you trust)",
    )
    parser.add_argument(
        "--connect-within",
        type=positive_float,
        default=DEFAULT_CONNECT_WITHIN,
        metavar="SECONDS",
        help="exit 1 if not connected and subscribed within this many seconds",
    )
    if seconds:
        parser.add_argument(
            "--seconds",
            type=positive_float,
            help="stop after this many seconds (default: run until Ctrl-C)",
        )


def manager_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The StreamManager keywords the source options ask for."""
    return {"allow_insecure": bool(getattr(args, "allow_insecure", False))}


@contextlib.contextmanager
def source(args: argparse.Namespace) -> Iterator[str]:
    """Yield the URL to use, running an in-process sandbox for ``--sandbox``."""
    if not getattr(args, "sandbox", False):
        yield args.url or DEFAULT_WS_URL
        return
    try:
        from ..sandbox import Sandbox
    except ImportError:
        raise CliError(SANDBOX_HINT, 2) from None
    with Sandbox(port=0) as sb:
        yield sb.ws_url


def normalize_topic(topic: str) -> str:
    """The CLI's one symbol rule: symbols are upper-cased (as the library's builders do), so
    ``market.trade.btcusdt`` means ``market.trade.BTCUSDT``; intervals keep their case.
    Known channels are checked here; raises :class:`CliError` (status 2) on a bad topic."""
    parts = topic.split(".")
    if len(parts) >= 3 and parts[0] == "market":
        parts[2] = parts[2].upper()
    name = ".".join(parts)
    if parts[0] == "market" and len(parts) >= 2 and parts[1] in CHANNELS:
        try:
            parse_topic(name)
        except ValueError as exc:
            raise CliError(one_line(exc), 2) from None
    return name


class Watch:
    """Collects ``on_state`` and ``on_error`` and answers: should the command give up, and what
    does the status line say?

    - :meth:`verdict` is a reason to exit 1: a subscription the command asked for was refused,
      or no connection reached ``CONNECTED`` within ``connect_within`` seconds.
    - :meth:`status` is the newest problem (a failed connect, a lost connection, a malformed
      frame...), kept until it is resolved (the connection is back) or 30 s passed.

    Thread-safety: the callbacks may run on any sixmm thread; a lock guards the state.
    """

    KEEP = 30.0

    def __init__(
        self,
        url: str,
        connect_within: float,
        on_problem: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.connect_within = connect_within
        self._on_problem = on_problem
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._states: Dict[str, StateEvent] = {}
        self._connected: Set[str] = set()
        self._asked: Set[str] = set()
        self._fatal: Optional[str] = None
        self._problem: Optional[Tuple[float, str, Optional[str]]] = None  # at, text, connection

    def asked(self, topics: List[str]) -> None:
        """The command needs these topics: a refusal of one of them is fatal."""
        with self._lock:
            self._asked.update(topics)

    def on_state(self, event: StateEvent) -> None:
        with self._lock:
            self._states[event.connection] = event
            if event.state is StreamState.CONNECTED:
                self._connected.add(event.connection)
                if self._problem is not None and self._problem[2] == event.connection:
                    self._problem = None  # resolved: the connection is back
                return
            if event.reason == "stopped":
                return
            text = f"{event.connection} {event.state.value}: {one_line(event.reason)}"
            self._problem = (self._clock(), text, event.connection)
            connected = event.connection in self._connected
        if connected and self._on_problem is not None:
            self._on_problem(text)

    def on_error(self, error: BaseException) -> None:
        text = one_line(error)
        with self._lock:
            if isinstance(error, SubscriptionError) and error.topic in self._asked:
                if self._fatal is None:
                    self._fatal = text
                return
            self._problem = (self._clock(), text, None)
            quiet = not self._connected  # connect failures are summed up by verdict()
        if not quiet and self._on_problem is not None:
            self._on_problem(text)

    def lost(self) -> Optional[str]:
        """Why a connection was lost for good (not by a stop), or None."""
        with self._lock:
            for event in self._states.values():
                if event.state is StreamState.LOST and event.reason != "stopped":
                    return f"{event.connection}: {one_line(event.reason)}"
            return None

    def verdict(self) -> Optional[str]:
        """Why the command must give up now, or None."""
        with self._lock:
            if self._fatal is not None:
                return self._fatal
            if set(self._states) <= self._connected and self._states:
                return None
            if self._clock() - self._since < self.connect_within:
                return None
            waiting = [e for name, e in self._states.items() if name not in self._connected]
            why = f": {_RETRY.sub('', one_line(waiting[-1].reason))}" if waiting else ""
            return f"cannot connect to {self.url} within {self.connect_within:g} s{why}"

    def status(self) -> Optional[str]:
        """The newest unresolved problem, with its age, or None."""
        with self._lock:
            if self._problem is None:
                return None
            at, text, _conn = self._problem
            age = self._clock() - at
            if age > self.KEEP:
                self._problem = None
                return None
            return f"{text} ({age:.0f} s ago)"

    def state_line(self) -> str:
        with self._lock:
            if not self._states:
                return "state: connecting..."
            parts = [f"{e.state.value}" for e in self._states.values()]
            last = list(self._states.values())[-1]
            if last.state is StreamState.CONNECTED:
                return f"state: {', '.join(parts)} ({one_line(last.reason)})"
            return f"state: {', '.join(parts)}"


class PacedWarnings:
    """``sixmm: warning: ...`` lines on stderr (the command goes on), at most one per
    ``every`` seconds; the next line says how many were left out.

    Thread-safety: callable from any thread.
    """

    def __init__(self, every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self._skipped = 0

    def __call__(self, text: str) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._every:
                self._skipped += 1
                return
            self._last, skipped, self._skipped = now, self._skipped, 0
        more = f" ({skipped} more since the last warning)" if skipped else ""
        print(f"sixmm: warning: {text}{more}", file=sys.stderr, flush=True)
