"""samples/tk_order_book.py on a virtual X display (Xvfb): a live book in a Tk window.

Needs the Debian packages ``xvfb`` (Xvfb), ``x11-utils`` (xwininfo) and ``x11-apps`` (xwd),
and a Python with tkinter (``python3-tk`` for Debian's python3). The screenshot is taken with
``xwd`` and turned into a PNG here (stdlib only), saved in the test's tmp dir and as
``/tmp/sixmm-tk-sample.png`` for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from sixmm.sandbox import Sandbox
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "tk_order_book.py"
SCREENSHOT = Path("/tmp/sixmm-tk-sample.png")
GREEN = (0x0A, 0x7D, 0x32)  # the sample's status bar when CONNECTED and synced
RED = (0xC0, 0x39, 0x2B)
AMBER = (0xB9, 0x77, 0x0E)  # the status bar while SUSPENDED / not synced
TITLE = re.compile(r'^\s*(0x[0-9a-f]+) "BTCUSDT (\d+(?:\.\d+)?) · sixmm"', re.M)

Image = Tuple[int, int, bytes]  # width, height, RGB bytes


def _missing() -> Optional[str]:
    tools = [t for t in ("Xvfb", "xwd", "xwininfo") if shutil.which(t) is None]
    if tools:
        return f"needs {', '.join(tools)} (apt-get install xvfb x11-apps x11-utils)"
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return "this Python has no tkinter (apt-get install python3-tk)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def x_env(display: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIXMM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    env["DISPLAY"] = display
    return env


# ------------------------------------------------------------------ XWD -> PNG, stdlib only


def read_xwd(data: bytes) -> Image:
    """Decode an ``xwd`` dump of a 24/32-bit TrueColor window into RGB bytes."""
    fields = struct.unpack(">25I", data[:100])
    header_size, _version, _fmt, _depth, width, height = fields[:6]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    red_mask, green_mask, blue_mask, ncolors = fields[14], fields[15], fields[16], fields[19]
    assert bits_per_pixel == 32, f"unsupported xwd: {bits_per_pixel} bits per pixel"
    assert (red_mask, green_mask, blue_mask) == (0xFF0000, 0xFF00, 0xFF), "unsupported masks"
    r, g, b = (2, 1, 0) if byte_order == 0 else (1, 2, 3)  # LSBFirst: B G R X
    pixels = data[header_size + 12 * ncolors :]
    rgb = bytearray(width * height * 3)
    for y in range(height):
        row = pixels[y * bytes_per_line : y * bytes_per_line + 4 * width]
        out = y * width * 3
        rgb[out : out + 3 * width : 3] = row[r::4]
        rgb[out + 1 : out + 3 * width : 3] = row[g::4]
        rgb[out + 2 : out + 3 * width : 3] = row[b::4]
    return width, height, bytes(rgb)


def write_png(path: Path, image: Image) -> None:
    width, height, rgb = image

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    stride = 3 * width
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
    path.write_bytes(png + chunk(b"IEND", b""))


def colours(
    image: Image, rows: Tuple[float, float] = (0.0, 1.0)
) -> Dict[Tuple[int, int, int], int]:
    """Pixel count per colour, in the band of rows between the given fractions of the height."""
    width, height, rgb = image
    band = rgb[int(rows[0] * height) * width * 3 : int(rows[1] * height) * width * 3]
    counts: Dict[Tuple[int, int, int], int] = {}
    for pixel in zip(band[0::3], band[1::3], band[2::3]):
        counts[pixel] = counts.get(pixel, 0) + 1
    return counts


def test_png_writer_round_trips_pixels(tmp_path: Path) -> None:
    image = (2, 1, bytes([255, 0, 0, 0, 0, 255]))
    write_png(tmp_path / "x.png", image)
    data = (tmp_path / "x.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    assert zlib.decompress(data[idat + 4 : idat + 4 + length]) == b"\x00" + image[2]


# ------------------------------------------------------------------------------ the sample


def window_of(display: str) -> Optional[Tuple[str, str]]:
    """``(window id, last price)`` once the sample's title shows a traded price."""
    tree = subprocess.run(
        ["xwininfo", "-root", "-tree"],
        env=x_env(display),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    found = TITLE.search(tree)
    return (found.group(1), found.group(2)) if found else None


def screenshot(display: str, window: str) -> Image:
    dump = subprocess.run(
        ["xwd", "-silent", "-id", window], env=x_env(display), capture_output=True, timeout=10
    )
    assert dump.returncode == 0, dump.stderr
    return read_xwd(dump.stdout)


def start(display: str, tmp: Path, *args: str) -> Tuple[subprocess.Popen[bytes], Path]:
    err = tmp / "stderr.txt"
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(SAMPLE), *args],
            cwd=str(ROOT),
            env=x_env(display),
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
    return proc, err


def finish(proc: subprocess.Popen[bytes], err: Path, timeout: float = 20.0) -> str:
    """Wait for a clean exit; return stderr (the sample is killed if it hangs)."""
    try:
        returncode = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    stderr = err.read_text()
    assert returncode == 0, f"exit code {returncode}; stderr:\n{stderr}"
    assert "Traceback" not in stderr and stderr.strip() == "", stderr
    return stderr


def test_tk_window_shows_a_synced_book_and_trades_and_closes_on_ctrl_c(
    display: str, tmp_path: Path
) -> None:
    proc, err = start(display, tmp_path, "--seconds", "60")
    try:
        window, _price = wait_until(lambda: window_of(display), timeout=30)

        def synced_view() -> Optional[Image]:
            image = screenshot(display, window)
            bar = colours(image).get(GREEN, 0) > 2000  # solid green: CONNECTED and synced
            book = colours(image, rows=(0.1, 0.4))  # bids in green, asks in red
            trades = colours(image, rows=(0.55, 0.95))  # BUY trades green, SELL red
            shown = all(c.get(GREEN, 0) > 0 and c.get(RED, 0) > 0 for c in (book, trades))
            return image if bar and shown else None

        image = wait_until(synced_view, timeout=30, interval=0.2)
        write_png(tmp_path / "tk_order_book.png", image)
        write_png(SCREENSHOT, image)
        width, height, _rgb = image
        assert width >= 300 and height >= 300, "the window has room for a book and trades"
        assert len(colours(image)) > 20, "text was drawn (anti-aliased glyphs, several colours)"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C in the terminal closes the window cleanly
    finish(proc, err)
    assert window_of(display) is None, "the window is gone"


def test_tk_window_closes_by_itself_after_seconds(display: str, tmp_path: Path) -> None:
    proc, err = start(display, tmp_path, "--seconds", "2")
    finish(proc, err, timeout=30)


def test_tk_window_turns_amber_and_greys_the_book_while_suspended(
    display: str, tmp_path: Path
) -> None:
    with Sandbox(port=0) as exchange:
        proc, err = start(display, tmp_path, "--url", exchange.ws_url, "--seconds", "60")
        try:
            window, _price = wait_until(lambda: window_of(display), timeout=30)
            wait_until(lambda: colours(screenshot(display, window)).get(GREEN, 0) > 2000, 30)
            exchange.stop()  # the exchange goes away; sixmm keeps reconnecting

            def suspended_view() -> Optional[Image]:
                image = screenshot(display, window)
                bar = colours(image).get(AMBER, 0) > 2000
                book = colours(image, rows=(0.1, 0.4))  # the book's rows, not the trades'
                grey = book.get(RED, 0) == 0 and book.get(GREEN, 0) == 0
                return image if bar and grey else None  # the book is drawn in grey

            image = wait_until(suspended_view, timeout=30, interval=0.2)
            write_png(tmp_path / "tk_order_book_suspended.png", image)
            write_png(SCREENSHOT.with_name("sixmm-tk-sample-suspended.png"), image)
        finally:
            proc.send_signal(signal.SIGINT)
        finish(proc, err)
