"""End-to-end in a real browser: a Classify verdict becomes a case; label it on the Cases page and find it by filter.

Run alone with `pytest -m e2e tests/test_e2e_cases.py` (Debian chromium + playwright, as tests/test_e2e_browser.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_helpers import idle, no_exception, playwright_api, streamlit_server
from tests.helpers import REPO_ROOT as ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-cases") / "cases.db"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, db):
    with streamlit_server({"REALITYCHECK_WEIGHTS": str(tiny_checkpoint), "REALITYCHECK_DB": str(db),
                           "REALITYCHECK_PUBLIC": None}) as url:
        yield url


def _checkbox(page, key: str):
    # by its key; .last: while a run replaces the page, the element it replaces may still be there
    return page.locator(f".st-key-{key} label").last


def _open_choices(page, timeout_s: float = 30) -> None:
    """Open the case picker. A click can land on the picker a rerun is replacing (then nothing opens,
    seen on a busy CI machine), so it clicks the newest one (.last) again until its options show."""
    import time

    end = time.monotonic() + timeout_s
    while True:
        page.locator("[data-testid='stSelectbox']").filter(has_text="Open a case").last.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=3_000)
            return
        except playwright_api.TimeoutError:
            if time.monotonic() > end:
                raise
            page.keyboard.press("Escape")


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
    idle(page)
    page.locator("input[type=file]").first.set_input_files(
        [str(ROOT / "sample_images" / n) for n in ("grace_hopper.jpg", "astronaut_eileen_collins.jpg")])
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_text("Verdict:").first.wait_for(timeout=180_000)
    idle(page)
    store = CaseStore(f"sqlite:///{db}")
    table = store.cases()
    assert len(table) == 2
    row = table[table["name"] == "grace_hopper.jpg"].iloc[0]
    wrong = "real" if row["verdict"] == "fake" else "fake"

    page.goto(server + "/cases")
    page.get_by_text("Cases shown").first.wait_for(timeout=90_000)
    idle(page)
    _wait_shown(page, "2 of 2")
    page.locator("[data-testid='stSelectbox']").filter(has_text="Open a case").click()
    page.get_by_role("option", name=f"grace_hopper.jpg · {row['sha256'][:12]}").click()
    idle(page)
    page.locator("[data-testid='stRadio']").filter(has_text="True label").get_by_text(wrong, exact=True).click()
    page.get_by_label("Note").fill("seen in the newsroom")
    page.get_by_role("button", name="Save label").click()
    page.get_by_text(f"labelled {wrong}").first.wait_for(timeout=60_000)
    idle(page)
    case = store.case(row["sha256"])
    assert case["true_label"] == wrong and case["note"] == "seen in the newsroom"

    _checkbox(page, "cases_disagreements").click()
    idle(page)
    _wait_shown(page, "1 of 2")  # the labelled case is a disagreement, the other is not reviewed
    _open_choices(page)
    assert page.get_by_role("option").all_inner_texts() == [f"grace_hopper.jpg · {row['sha256'][:12]}"]
    page.keyboard.press("Escape")
    _checkbox(page, "cases_disagreements").click()
    idle(page)
    _wait_shown(page, "2 of 2")
    _checkbox(page, "cases_unreviewed").click()
    idle(page)
    _wait_shown(page, "1 of 2")
    _open_choices(page)
    assert [t.split(" · ")[0] for t in page.get_by_role("option").all_inner_texts()] == ["astronaut_eileen_collins.jpg"]
    page.keyboard.press("Escape")
    no_exception(page)
