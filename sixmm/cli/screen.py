"""A full-screen view that fits the terminal and redraws in place.

On a terminal: the alternate screen (the shell's screen and scrollback are untouched and come
back on exit), cursor hidden, each frame drawn from the top-left with every line cleared to its
end and cut to the terminal's width, so nothing scrolls. Piped: plain blocks of text, one per
frame.
"""

from __future__ import annotations

import shutil
from typing import Optional, Sequence, TextIO, Tuple

__all__ = ["Screen"]

_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, hide the cursor
_LEAVE = "\x1b[?25h\x1b[?1049l"  # show the cursor, back to the normal screen
_HOME = "\x1b[H"
_EOL = "\x1b[K"  # clear to the end of the line
_EOS = "\x1b[J"  # clear to the end of the screen


class Screen:
    """Draws frames on ``out``; a context manager (enter/leave the alternate screen).

    Thread-safety: one thread draws.
    """

    def __init__(self, out: TextIO, tty: Optional[bool] = None) -> None:
        self._out = out
        self.tty = out.isatty() if tty is None else tty
        self._entered = False

    def size(self) -> Tuple[int, int]:
        """``(columns, lines)`` of the terminal (80x24 when it cannot be told)."""
        size = shutil.get_terminal_size((80, 24))
        return max(size.columns, 20), max(size.lines, 5)

    def __enter__(self) -> Screen:
        if self.tty:
            self._out.write(_ENTER)
            self._out.flush()
            self._entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._entered:
            self._entered = False
            try:
                self._out.write(_LEAVE)
                self._out.flush()
            except (OSError, ValueError):
                pass

    def show(self, lines: Sequence[str]) -> None:
        """Draw one frame: at most the terminal's height, each line cut to its width."""
        if not self.tty:
            self._out.write("\n".join(lines) + "\n\n")
            self._out.flush()
            return
        columns, rows = self.size()
        shown = [line[: columns - 1] for line in lines[:rows]]
        # no newline after the last line: the cursor never moves past the bottom row
        self._out.write(_HOME + (_EOL + "\n").join(shown) + _EOL + _EOS)
        self._out.flush()
