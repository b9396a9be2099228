"""``python -m sixmm`` in subprocesses: demo, stream, book, sandbox, and every bad input.

Every failure ends with exactly one line on stderr and a non-zero exit: 2 for bad input, 1 when
the command cannot do what was asked (no connection within the bound, a refused subscription).
The terminal views are checked on a real 80x24 terminal (tmux) when tmux is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from sixmm.sandbox import Sandbox
from tests.helpers import refused_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def run(args: List[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixmm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def run_until_shown(
    args: List[str], shown: Callable[[str], bool], tmp: Path, timeout: float = 40
) -> Tuple[int, str, str]:
    """Start the command, wait until its stdout satisfies ``shown`` (a condition, not a fixed
    time: the machine may be loaded), then Ctrl-C it; return (exit status, stdout, stderr)."""
    out = tmp / f"out-{uuid.uuid4().hex[:8]}.txt"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sixmm", *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        try:
            deadline = time.monotonic() + timeout
            while not shown(out.read_text()) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    return proc.returncode, out.read_text(), err


def one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    """The command failed with ``status`` and said why in exactly one stderr line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- what works -------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    proc = run(["--help"])
    assert proc.returncode == 0
    for command in ("demo", "stream", "book", "sandbox", "--log-level"):
        assert command in proc.stdout


def test_demo_shows_a_live_synced_book_and_trades(tmp_path: Path) -> None:
    def shown(out: str) -> bool:
        return "  synced" in out and " @ " in out and "ticker: last" in out

    status, out, err = run_until_shown(["demo"], shown, tmp_path)
    assert status == 0, err
    assert shown(out), out
    assert "BTCUSDT  version" in out and "latest trades:" in out and "status: ok" in out
    assert err == ""


def test_demo_seconds_is_a_bound() -> None:
    started = time.monotonic()
    proc = run(["demo", "--seconds", "1"])
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "sixmm demo" in proc.stdout
    assert took < 1 + 15, f"--seconds 1 took {took:.1f} s"  # never a wait for the book


def test_stream_prints_json_lines(tmp_path: Path) -> None:
    status, out, err = run_until_shown(
        ["stream", "--sandbox", "market.trade.BTCUSDT", "market.tickers"],
        lambda out: '"topic":"market.tickers"' in out and '"topic":"market.trade.' in out,
        tmp_path,
    )
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.endswith("}")]
    topics = {line["topic"] for line in lines}
    assert topics == {"market.trade.BTCUSDT", "market.tickers"}
    trade = next(line["data"] for line in lines if line["topic"] == "market.trade.BTCUSDT")
    assert trade["symbol"] == "BTCUSDT" and "price" in trade


def test_one_symbol_rule_stream_and_book_upper_case_symbols(tmp_path: Path) -> None:
    status, out, err = run_until_shown(
        ["stream", "--sandbox", "market.trade.btcusdt"], lambda out: "\n" in out, tmp_path
    )
    assert status == 0, err
    topics = {json.loads(line)["topic"] for line in out.splitlines() if line.endswith("}")}
    assert topics == {"market.trade.BTCUSDT"}
    status, out, err = run_until_shown(
        ["book", "ethusdt", "--sandbox", "--depth", "3"], lambda out: "  synced" in out, tmp_path
    )
    assert status == 0, err
    assert "ETHUSDT  version" in out and "  synced" in out


def test_stream_exits_cleanly_when_stdout_closes() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm", "stream", "--sandbox", "market.trade.BTCUSDT"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert json.loads(first)["topic"] == "market.trade.BTCUSDT"
    proc.stdout.close()  # like `| head -1`
    try:
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_book_view_fits_the_asked_depth(tmp_path: Path) -> None:
    status, out, err = run_until_shown(
        ["book", "ETHUSDT", "--sandbox", "--depth", "3"], lambda out: "  synced" in out, tmp_path
    )
    assert status == 0, err
    frame = next(f for f in _frames(out) if "  synced" in f[2])
    assert frame[0].startswith("sixmm book ETHUSDT from ws://127.0.0.1:")
    assert frame[1].startswith("state: CONNECTED")
    assert frame[2].startswith("ETHUSDT  version") and frame[3].split() == [
        "bid", "size", "bid", "|", "ask", "ask", "size",
    ]  # fmt: skip
    assert len(frame) == 4 + 3 + 1 and frame[-1] == "status: ok"


def test_book_seconds_is_a_bound_even_when_the_book_never_syncs() -> None:
    with Sandbox(port=0) as sb:
        sb.go_silent()  # the socket opens, nothing is ever answered: the book cannot sync
        started = time.monotonic()
        proc = run(["book", "BTCUSDT", "--url", sb.ws_url, "--seconds", "2"])
        took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "NOT SYNCED" in proc.stdout
    assert took < 2 + 15, f"--seconds 2 took {took:.1f} s"  # startup and stop, not a sync wait


def _frames(text: str) -> List[List[str]]:
    return [block.splitlines() for block in text.split("\n\n") if block.strip()]


def test_book_status_line_keeps_a_problem_visible(tmp_path: Path) -> None:
    out = tmp_path / "book.out"
    with Sandbox(port=0) as sb, open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sixmm", "book", "BTCUSDT", "--url", sb.ws_url],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        try:
            wait_until(lambda: "  synced" in out.read_text(), timeout=30)
            sb.send_malformed()  # the client counts it, tells on_error, and goes on
            wait_until(lambda: out.read_text().count("status: ProtocolError") >= 3, timeout=30)
        finally:
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    statuses = [frame[-1] for frame in _frames(out.read_text())]
    first = next(i for i, s in enumerate(statuses) if s.startswith("status: ProtocolError"))
    # the problem stays on the status line frame after frame (piped: one frame a second)
    assert all(s.startswith("status: ProtocolError") for s in statuses[first : first + 3])
    assert err == ""


def test_sandbox_help_shows_defaults_and_symbols() -> None:
    proc = run(["sandbox", "--help"])
    assert proc.returncode == 0
    assert "--port" in proc.stdout and "(default: 8765)" in proc.stdout
    assert "BTCUSDT,ETHUSDT,SOLUSDT" in proc.stdout


def test_subcommand_help_shows_defaults() -> None:
    proc = run(["stream", "--help"])
    assert proc.returncode == 0
    assert "--allow-insecure" in proc.stdout and "(default: 10.0)" in proc.stdout


@pytest.mark.parametrize("level", ["debug", "INFO"])
def test_log_level_goes_to_stderr(level: str, tmp_path: Path) -> None:
    status, _out, err = run_until_shown(
        ["--log-level", level, "stream", "--sandbox", "market.tickers"],
        lambda out: "market.tickers" in out,
        tmp_path,
    )
    assert status == 0
    assert "sixmm" in err and "connection public-0" in err


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixmm", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        assert proc.stdout is not None
        assert "sixmm demo" in proc.stdout.readline()  # running and drawing
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err


# -- bad input: one line, non-zero -------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["book", "BTCUSDT", "--sandbox", "--depth", "-3"], "--depth: must be >= 1"),
        (["book", "BTCUSDT", "--sandbox", "--depth", "0"], "--depth: must be >= 1"),
        (["book", "BTCUSDT", "--sandbox", "--depth", "ten"], "--depth: expected a whole number"),
        (["demo", "--depth", "-1"], "--depth: must be >= 1"),
        (["demo", "--seconds", "-4"], "--seconds: must be a positive number"),
        (["stream", "--sandbox", "--seconds", "nan", "market.tickers"], "--seconds"),
        (["book", "BTCUSDT", "--connect-within", "0"], "--connect-within"),
        (["stream", "--sandbox"], "TOPIC"),
        (["nosuchcommand"], "invalid choice"),
        (["stream", "--url", "ws://x", "--sandbox", "market.tickers"], "not allowed with"),
    ],
)
def test_bad_arguments_are_one_line(args: List[str], needle: str) -> None:
    line = one_error_line(run(args), 2)
    assert needle in line, line


def test_bad_topic_is_one_line_without_a_doubled_prefix() -> None:
    line = one_error_line(run(["stream", "--sandbox", "market.kline.BTCUSDT.7m"]), 2)
    assert "7m" in line
    assert line.count("bad topic") == 1, line


@pytest.mark.parametrize("args", [["demo", "--symbol", "b!"], ["book", "b!", "--sandbox"]])
def test_bad_symbol_is_one_line(args: List[str]) -> None:
    line = one_error_line(run(args), 2)
    assert "bad symbol" in line and line.count("bad symbol") == 1, line


def test_insecure_url_names_the_cli_flag() -> None:
    line = one_error_line(run(["stream", "--url", "ws://example.com/ws", "market.tickers"]), 2)
    assert "ws://" in line and "--allow-insecure" in line, line
    assert "allow_insecure=True" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["stream", "market.trade.BTCUSDT"],
        ["book", "BTCUSDT"],
    ],
)
def test_no_connection_within_the_bound_is_one_line_and_exit_1(command: List[str]) -> None:
    with refused_port() as port:
        url = f"ws://127.0.0.1:{port}/ws"
        proc = run([*command, "--url", url, "--connect-within", "2"])
    line = one_error_line(proc, 1)
    assert line.startswith(f"sixmm: cannot connect to {url} within 2 s: "), line
    assert "Connection refused" in line and line.count("connect failed") == 1, line


def test_the_issue_command_fails_within_its_default_bound() -> None:
    # issue 11.10: this printed nothing for 20 s and exited 0
    with refused_port() as port:
        started = time.monotonic()
        proc = run(["stream", "--url", f"ws://127.0.0.1:{port}/ws", "market.trade.BTCUSDT"])
        took = time.monotonic() - started
    line = one_error_line(proc, 1)
    assert "within 10 s" in line and proc.stdout == ""
    assert took < 40, took


@pytest.mark.parametrize(
    "args, topic",
    [
        (["stream", "--sandbox", "--seconds", "30", "market.trade.NOPE"], "market.trade.NOPE"),
        (["book", "NOPE", "--sandbox", "--seconds", "30"], "market.depth.NOPE"),
        (["demo", "--symbol", "NOPE", "--seconds", "30"], "market.depth.NOPE"),
    ],
)
def test_a_refused_subscription_is_one_line_and_exit_1(args: List[str], topic: str) -> None:
    started = time.monotonic()
    proc = run(args)
    line = one_error_line(proc, 1)  # one line: not also a log warning
    assert line == f"sixmm: subscription to {topic!r} refused: unknown symbol: NOPE", line
    assert time.monotonic() - started < 25, "gave up at the refusal, not at --seconds"


# -- a real 80x24 terminal ----------------------------------------------------------------


class Tmux:
    """A tmux server of its own (``-L``), one 80x24 window running ``command``."""

    def __init__(self, command: str) -> None:
        self.socket = f"sixmm-test-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", f"{command}; sleep 600")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout

    def screen(self) -> List[str]:
        return self._tmux("capture-pane", "-p", "-t", "t").splitlines()

    def history(self) -> List[str]:
        """The scrollback and the screen."""
        return self._tmux("capture-pane", "-p", "-S", "-", "-t", "t").splitlines()

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20, check=False
        )


@pytest.fixture
def tmux_shell() -> Iterator[type]:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (apt-get install tmux) to check the views on a real terminal")
    yield Tmux


def _sixmm_command(args: str) -> str:
    env = f"PYTHONPATH={ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')} TERM=xterm-256color"
    prelude = "for i in $(seq 1 30); do echo install-output-$i; done"
    return f"cd {ROOT} && {prelude} && env {env} {sys.executable} -m sixmm {args}; echo EXIT=$?"


def _frame_ok(screen: List[str]) -> Optional[str]:
    """None if ``screen`` is a whole demo frame that fits, else what is wrong."""
    if not screen or not screen[0].startswith("sixmm demo: the sandbox exchange at"):
        return f"no title on top: {screen[:1]}"
    if not screen[1].startswith("state: "):
        return "no state line"
    if "BTCUSDT  version" not in screen[2] or "bid size" not in screen[3]:
        return "no book header / column headers"
    if not any(line.startswith("status: ") for line in screen):
        return "no status line"
    if any(len(line) > 80 for line in screen):
        return "a line wider than the terminal"
    return None


def test_demo_fits_80x24_redraws_in_place_and_leaves_the_screen_clean(tmux_shell: type) -> None:
    term = tmux_shell(_sixmm_command("demo"))
    try:
        wait_until(lambda: "  synced" in "\n".join(term.screen()), timeout=40)
        for _ in range(4):  # several frames: every one shows title, state and headers
            screen = term.screen()
            assert _frame_ok(screen) is None, (_frame_ok(screen), screen)
            assert len(screen) <= 24
            time.sleep(0.3)
        term.send("C-c")  # Ctrl-C, as a user stops it
        wait_until(lambda: any(line.startswith("EXIT=") for line in term.screen()), timeout=30)
        history = term.history()
        screen = term.screen()
    finally:
        term.kill()
    assert "EXIT=0" in screen
    # the shell's screen is back (the install output) and nothing of the view scrolled away
    assert "install-output-30" in screen
    assert not any("sixmm demo" in line or "bid size" in line for line in history), history
    assert len([line for line in history if line.strip()]) <= 30 + 2, history


def test_book_refusal_stays_visible_after_the_view(tmux_shell: type) -> None:
    term = tmux_shell(_sixmm_command("book NOPE --sandbox"))
    try:
        wait_until(lambda: any(line.startswith("EXIT=") for line in term.screen()), timeout=40)
        screen = term.screen()
        history = term.history()
    finally:
        term.kill()
    assert "EXIT=1" in screen
    errors = [line for line in screen if line.startswith("sixmm: ")]
    assert errors == ["sixmm: subscription to 'market.depth.NOPE' refused: unknown symbol: NOPE"]
    assert not any("bid size" in line for line in history)


def test_book_fills_the_terminal(tmux_shell: type) -> None:
    term = tmux_shell(_sixmm_command("book BTCUSDT --sandbox"))
    try:
        wait_until(lambda: "  synced" in "\n".join(term.screen()), timeout=40)
        screen = term.screen()
        term.send("C-c")
        wait_until(lambda: any(line.startswith("EXIT=0") for line in term.screen()), timeout=30)
    finally:
        term.kill()
    assert screen[0].startswith("sixmm book BTCUSDT from ws://127.0.0.1:")
    assert screen[1].startswith("state: CONNECTED")
    rows = [line for line in screen if " | " in line and "bid size" not in line]
    assert len(rows) == 24 - 5, screen  # every row but title, state, headers and status
    assert screen[-1].startswith("status: ") or screen[23].startswith("status: ")


def test_book_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    # like Ctrl-C: the view ends normally (on a terminal: the screen is restored)
    out = tmp_path / "book.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sixmm", "book", "BTCUSDT", "--sandbox"],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        try:
            wait_until(lambda: "sixmm book BTCUSDT" in out.read_text(), timeout=30)
            proc.terminate()
            _out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_stream_warns_once_a_second_and_goes_on(tmp_path: Path) -> None:
    with Sandbox(port=0) as sb:
        out = tmp_path / "stream.out"
        with open(out, "w") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sixmm", "stream", "--url", sb.ws_url, "market.tickers"],
                stdout=sink,
                stderr=subprocess.PIPE,
                text=True,
                cwd=str(ROOT),
            )
            try:
                wait_until(lambda: out.read_text().count("\n") >= 1, timeout=30)
                sb.send_malformed()  # a burst of five garbage frames
                lines = out.read_text().count("\n")
                wait_until(lambda: out.read_text().count("\n") >= lines + 2, timeout=30)
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=20)
            finally:
                proc.kill()
    assert proc.returncode == 0, err
    warnings = err.splitlines()
    assert len(warnings) == 1, err  # five errors in a burst: one line, not five
    assert warnings[0].startswith("sixmm: warning: ProtocolError: malformed frame"), err
