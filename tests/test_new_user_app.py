"""What a new user tripped on (issue 30), on the dashboard (AppTest). The package rules behind these
pages are tested in tests/test_new_user.py; here: that each page shows them."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.app_helpers import classify as _classify  # noqa: E402
from tests.app_helpers import errors as _errors  # noqa: E402
from tests.app_helpers import start_app, texts  # noqa: E402
from tests.helpers import APP_PAGES as PAGES  # noqa: E402
from tests.helpers import folder_ranked_by, save_tiny_checkpoint  # noqa: E402
from tests.helpers import jpeg as _jpeg  # noqa: E402
from tests.test_new_user import _folder, two_faces  # noqa: E402

TIMEOUT = 180


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    save_tiny_checkpoint(folder / "a-low.pt", name="model-low", threshold=0.3,
                         training={"sources": ["studio", "newgen"]},
                         metrics={"test": {"per_source": [
                             {"source": "studio", "label": "real", "n": 50, "rate": 0.08, "ci95_low": 0.03,
                              "ci95_high": 0.19, "rate_name": "false-alarm rate"},
                             {"source": "newgen", "label": "fake", "n": 40, "rate": 0.55, "ci95_low": 0.4,
                              "ci95_high": 0.69, "rate_name": "detection rate"}]}})
    save_tiny_checkpoint(folder / "b-high.pt", name="model-high", threshold=0.8)
    return folder


@pytest.fixture(autouse=True)
def env(weights, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(weights / "a-low.pt"))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("REALITYCHECK_ROOTS", str(weights.parent))
    monkeypatch.delenv("REALITYCHECK_PUBLIC", raising=False)


@pytest.fixture
def aligned(weights, tmp_path, monkeypatch) -> Path:
    """The active model: the tiny checkpoint with face alignment (each face scored)."""
    from realitycheck.model import checkpoints

    model, card = checkpoints.load_checkpoint(weights / "a-low.pt")
    path = checkpoints.save_checkpoint(tmp_path / "aligned.pt", model,
                                       replace(card, name="aligned", preprocessing=replace(card.preprocessing,
                                                                                           align="face")))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(path))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tmp_path))
    return path


def _app() -> AppTest:
    return start_app(TIMEOUT)


def _texts(at) -> str:
    return texts(at, "subheader")


# 1 (and 15): each model at its own card's threshold; a common one only when asked; a zip works too
def test_compare_uses_each_models_own_threshold(weights, tmp_path):
    folder = _folder(weights.parent / "compare-set", per_class=3)
    at = _app()
    at.switch_page(PAGES["models"]).run()
    at.selectbox(key="compare_a").set_value(str(weights / "a-low.pt"))
    at.selectbox(key="compare_b").set_value(str(weights / "b-high.pt"))
    at.text_input(key="compare_folder").set_value(str(folder))
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    table = at.dataframe[-1].value
    assert list(table.loc["threshold"]) == ["0.3", "0.8"]
    assert any("each model at its own card's threshold (model-low (a-low.pt) 0.3, model-high (b-high.pt) 0.8)"
               in c.value for c in at.caption), [c.value for c in at.caption]
    at.checkbox(key="compare_common").check()
    at.number_input(key="compare_common_threshold").set_value(0.5)
    at.text_input(key="compare_folder").set_value("")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.jpg")):
            zf.writestr(f"set/{p.parent.name}/{p.name}", p.read_bytes())
    at.file_uploader(key="compare_zip").set_value(("set.zip", buf.getvalue(), "application/zip"))
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    table = at.dataframe[-1].value
    assert list(table.loc["threshold"]) == ["0.5", "0.5"] and list(table.loc["images scored"]) == ["6", "6"]
    assert any("one common threshold, 0.5 (chosen by you" in c.value for c in at.caption)


# 6: a table of the faces, and the user picks the face to explain
def test_a_group_photo_lists_its_faces_and_explains_the_chosen_one(aligned, tmp_path):
    at = _app()
    photo = two_faces(tmp_path / "pair.jpg").read_bytes()
    _classify(at, ("pair.jpg", photo, "image/jpeg"))
    assert not _errors(at), _errors(at)
    [faces] = [d.value for d in at.dataframe if "face" in d.value.columns]
    assert list(faces["face"]) == [1, 2] and {"size", "p(fake)", "unfamiliar", "decides"} <= set(faces.columns)
    assert (faces["decides"] == "yes").sum() == 1
    pick = next(s for s in at.selectbox if s.key.startswith("face_pick_"))
    deciding = int(faces.loc[faces["decides"] == "yes", "face"].item())
    assert pick.value == deciding
    other = 3 - deciding
    pick.set_value(other).run()
    assert not at.exception and not _errors(at)
    assert any(len(k) == 5 and k[4] == other - 1 for k in at.session_state["explanations"])  # that face explained


# 8: no face: the headline says unreliable, the caption what was scored
def test_no_face_is_headed_unreliable(aligned):
    at = _app()
    _classify(at, ("stripes.jpg", _jpeg(7, size=200), "image/jpeg"))
    text = _texts(at)
    assert "Unreliable: no face found" in text
    captions = [c for im in at.image for c in im.captions]
    assert any("whole image (centre crop; no face found) the model saw" in c for c in captions), captions
    assert not any("aligned face the model saw" in c for c in captions)


# 13 and 14: the heading counts failures; rows carry the card's flags; history counts images, lists evaluations
def test_summary_heading_counts_failures_and_history_counts_images_once(weights):
    at = _app()
    files = [("a.jpg", _jpeg(1), "image/jpeg"), ("b.jpg", _jpeg(2), "image/jpeg"),
             ("junk.jpg", b"not an image at all", "image/jpeg")]
    _classify(at, files)
    heading = at.subheader[0].value
    assert heading.startswith("3 images:") and heading.endswith(", 1 could not be read"), heading
    table = at.dataframe[0].value
    assert list(table["name"]) == ["a.jpg", "b.jpg"] and not table.isna().any().any()
    assert {"unfamiliar", "declares", "disagrees"} <= set(table.columns)
    _classify(at, files)  # the same images again
    assert len(at.session_state["history"]) == 2  # one row per image, not per click
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(_folder(weights.parent / "eval-set", per_class=2)))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    at.switch_page(PAGES["history"]).run()
    assert not at.exception
    assert any(s.value == "Evaluations (1)" for s in at.subheader)
    [runs] = [d.value for d in at.dataframe if "separation" in d.value.columns]
    assert runs["images"].tolist() == [4] and runs["model"].tolist() == ["model-low"]
    assert {m.label: m.value for m in at.metric}["Images checked"] == "2 images"


# 10: "Use" sets exactly the value shown, and says where it applies
def test_use_sets_exactly_the_shown_threshold(weights, tmp_path):
    from realitycheck.model.inference import Classifier

    root = folder_ranked_by(Classifier.from_file(weights / "a-low.pt", precision="fp32"), weights.parent / "ranked")
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(root))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    advice = at.session_state["evaluation"]["memo"]
    shown = next(iter(advice.values()))["threshold_advice"]
    [offer] = [m.value for m in at.markdown if "Best threshold" in m.value]
    assert f"**{shown['threshold']:g}**" in offer and "8 images (4 real, 4 fake)" in offer and "95% CI" in offer
    assert any("Applies to these results only" in c.value for c in at.caption)
    at.button(key="eval_use_best").click().run()
    assert at.slider(key="eval_threshold").value == shown["threshold"]
    assert at.slider(key="threshold").value == 0.3  # the sidebar's (Classify's) threshold is untouched


# 12: the About page's limitations are the active model's
def test_about_page_limitations_come_from_the_card():
    at = _app()
    at.switch_page(PAGES["about"]).run()
    text = _texts(at)
    assert "real photos from studio; AI-generated faces from newgen" in text
    assert "FFHQ** real faces" not in text and "shipped training data" not in text


# 16: green and red in the history's histogram, as About promises
def test_history_histogram_is_coloured_by_verdict():
    import pandas as pd

    from realitycheck.analysis import plots

    fig = plots.verdict_histogram(pd.DataFrame({"p_fake": [0.1, 0.2, 0.9], "label": ["real", "real", "fake"]}), 0.5)
    assert {t.marker.color for t in fig.data} == {plots.COLORS["real"], plots.COLORS["fake"]}


# 16: a download never reruns the page, so a second quick download still finds its deferred file
def test_downloads_do_not_rerun_the_page(weights):
    at = _app()
    _classify(at, ("a.jpg", _jpeg(1), "image/jpeg"))
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(_folder(weights.parent / "dl-set", per_class=2)))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    buttons = at.get("download_button")
    assert len(buttons) == 2 and all(b.proto.ignore_rerun for b in buttons)
    at.switch_page(PAGES["classify"]).run()
    buttons = at.get("download_button")
    assert buttons and all(b.proto.ignore_rerun for b in buttons)
