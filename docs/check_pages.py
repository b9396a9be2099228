"""Open the built docs in headless Chromium and fail on a broken page.

    python docs/check_pages.py docs/_build/html [--screenshots DIR]

For every page: Chromium renders it (``--dump-dom``), and the rendered page must have its
title, a heading, body text and the theme's stylesheet; every local file the page links to
(stylesheets, scripts, images, other pages) must exist. The index and the StreamManager page
must show what they are for. ``--screenshots DIR`` also saves ``DIR/index.png`` and
``DIR/streammanager.png`` (1280x900). Exit status 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlsplit

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
MUST_SHOW = {
    "index.html": ["sixmm", "python -m sixmm demo", "StreamManager"],
    "api/streammanager.html": ["sixmm.StreamManager", "on_state", "order_book", "wait"],
}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_pages: no chromium on PATH (apt-get install chromium)")


def run_browser(args: List[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: List[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def check_page(root: Path, page: Path) -> List[str]:
    rel = page.relative_to(root).as_posix()
    proc = run_browser(["--dump-dom", "--virtual-time-budget=3000", page.as_uri()])
    dom = proc.stdout
    problems = []
    if proc.returncode != 0 or "<body" not in dom:
        return [f"{rel}: chromium could not render it (exit {proc.returncode})"]
    parsed = _Links()
    parsed.feed(dom)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", dom))
    if not parsed.title.strip():
        problems.append(f"{rel}: no <title>")
    if not re.search(r"<h1\b", dom):
        problems.append(f"{rel}: no heading")
    if len(text.split()) < 20:
        problems.append(f"{rel}: almost no text ({len(text.split())} words)")
    if "furo" not in dom:
        problems.append(f"{rel}: the theme's stylesheet is not linked")
    for link in parsed.links:
        parts = urlsplit(link)
        if parts.scheme or link.startswith(("#", "//", "mailto:")):
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if parts.path and not target.exists():
            problems.append(f"{rel}: broken link {link!r}")
    for needle in MUST_SHOW.get(rel, []):
        if needle not in " ".join(text.split()) and needle not in dom:
            problems.append(f"{rel}: does not show {needle!r}")
    return problems


def screenshot(page: Path, out: Path) -> Optional[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = run_browser(
        [
            f"--screenshot={out}",
            "--window-size=1280,900",
            "--virtual-time-budget=3000",
            page.as_uri(),
        ]
    )
    if proc.returncode != 0 or not out.exists() or out.stat().st_size < 10_000:
        return f"screenshot of {page.name} failed (exit {proc.returncode})"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built site (sphinx-build -b html output)")
    parser.add_argument("--screenshots", type=Path, help="save index.png and streammanager.png")
    args = parser.parse_args()
    root = args.html.resolve()
    pages = sorted(p for p in root.rglob("*.html") if "_modules" not in p.parts)
    pages = [p for p in pages if p.name not in ("search.html", "genindex.html")]
    problems = []
    for rel in MUST_SHOW:
        if not (root / rel).exists():
            problems.append(f"{rel}: missing")
    for page in pages:
        problems += check_page(root, page)
    if args.screenshots is not None:
        for rel, name in (
            ("index.html", "index.png"),
            ("api/streammanager.html", "streammanager.png"),
        ):
            problem = screenshot(root / rel, args.screenshots / name)
            if problem:
                problems.append(problem)
    for problem in problems:
        print(f"check_pages: {problem}", file=sys.stderr)
    print(
        f"check_pages: {len(pages)} pages opened in {os.path.basename(chromium())},"
        f" {len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
