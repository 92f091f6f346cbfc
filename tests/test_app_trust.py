"""Dashboard: the example gallery's honest verdicts (demo mode) and what a verdict means at a prevalence.

A small real checkpoint stands in for the shipped model (its verdicts are arbitrary); expected words
are computed through the package (`examples.outcome_words` of the model's own p_fake), never written
down per image. Thresholds of 0.99 / 0.01 force every verdict to REAL / FAKE, so the count of misses
and false alarms is known by hand from examples.csv.
"""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from realitycheck.intake import examples as E  # noqa: E402
from tests.app_helpers import app_weights, texts  # noqa: E402
from tests.app_helpers import start_app as _app  # noqa: E402
from tests.helpers import REPO_ROOT as ROOT  # noqa: E402
from tests.helpers import save_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def rated_model(tmp_path_factory):
    """A checkpoint whose card records measured rates (90% detection, 2% false alarms at 0.5)."""
    folder = tmp_path_factory.mktemp("weights-trust")
    ckpt = save_tiny_checkpoint(folder / "rated.pt", name="rated",
                                metrics={"test": {"recall_fake": 0.9, "fpr": 0.02, "n_fake": 100, "n_real": 100,
                                                  "threshold": 0.5, "accuracy": 0.9, "roc_auc": 0.9, "n": 200}})
    with app_weights(ckpt):
        yield ckpt


def _texts(at: AppTest) -> str:
    return texts(at, "success")


def _demo(at: AppTest, threshold: float) -> AppTest:
    at.sidebar.slider(key="threshold").set_value(threshold).run()
    at.toggle(key="demo_mode").set_value(True).run()
    assert not at.exception, at.exception
    return at


def test_the_gallery_ships_fakes_and_reals_with_their_licences():
    shipped = E.load_examples(ROOT / "sample_images")
    assert all(e.label in ("real", "fake") for e in shipped), [e.path.name for e in shipped if e.label is None]
    fakes = [e for e in shipped if e.label == "fake"]
    assert len(fakes) >= 4 and {e.generator for e in fakes} >= {"SDXL", "FLUX.1 [schnell]"}
    assert all(e.licence and e.source for e in shipped)
    readme = (ROOT / "sample_images" / "README.md").read_text()
    assert "Copyright (c) 2024 David Beniaguev" in readme and "Lisa DeBruine and Benedict Jones" in readme
    assert all(e.path.name in readme for e in shipped)


def test_outcome_words():
    assert E.outcome_words("fake", "real").endswith("the model misses this one.")
    assert E.outcome_words("fake", "fake").endswith("caught.")
    assert E.outcome_words("real", "fake").endswith("a false alarm.")
    assert E.outcome_words("real", "real") == "The model calls this a real photo, and it is."
    assert E.outcome(None, "fake") is None


def test_demo_gallery_says_which_fakes_the_model_misses():
    from realitycheck.serving.app.gallery import (
        examples,  # sample_images/ and, when present, the seed examples
    )

    n_fake = sum(label == "fake" for _, label in examples())
    n_real = sum(label == "real" for _, label in examples())
    at = _demo(_app(), 0.99)  # every verdict REAL: every fake missed
    text = _texts(at)
    assert text.count("the model misses this one") == n_fake, text
    assert text.count("The model calls this a real photo, and it is.") == n_real
    at.toggle(key="demo_mode").set_value(False).run()
    at = _demo(at, 0.01)  # every verdict FAKE: every real photo a false alarm
    text = _texts(at)
    assert text.count("a false alarm") == n_real and text.count("and it is: caught.") == n_fake
    assert "misses this one" not in text


def test_demo_gallery_words_follow_the_models_own_verdicts(rated_model):
    from realitycheck.model.inference import load_classifier, verdict
    from realitycheck.serving.app.gallery import examples

    at = _demo(_app(), 0.5)
    clf = load_classifier(rated_model)
    items = examples()
    preds = clf.predict([str(path) for path, _ in items])
    expected = [E.outcome_words(label, verdict(p.p_fake, 0.5)) for (_, label), p in zip(items, preds)]
    shown = [m.value.strip("*").replace(":red[**", "").rstrip("]").rstrip("*") for m in at.markdown]
    for words in expected:
        assert any(words == s for s in shown), (words, shown)


def test_a_clicked_example_says_whether_its_verdict_is_right():
    from realitycheck.serving.app.gallery import examples

    items = examples()
    at = _demo(_app(), 0.99)
    i = next(i for i, (_, label) in enumerate(items) if label == "fake")
    at.button(key=f"example_{i}").click().run()
    assert not at.exception
    assert any("the model misses this one" in w.value for w in at.warning)
    # an upload of the same bytes has no known truth: no right/wrong line
    at.toggle(key="demo_mode").set_value(False).run()
    at.file_uploader(key="classify_files").set_value(
        [("mine.jpg", items[i][0].read_bytes(), "image/jpeg")])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert not at.exception
    assert not any("misses this one" in w.value for w in at.warning)


def test_prevalence_beside_each_verdict():
    at = _app()
    at.sidebar.slider(key="threshold").set_value(0.01).run()  # every verdict FAKE
    at.sidebar.select_slider(key="prevalence").set_value(0.001).run()
    sample = (ROOT / "sample_images" / "grace_hopper.jpg").read_bytes()
    at.file_uploader(key="classify_files").set_value([("g.jpg", sample, "image/jpeg")])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert not at.exception
    text = _texts(at)
    # 0.9 * 0.001 / (0.9 * 0.001 + 0.02 * 0.999) = 4.3%, and the rates hold at 0.5, not at 0.01
    assert "If 1 in 1,000 of the photos you check are fake, a FAKE verdict from this model is right 4.3%" in text
    assert "rough guide" in text
    at.sidebar.select_slider(key="prevalence").set_value(0.5).run()
    assert "If 50% of the photos you check are fake, a FAKE verdict from this model is right 97.8%" in _texts(at)


def test_about_page_links_the_responsible_use_guide():
    from tests.helpers import APP_PAGES

    guide = ROOT / "docs" / "responsible-use.md"
    assert guide.is_file()
    text = guide.read_text()
    for topic in ("What p_fake is", "base-rate", "Known blind spots", "Provenance versus pixels",
                  "Never the sole evidence", "Privacy", "Legal caveats"):
        assert topic in text, topic
    at = _app()
    at.switch_page(APP_PAGES["about"]).run()
    assert not at.exception
    assert any("docs/responsible-use.md" in str(e.label) for e in at.expander)
    shown = _texts(at)
    assert "Using it responsibly" in " ".join(h.value for h in at.header)
    assert "Never the sole evidence against a person" in shown  # the guide itself, rendered


def test_a_model_without_measured_rates_says_it_cannot_tell(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(tiny_checkpoint))  # its card records no test rates
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tiny_checkpoint.parent))
    at = _app()
    sample = (ROOT / "sample_images" / "grace_hopper.jpg").read_bytes()
    at.file_uploader(key="classify_files").set_value([("g.jpg", sample, "image/jpeg")])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert not at.exception
    assert "this model cannot tell how often its" in _texts(at)
    assert "records no measured detection and false-alarm rates" in _texts(at)


def test_sidebar_states_both_verdicts_chances():
    at = _app()
    at.sidebar.select_slider(key="prevalence").set_value(0.001).run()
    side = " ".join(c.value for c in at.sidebar.caption)
    assert "At 1 in 1,000: a FAKE verdict is right 4.3% of the time; a REAL verdict is right over 99.9%" in side
