"""End-to-end (issue 30): what a new user met, in a real browser: the comparison's thresholds, the
public-mode batch limit and the per-face table. Run alone with `pytest -m e2e tests/test_e2e_new_user.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.e2e_helpers import (
    idle,
    local_streamlit,
    main_text,
    no_exception,
    streamlit_server,
    wait_for_count,
)
from tests.helpers import REPO_ROOT as ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shipped() -> Path:
    from realitycheck.model.inference import default_weights_path, list_weights

    path = default_weights_path()
    if not path.is_file() or len(list_weights()) < 2:
        pytest.skip("needs the shipped weights (two models to compare, an aligned default for the face table)")
    return path


@pytest.fixture(scope="module")
def local_server(shipped, tmp_path_factory):
    with local_streamlit(shipped, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def public_server(shipped, tmp_path_factory):
    config = tmp_path_factory.mktemp("public") / "realitycheck.toml"
    config.write_text("[realitycheck]\npublic = true\nclassifications_per_minute = 2\n")
    with streamlit_server({"REALITYCHECK_WEIGHTS": str(shipped), "REALITYCHECK_CONFIG": str(config)}) as url:
        yield url


def _photos(folder: Path, n: int) -> list[Path]:
    """n distinct face photos (the sample portraits, turned a little)."""
    folder.mkdir(parents=True, exist_ok=True)
    srcs = [Image.open(ROOT / "sample_images" / f).convert("RGB") for f in ("grace_hopper.jpg",
                                                                          "astronaut_eileen_collins.jpg")]
    out = []
    for i in range(n):
        p = folder / f"photo{i}.jpg"
        srcs[i % 2].rotate(3 * (i // 2)).save(p, quality=90)
        out.append(p)
    return out


def test_comparison_scores_each_model_at_its_own_threshold(local_server, page, tmp_path):
    from realitycheck.model.checkpoints import read_card
    from realitycheck.model.inference import list_weights

    for label in ("real", "fake"):
        _photos(tmp_path / "set" / label, 2)
    a, b = list_weights()[:2]  # the page's default pair: the first two models listed
    expected = {p: read_card(p) for p in (a, b)}
    page.goto(local_server + "/models")
    page.get_by_text("Compare two models").first.wait_for(timeout=90_000)
    idle(page)
    box = page.get_by_label("Labelled folder or CSV on the server", exact=True).and_(page.locator("input"))
    box.fill(str(tmp_path / "set"))
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("each model at its own card's threshold (").first.wait_for(timeout=300_000)  # the result
    idle(page)
    text = main_text(page)
    for p, card in expected.items():
        assert f"{card.name} ({p.name}) {card.threshold:g}" in text, (p.name, card.threshold)
    assert "at threshold 0.77" not in text  # the old caption: one (the active model's) threshold for both
    no_exception(page)


def test_public_mode_scores_a_batch_up_to_the_limit_and_says_what_is_left(public_server, page, tmp_path):
    photos = _photos(tmp_path, 3)
    page.goto(public_server)
    page.get_by_text("Classify face photos").first.wait_for(timeout=90_000)
    idle(page)
    page.locator("input[type=file]").first.set_input_files([str(p) for p in photos])
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_text("1 was left for later").first.wait_for(timeout=300_000)
    wait_for_count(page, "Verdict: ", 2)
    idle(page)
    text = main_text(page)
    assert "2 of these 3 were classified now" in text and "Submit it again in" in text
    assert text.count("Verdict: ") == 2  # the two within the budget were scored and shown


def test_a_group_photo_gets_a_face_table_and_a_face_to_explain(local_server, page, tmp_path):
    from tests.test_new_user import two_faces

    photo = two_faces(tmp_path / "pair.jpg")
    page.goto(local_server)
    page.get_by_text("Classify face photos").first.wait_for(timeout=90_000)
    idle(page)
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_text("Explain face").first.wait_for(timeout=300_000)
    idle(page)
    text = main_text(page)
    assert "2 faces found" in text and "Faces by number" in text
    pick = page.locator("[data-testid='stSelectbox']").filter(has_text="Explain face").first
    shown = pick.inner_text() + " " + " ".join(i.input_value() for i in pick.locator("input").all())
    assert "decides the verdict" in shown, shown  # the deciding face is the one explained first
    assert page.locator("[data-testid='stDataFrame']").count() == 1  # one photo: no summary table, the face table
    no_exception(page)
