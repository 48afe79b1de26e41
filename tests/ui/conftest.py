"""Real Chromium (Debian's package) driven by Playwright from PyPI, against real servers on 127.0.0.1.

Playwright's own browser download cannot work on our machines, so the browser is the system Chromium
(`FACEID_CHROMIUM`, else `chromium` on PATH, else /usr/bin/chromium); without one these tests skip.
Screenshots go to `FACEID_UI_SCREENSHOTS` if set, else to a folder under pytest's temporary directory.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from harness import Server

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    if os.environ.get("FACEID_CHROMIUM"):
        return os.environ["FACEID_CHROMIUM"] if Path(os.environ["FACEID_CHROMIUM"]).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set FACEID_CHROMIUM); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])  # a test camera
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    """The folder screenshots are written to (printed in the test report)."""
    path = Path(os.environ["FACEID_UI_SCREENSHOTS"]) if os.environ.get("FACEID_UI_SCREENSHOTS") \
        else tmp_path_factory.mktemp("ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {path}")
    return path


class Console:
    """Console errors and uncaught exceptions of a page. Tests that provoke HTTP errors on purpose allow
    Chromium's "Failed to load resource ... status of 4xx" lines for exactly those statuses."""

    def __init__(self):
        self.errors: list[str] = []
        self.allowed: list[re.Pattern] = []
        self.dialogs: list[str] = []

    def allow_status(self, *statuses: int) -> None:
        for s in statuses:
            self.allowed.append(re.compile(rf"Failed to load resource: the server responded with a status of {s}\b"))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(browser, console):
    """new_page(base_url, width=1280, **context_options) -> a page in a fresh context (its own sessionStorage); at the end of
    the test no page may have logged a console error or thrown, and no alert() may have fired."""
    contexts = []

    def make(base_url: str, width: int = 1280, height: int = 900, **options):
        ctx = browser.new_context(base_url=base_url, viewport={"width": width, "height": height}, **options)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(120_000)  # a shared 2-core machine: identify can take a while
        page.on("console", lambda m: console.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))

        def on_dialog(d):
            console.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert console.unexpected() == []
    assert console.dialogs == []


@pytest.fixture(scope="session", autouse=True)
def _patient_expect():
    """A shared 2-core machine: an identify can take a while (Playwright's `expect` waits 5 s by default)."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        return  # the `browser` fixture skips these tests
    expect.set_options(timeout=120_000)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, browser):
    """start(name, env=None) -> a real server on 127.0.0.1 with a gallery of its own, stopped after the module.
    `browser` first: without Chromium the tests skip before any server starts."""
    started = []

    def start(name: str, env: dict | None = None) -> Server:
        srv = Server(tmp_path_factory.mktemp(name) / "gallery.db", env=env)
        started.append(srv)
        return srv.start(timeout_s=600)  # a busy shared machine can take minutes to load the models
    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def api(server):
    """An HTTP client of the module's `server` (to set up what a test then does in the browser)."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
