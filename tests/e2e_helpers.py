"""What the browser tests (tests/test_e2e_*.py) share: a real `streamlit run` server on a free port,
Debian's Chromium driven by Playwright, and waiting for a script run to end.

Importing it skips the importing test module when playwright or chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict[str, str | None], wait_s: float = 90):
    """`streamlit run streamlit_app.py` on a free local port, with `env` over this process's environment
    (None: unset); yields its URL once /_stcore/health answers and stops it afterwards. Its output goes to
    a file (a pipe nobody reads could fill up and stall it) and is shown when it does not start."""
    full = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **env}
    full = {k: v for k, v in full.items() if v is not None}
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO_ROOT, env=full, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            if not _healthy(url, wait_s):
                log.seek(0)
                pytest.fail(f"streamlit did not answer /_stcore/health within {wait_s:g} s:\n" + log.read()[-3000:])
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def local_streamlit(weights, tmp_path_factory):
    """`streamlit_server` in local mode on `weights`, its server paths the test run's temporary folders
    (where the tests put the folders they type in)."""
    return streamlit_server({"REALITYCHECK_WEIGHTS": str(weights),
                             "REALITYCHECK_ROOTS": str(tmp_path_factory.getbasetemp())})


def _healthy(url: str, wait_s: float) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    return False


@contextmanager
def chromium(*extra_args: str):
    """Debian's Chromium, headless, with `LAUNCH_ARGS` and `extra_args`; closed afterwards."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*LAUNCH_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser, height: int, **context_args):
    """A page 1400 px wide in a browser context of its own (no cookies or session shared with another test)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": height}, **context_args)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def idle(page, timeout=180_000):
    """Wait until Streamlit has finished its script run (the status widget disappears)."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def no_exception(page):
    """No traceback and no error box: pages turn failures into st.error messages, so both count."""
    for test_id in ("stException", "stAlertContentError"):
        found = page.locator(f"[data-testid='{test_id}']")
        assert found.count() == 0, found.first.inner_text()


def wait_for_count(page, text: str, n: int, timeout=180_000):
    """Wait until `text` occurs at least `n` times in the main area: a page that writes its summary first
    and each image's details after it can be idle for a moment between the two."""
    page.wait_for_function(
        "([t, n]) => { const m = document.querySelector('section.main, [data-testid=\"stMain\"]');"
        " return !!m && m.innerText.split(t).length - 1 >= n; }", arg=[text, n], timeout=timeout)


def main_text(page) -> str:
    return page.locator("section.main, [data-testid='stMain']").first.inner_text()
