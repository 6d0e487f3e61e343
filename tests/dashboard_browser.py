"""Debian's chromium driven by Playwright, for the dashboard's browser tests (Playwright's own browser download is never used)."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root on a closed network: no sandbox, no GPU, and none of chromium's own calls home.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
MISSING = "no /usr/bin/chromium: `apt-get install -y chromium` (Debian's browser; Playwright drives it)"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (chromium or playwright missing), or None when they can."""
    if not CHROMIUM.exists():
        return MISSING
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install the dev extra"
    return None


@contextlib.contextmanager
def launched_chromium() -> Iterator:
    """A headless chromium from /usr/bin, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def answers(url: str) -> bool:
    """True when GET url/health says ok (the dashboard is up)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


class DashboardWatch(threading.Thread):
    """Watches a lab's dashboard in chromium while the lab runs, noting when the page showed each milestone.

    ``milestones`` is a list of (name, check) where check(page, timeout_ms) is a Playwright
    ``expect``; each is retried in short tries until it holds, or until the lab has ended
    (``lab_done``) and one last try failed, so a milestone the page never showed is named.
    Playwright's sync API lives in this thread only.
    """

    def __init__(self, url: str, milestones: list[tuple[str, Callable]], screenshot: Path,
                 lab_done: threading.Event, start_timeout_s: float = 600) -> None:
        super().__init__(name="dashboard-watch", daemon=True)
        self.url, self.milestones, self.screenshot = url, milestones, screenshot
        self.lab_done, self.start_timeout_s = lab_done, start_timeout_s
        self.seen: dict[str, float] = {}  # milestone -> seconds since the page first loaded
        self.missed: str | None = None
        self.problems: list[str] = []  # script errors in the page
        self.requests: list[str] = []
        self.reloads = 0

    def run(self) -> None:
        """Wait for the dashboard, open it once, and follow it through every milestone."""
        try:
            self._watch()
        except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts on it
            self.missed = self.missed or f"the watch failed: {type(exc).__name__}: {exc}"

    def _watch(self) -> None:
        """The watch itself (see the class docstring)."""
        deadline = time.monotonic() + self.start_timeout_s
        while not answers(self.url):
            if self.lab_done.is_set() or time.monotonic() > deadline:
                self.missed = f"the dashboard at {self.url} never answered /health"
                return
            self.lab_done.wait(0.2)
        with launched_chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.on("request", lambda request: self.requests.append(request.url))
            page.on("pageerror", lambda error: self.problems.append(str(error)))
            page.on("load", lambda _: setattr(self, "reloads", self.reloads + 1))
            page.goto(self.url, timeout=30_000)
            loaded = time.monotonic()
            for name, check in self.milestones:
                while True:
                    ended = self.lab_done.is_set()
                    try:
                        check(page, 2_000)
                        break
                    except AssertionError:
                        if ended:
                            self.missed = f"the page never showed {name} before the lab ended"
                            page.screenshot(path=str(self.screenshot), full_page=True)
                            return
                self.seen[name] = round(time.monotonic() - loaded, 1)
            page.screenshot(path=str(self.screenshot), full_page=True)
            page.close()
