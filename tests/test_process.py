"""Process behaviour, in real subprocesses (``sys.executable``) against this process's sandbox.

Ctrl-C in ``wait()`` exits promptly and cleanly; ``stop()`` from a callback ends ``wait()``;
two managers coexist; a manager forgotten without ``stop()`` never keeps the process alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import List, Tuple

import pytest

from sixmm.sandbox import Sandbox

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PRELUDE = textwrap.dedent(
    """
    import sys, threading
    from sixmm import Backoff, StreamManager
    URL = sys.argv[1]
    FAST = dict(ping_interval=0.2, stale_after=1.0, backoff=Backoff(initial=0.05, maximum=0.2))
    first = threading.Event()

    def sixmm_threads():
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("sixmm"))

    def say_when_main_waits(text):
        # print text once the main thread is blocked inside StreamManager.wait()
        main = threading.main_thread().ident

        def watch():
            while True:
                frame = sys._current_frames().get(main)
                while frame is not None:
                    code = frame.f_code
                    if code.co_name == "wait" and code.co_filename.endswith("manager.py"):
                        print(text, flush=True)
                        return
                    frame = frame.f_back
                threading.Event().wait(0.01)

        threading.Thread(target=watch, name="watcher", daemon=True).start()
    """
)


def spawn(body: str, url: str) -> subprocess.Popen[str]:
    code = PRELUDE + textwrap.dedent(body)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", code, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 15.0) -> List[str]:
    """Lines of stdout up to and including ``marker`` (fails on EOF or timeout)."""
    assert proc.stdout is not None
    lines: List[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    proc.kill()
    proc.wait(5)
    assert proc.stderr is not None
    err = proc.stderr.read()
    raise AssertionError(f"no {marker!r} from the child; stdout={lines}, stderr={err[-2000:]}")


def finish(proc: subprocess.Popen[str], timeout: float) -> Tuple[int, str, str, float]:
    """Wait for the child to exit; return (code, rest of stdout, stderr, seconds waited).

    Reads after the exit (outputs are small): ``communicate()`` would miss what
    :func:`read_until` already buffered.
    """
    started = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        assert proc.stderr is not None
        raise AssertionError(
            f"child did not exit within {timeout}s; stderr={proc.stderr.read()[-2000:]}"
        ) from None
    took = time.monotonic() - started
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode, out, err, took


def test_ctrl_c_in_wait_exits_promptly_and_cleanly(sandbox: Sandbox) -> None:
    proc = spawn(
        """
        with StreamManager(URL, **FAST) as streams:
            streams.trades("BTCUSDT", lambda t: first.set())
            streams.order_book("ETHUSDT")
            first.wait(10)
            say_when_main_waits("ready")
            returned = streams.wait()
        print("wait returned", returned, flush=True)
        print("threads", sixmm_threads(), flush=True)
        """,
        sandbox.ws_url,
    )
    read_until(proc, "ready")
    proc.send_signal(signal.SIGINT)
    code, out, err, took = finish(proc, timeout=15)
    assert code == 0, err
    # The bound IS the behaviour ("promptly"): unloaded this takes ~0.3 s; 5 s leaves room for
    # a loaded 2-core machine while still catching a stop() that sits out join timeouts.
    assert took < 5.0, f"exit took {took:.2f}s"
    assert "wait returned True" in out
    assert "threads []" in out
    assert "Traceback" not in err, err


def test_stop_from_inside_a_callback_ends_wait(sandbox: Sandbox) -> None:
    proc = spawn(
        """
        import time
        streams = StreamManager(URL, **FAST)

        def on_trade(trade):
            streams.stop()
            time.sleep(0.3)  # the callback goes on after stop(): wait() must wait for it

        streams.trades("BTCUSDT", on_trade)
        streams.start()
        print("wait returned", streams.wait(10), flush=True)
        print("threads", sixmm_threads(), flush=True)
        """,
        sandbox.ws_url,
    )
    code, out, err, _ = finish(proc, timeout=20)
    assert code == 0, err
    assert "wait returned True" in out
    assert "threads []" in out
    assert "Traceback" not in err, err


def test_two_managers_in_one_process(sandbox: Sandbox) -> None:
    proc = spawn(
        """
        got = {"a": threading.Event(), "b": threading.Event()}
        with StreamManager(URL, **FAST) as a, StreamManager(URL, **FAST) as b:
            a.trades("BTCUSDT", lambda t: got["a"].set())
            b.trades("BTCUSDT", lambda t: got["b"].set())
            book = b.order_book("ETHUSDT")
            print("both", got["a"].wait(10) and got["b"].wait(10) and book.wait_synced(10))
            a.stop()
            n = len([t for t in sixmm_threads()])
            print("b alive after a stopped", b.stats()["connections"]["public-0"]["state"], n > 0)
        print("threads", sixmm_threads(), flush=True)
        """,
        sandbox.ws_url,
    )
    code, out, err, _ = finish(proc, timeout=30)
    assert code == 0, err
    assert "both True" in out
    assert "b alive after a stopped STREAMING True" in out
    assert "threads []" in out
    assert "Traceback" not in err, err


@pytest.mark.parametrize("how", ["forgotten", "garbage-collected"])
def test_a_manager_without_stop_does_not_keep_the_process_alive(sandbox: Sandbox, how: str) -> None:
    proc = spawn(
        f"""
        import gc
        def main():
            streams = StreamManager(URL, **FAST)
            streams.trades("BTCUSDT", lambda t: first.set())
            streams.order_book("ETHUSDT")
            streams.start()
            first.wait(10)
            print("streaming", sixmm_threads(), flush=True)
            if {how == "garbage-collected"!r}:
                del streams
                gc.collect()
        main()
        print("main returned", flush=True)
        """,
        sandbox.ws_url,
    )
    read_until(proc, "streaming")
    code, out, err, took = finish(proc, timeout=10)
    assert code == 0, err
    assert "main returned" in out
    assert took < 5.0
    assert "Traceback" not in err, err
