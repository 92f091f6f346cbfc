"""End-to-end in a real browser: a Classify verdict becomes a case; label it on the Cases page and find it by filter.

Run alone with `pytest -m e2e tests/test_e2e_cases.py` (Debian chromium + playwright, as tests/test_e2e_browser.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_e2e_browser import (
    CHROMIUM,
    LAUNCH_ARGS,
    _free_port,
    _idle,
    _no_exception,
    playwright_api,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-cases") / "cases.db"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, db):
    port = _free_port()
    env = {**os.environ, "REALITYCHECK_WEIGHTS": str(tiny_checkpoint), "REALITYCHECK_DB": str(db),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("REALITYCHECK_PUBLIC", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not answer /_stcore/health within 90 s:\n" + (proc.stdout.read() or "")[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def page():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        ctx = b.new_context(viewport={"width": 1400, "height": 1400})
        yield ctx.new_page()
        ctx.close()
        b.close()


def _checkbox(page, key: str):
    # by its key; .last: while a run replaces the page, the element it replaces may still be there
    return page.locator(f".st-key-{key} label").last


def _open_choices(page) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text="Open a case").click()
    page.get_by_role("option").first.wait_for(timeout=30_000)


def _shown(page) -> str:
    return " ".join(page.locator("[data-testid='stMetricValue']").all_inner_texts())


def _wait_shown(page, text: str, timeout_s: float = 30) -> None:
    """The count metric reads `text` once the rerun a click started has drawn it (polled, not slept)."""
    import time

    end = time.monotonic() + timeout_s
    while text not in _shown(page) and time.monotonic() < end:
        page.wait_for_timeout(200)
    assert text in _shown(page), _shown(page)


def test_label_a_case_and_find_it_by_filter(server, page, db):
    from realitycheck.analysis.cases import CaseStore

    page.goto(server)
    page.get_by_text("Classify face photos").first.wait_for(timeout=90_000)
    _idle(page)
    page.locator("input[type=file]").first.set_input_files(
        [str(ROOT / "sample_images" / n) for n in ("grace_hopper.jpg", "astronaut_eileen_collins.jpg")])
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_text("Verdict:").first.wait_for(timeout=180_000)
    _idle(page)
    store = CaseStore(f"sqlite:///{db}")
    table = store.cases()
    assert len(table) == 2
    row = table[table["name"] == "grace_hopper.jpg"].iloc[0]
    wrong = "real" if row["verdict"] == "fake" else "fake"

    page.goto(server + "/cases")
    page.get_by_text("Cases shown").first.wait_for(timeout=90_000)
    _idle(page)
    _wait_shown(page, "2 of 2")
    page.locator("[data-testid='stSelectbox']").filter(has_text="Open a case").click()
    page.get_by_role("option", name=f"grace_hopper.jpg · {row['sha256'][:12]}").click()
    _idle(page)
    page.locator("[data-testid='stRadio']").filter(has_text="True label").get_by_text(wrong, exact=True).click()
    page.get_by_label("Note").fill("seen in the newsroom")
    page.get_by_role("button", name="Save label").click()
    page.get_by_text(f"labelled {wrong}").first.wait_for(timeout=60_000)
    _idle(page)
    case = store.case(row["sha256"])
    assert case["true_label"] == wrong and case["note"] == "seen in the newsroom"

    _checkbox(page, "cases_disagreements").click()
    _idle(page)
    _wait_shown(page, "1 of 2")  # the labelled case is a disagreement, the other is not reviewed
    _open_choices(page)
    assert page.get_by_role("option").all_inner_texts() == [f"grace_hopper.jpg · {row['sha256'][:12]}"]
    page.keyboard.press("Escape")
    _checkbox(page, "cases_disagreements").click()
    _idle(page)
    _wait_shown(page, "2 of 2")
    _checkbox(page, "cases_unreviewed").click()
    _idle(page)
    _wait_shown(page, "1 of 2")
    _open_choices(page)
    assert [t.split(" · ")[0] for t in page.get_by_role("option").all_inner_texts()] == ["astronaut_eileen_collins.jpg"]
    page.keyboard.press("Escape")
    _no_exception(page)
