"""The Streamlit dashboard, driven headlessly with `streamlit.testing.v1.AppTest`.

The tests build a small real checkpoint rather than using the shipped model (fast, and independent of it);
(ImageNet-initialised EfficientNet-Lite0 with an untrained 2-class head, 80 px input) and point the
app at it with REALITYCHECK_WEIGHTS / REALITYCHECK_WEIGHTS_DIR, which the app reads at run time.
Verdicts are therefore arbitrary; the tests check behaviour, not accuracy.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from realitycheck.model import checkpoints  # noqa: E402
from tests.app_helpers import app_weights  # noqa: E402
from tests.app_helpers import classify as _classify  # noqa: E402
from tests.app_helpers import errors as _errors  # noqa: E402
from tests.app_helpers import start_app as _app  # noqa: E402
from tests.app_helpers import texts as _texts  # noqa: E402
from tests.helpers import APP_PAGES, REPO_ROOT, folder_ranked_by, save_tiny_checkpoint  # noqa: E402
from tests.helpers import jpeg as _jpeg  # noqa: E402

ROOT = REPO_ROOT
PAGES = APP_PAGES


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "test-lite0.pt", name="test-lite0",
                                training={"data": "none (test checkpoint)"},
                                metrics={"test": {"accuracy": 0.5, "roc_auc": 0.5, "n": 6}})


@pytest.fixture(scope="module", autouse=True)
def weights_env(ckpt):
    """Point the app at the test checkpoint for the whole module (restored afterwards)."""
    with app_weights(ckpt, roots=ckpt.parent.parent):  # server paths: the test's temporary folders
        yield


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(tmp_path / "absent.pt"))


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for label, noisy in (("real", False), ("fake", True)):
        (root / label).mkdir()
        for i in range(3):
            (root / label / f"{label}{i}.jpg").write_bytes(_jpeg(i + (10 if noisy else 0), noisy=noisy))
    (root / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # listed as failed
    return root


def _heatmaps(at: AppTest, method: str = "gradcam") -> list:
    """The original | heatmap panels on screen (example thumbnails are images too)."""
    return [im for im in at.image if any(f"{method} evidence for" in c for c in im.captions)]


# ---------------------------------------------------------------------------------------------
# empty states
# ---------------------------------------------------------------------------------------------

def test_no_weights_clear_message_and_every_page_renders(no_weights):
    at = _app()
    assert "No trained weights are present" in _texts(at)
    assert not at.file_uploader  # nothing to classify with: no uploader offered
    for page in PAGES.values():
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not _errors(at), (page, _errors(at))
        assert at.title, page


def test_every_page_renders_empty_with_weights():
    at = _app()
    assert "test-lite0" in _texts(at)  # sidebar: active model from the card
    for name, page in PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, (name, at.exception)
        assert not _errors(at), (name, _errors(at))
    at.switch_page(PAGES["history"]).run()
    assert "Nothing classified yet" in _texts(at)
    at.switch_page(PAGES["evaluate"]).run()
    assert "No evaluation yet" in _texts(at)


def test_about_page():
    at = _app()
    at.switch_page(PAGES["about"]).run()
    text = _texts(at)
    assert "CC BY-NC-SA 4.0" in text and "diffusion" in text
    assert [h.value for h in at.header][:2] == ["From photo to verdict", "What the numbers mean"]
    assert "the active model **test-lite0** is a `efficientnet_lite0` network reading 80 px" in text  # from the card
    assert "Lite0 or ResNet50" not in text


# ---------------------------------------------------------------------------------------------
# Classify
# ---------------------------------------------------------------------------------------------

# Known flake (2026-12-05): in about 1 of 4 runs of this file the faithfulness sentence is missing from the
# first render (no error shown); it did not reproduce in isolation. Rerun up to twice until its cause is
# found; the assertions are unchanged.
@pytest.mark.flaky(reruns=2)
def test_upload_gives_verdict_heatmap_and_cached_rerenders():
    at = _app()
    photo = (ROOT / "sample_images" / "grace_hopper.jpg").read_bytes()
    _classify(at, ("grace_hopper.jpg", photo, "image/jpeg"))
    assert not _errors(at), _errors(at)
    text = _texts(at)
    assert "REAL" in text or "FAKE" in text
    labels = {m.label: m.value for m in at.metric}
    assert labels["p(fake)"].endswith("%") and labels["p(real)"].endswith("%")
    assert labels["Time"].endswith(" ms")
    assert "Faithfulness" not in labels  # no bare "+3 points": a sentence instead
    text = _texts(at)
    assert "Does the heatmap matter to the model?" in text and "hiding a random 20%" in text
    assert "**Where:**" in text and ("the face" in text or "No face was found" in text)
    assert len(_heatmaps(at)) == 1  # the original | heatmap panel
    assert any("face" in c.value for c in at.caption) or any("face" in w.value.lower() for w in at.warning)
    assert len(at.session_state["history"]) == 1
    pred_before = next(iter(at.session_state["predictions"].values()))["pred"]

    at.selectbox(key="cam_method").set_value("gradcam++").run()
    assert not at.exception and not _errors(at)
    assert len(_heatmaps(at, "gradcam++")) == 1
    methods = {k[2] for k in at.session_state["explanations"]}
    assert {"gradcam", "gradcam++"} <= methods
    at.slider(key="cam_opacity").set_value(0.8).run()
    assert not at.exception and len(_heatmaps(at, "gradcam++")) == 1
    # neither change re-ran the classifier nor logged a new classification
    assert next(iter(at.session_state["predictions"].values()))["pred"] is pred_before
    assert len(at.session_state["history"]) == 1
    assert "scorecam" not in at.selectbox(key="cam_method").options  # slow methods need the opt-in


def test_slow_methods_need_opt_in_and_warn_before_running():
    at = _app()
    _classify(at, ("a.jpg", _jpeg(7), "image/jpeg"))
    at.checkbox(key="allow_slow_methods").check().run()
    assert "scorecam" in at.selectbox(key="cam_method").options
    at.selectbox(key="cam_method").set_value("scorecam").run()
    assert not at.exception and not _errors(at)
    assert any("scorecam is slow" in w.value for w in at.warning)
    assert not _heatmaps(at, "scorecam")  # nothing computed until the user asks
    assert any(b.label == "Compute the scorecam heatmap" for b in at.button)
    at.checkbox(key="allow_slow_methods").uncheck().run()
    assert at.selectbox(key="cam_method").value == "gradcam"


def test_compare_methods_grid():
    at = _app()
    _classify(at, ("a.jpg", _jpeg(8), "image/jpeg"))
    label = at.button(key="compare_run").label
    assert "s in all on this machine" in label and "a second each" not in label  # a measured estimate
    at.button(key="compare_run").click().run()
    assert not at.exception and not _errors(at)
    grid = [c for im in at.image for c in im.captions if c in ("gradcam++", "hirescam", "eigencam")]
    assert len(grid) == 3


def test_garbage_upload_shows_clear_error():
    at = _app()
    _classify(at, [("garbage.jpg", b"this is not an image at all", "image/jpeg"),
                   ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")])
    errs = _errors(at)
    assert any("garbage.jpg" in e and "not an image" in e for e in errs), errs
    assert any("cut.png" in e for e in errs), errs
    assert all("Traceback" not in e for e in errs)
    assert at.session_state["history"] == []


def test_example_click_and_demo_mode():
    at = _app()
    at.toggle(key="demo_mode").set_value(True).run()
    assert not at.exception
    assert not at.sidebar.slider  # settings hidden in demo mode
    at.button(key="example_0").click().run()
    assert not at.exception and not _errors(at)
    text = _texts(at)
    assert len([im for im in at.image if any("to the model (red = most)" in c for c in im.captions)]) == 1
    assert "What the model looked at" in text
    assert "font-size:3.2rem" in text  # the large verdict
    at.toggle(key="demo_mode").set_value(False).run()
    assert at.sidebar.slider(key="threshold").value == 0.5  # kept while hidden


def test_threshold_slider_changes_verdict_without_rerunning():
    at = _app()
    _classify(at, ("a.jpg", _jpeg(1), "image/jpeg"))
    pred = next(iter(at.session_state["predictions"].values()))["pred"]
    at.sidebar.slider(key="threshold").set_value(0.01).run()
    assert "Verdict: FAKE" in _texts(at)
    at.sidebar.slider(key="threshold").set_value(0.99).run()
    assert "Verdict: REAL" in _texts(at)
    assert next(iter(at.session_state["predictions"].values()))["pred"] is pred


# ---------------------------------------------------------------------------------------------
# Session history
# ---------------------------------------------------------------------------------------------

def test_session_history_two_rows_chart_and_clear():
    at = _app()
    _classify(at, [("one.jpg", _jpeg(2), "image/jpeg"), ("two.jpg", _jpeg(3), "image/jpeg")])
    at.switch_page(PAGES["history"]).run()
    assert not at.exception and not _errors(at)
    df = at.dataframe[0].value
    assert len(df) == 2 and list(df["name"]) == ["one.jpg", "two.jpg"]
    assert str(df["thumbnail"].iloc[0]).startswith("data:image/jpeg;base64,")
    assert len(at.get("plotly_chart")) >= 3
    assert at.get("download_button")
    at.button(key="history_clear").click().run()
    assert "Nothing classified yet" in _texts(at)


def test_unexpected_failure_shows_one_line_not_a_traceback(monkeypatch):
    from realitycheck.analysis import plots

    def broken(*a, **k):
        raise RuntimeError("chart backend exploded\nsecond line of detail")

    at = _app()
    _classify(at, ("a.jpg", _jpeg(11), "image/jpeg"))
    monkeypatch.setattr(plots, "confidence_timeline", broken)
    at.switch_page(PAGES["history"]).run()
    assert not at.exception
    errs = _errors(at)
    assert errs == ["Something went wrong in the Session history page: chart backend exploded"], errs
    assert any(e.label == "Details" for e in at.expander)
    at.switch_page(PAGES["classify"]).run()  # the rest of the app still works
    assert not at.exception and not _errors(at)


def test_two_sessions_keep_separate_histories():
    a, b = _app(), _app()
    _classify(a, ("a.jpg", _jpeg(4), "image/jpeg"))
    _classify(b, [("b1.jpg", _jpeg(5), "image/jpeg"), ("b2.jpg", _jpeg(6), "image/jpeg")])
    assert [h["name"] for h in a.session_state["history"]] == ["a.jpg"]
    assert [h["name"] for h in b.session_state["history"]] == ["b1.jpg", "b2.jpg"]
    a.switch_page(PAGES["history"]).run()
    assert len(a.dataframe[0].value) == 1


# ---------------------------------------------------------------------------------------------
# Evaluate
# ---------------------------------------------------------------------------------------------

def test_evaluate_folder_metrics_charts_and_live_threshold(labelled_folder, monkeypatch):
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(labelled_folder))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception, at.exception
    labels = {m.label: m.value for m in at.metric}
    for name in ("Accuracy", "ROC-AUC", "Precision (fake)", "Recall (fake)", "F1 (fake)",
                 "False-alarm rate (real)", "Images scored"):
        assert name in labels, labels
    assert labels["Images scored"] == "6 images"
    assert labels["Accuracy"].endswith("%")
    assert len(at.get("plotly_chart")) >= 5
    text = _texts(at)  # the untrained head ranks these either way: a threshold is offered or plainly refused
    assert "Best threshold for balanced accuracy" in text or "No threshold is suggested" in text
    assert any("could not be scored" in e.label for e in at.expander)  # broken.jpg
    assert len(at.get("download_button")) >= 2
    run_id = at.session_state["evaluation"]["id"]

    from realitycheck.model.inference import Classifier

    def boom(*a, **k):
        raise AssertionError("the model must not run again when the threshold moves")

    monkeypatch.setattr(Classifier, "iter_predict", boom)
    at.slider(key="eval_threshold").set_value(0.01).run()
    assert not at.exception and not _errors(at)
    low = {m.label: m.value for m in at.metric}
    assert low["Recall (fake)"] == "100.0%" and low["False-alarm rate (real)"] == "100.0%"
    at.slider(key="eval_threshold").set_value(0.99).run()
    high = {m.label: m.value for m in at.metric}
    assert high["False-alarm rate (real)"] == "0.0%"
    assert at.session_state["evaluation"]["id"] == run_id


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_evaluate_zip_upload_and_refused_zip(labelled_folder):
    pytest.importorskip("realitycheck.intake.uploads")
    members = {f"set/{p.parent.name}/{p.name}": p.read_bytes()
               for p in sorted(labelled_folder.rglob("*.jpg")) if p.name != "broken.jpg"}
    members["set/readme.txt"] = b"not an image"
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.radio(key="eval_source").set_value("Zip file upload").run()
    at.file_uploader(key="eval_zip").set_value(("set.zip", _zip(members), "application/zip"))
    at.button(key="FormSubmitter:eval_zip_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert {m.label: m.value for m in at.metric}["Images scored"] == "6 images"
    assert any("skipped" in e.label for e in at.expander)  # readme.txt
    tmp = at.session_state["evaluation"]["tmp"]
    assert Path(tmp.name).is_dir()

    at.file_uploader(key="eval_zip").set_value(("evil.zip", _zip({"../evil.jpg": _jpeg(1)}), "application/zip"))
    at.button(key="FormSubmitter:eval_zip_form-Evaluate").click().run()
    assert not at.exception
    assert any("climbs out" in e for e in _errors(at)), _errors(at)
    assert at.session_state["evaluation"]["tmp"] is tmp  # the earlier results stay


def test_evaluate_uploaded_files_labelled_by_box():
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.radio(key="eval_source").set_value("Image files upload").run()
    at.file_uploader(key="eval_files_real").set_value([(f"r{i}.jpg", _jpeg(20 + i), "image/jpeg") for i in range(2)])
    at.file_uploader(key="eval_files_fake").set_value([(f"f{i}.jpg", _jpeg(30 + i, noisy=True), "image/jpeg")
                                                       for i in range(2)])
    at.button(key="FormSubmitter:eval_files_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    table = at.session_state["evaluation"]["result"].table
    assert sorted(table["true_label"]) == ["fake", "fake", "real", "real"]


def test_session_upload_budget_is_enforced():
    at = _app()
    at.session_state["uploaded_bytes"] = 200 * 1024 * 1024 - 100
    _classify(at, ("big.jpg", _jpeg(9), "image/jpeg"))
    assert any("per session" in e for e in _errors(at)), _errors(at)
    assert at.session_state["history"] == []


def test_evaluate_bad_folder_clear_error(tmp_path):
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(tmp_path))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception
    assert any("found no class folders" in e for e in _errors(at)), _errors(at)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def test_models_page_lists_checkpoint_and_rejects_bad_files(ckpt, tmp_path):
    at = _app()
    at.switch_page(PAGES["models"]).run()
    assert not at.exception
    radio = at.radio(key="models_active_radio")
    assert "test-lite0 (test-lite0.pt)" in radio.options  # options are shown by card name (file)
    assert Path(radio.value).resolve() == ckpt.resolve()
    assert any("test-lite0" in e.label for e in at.expander)
    assert any("# Model card: test-lite0" in m.value for m in at.markdown)

    at.file_uploader(key="model_upload").set_value(("bad.pt", b"hello, not weights", "application/octet-stream"))
    at.button(key="FormSubmitter:model_upload_form-Load uploaded checkpoint").click().run()
    assert not at.exception
    assert any("not a PyTorch weights file" in e for e in _errors(at)), _errors(at)

    at.text_input(key="model_path").set_value(str(tmp_path / "missing.pt"))
    at.button(key="FormSubmitter:model_path_form-Load from path").click().run()
    assert not at.exception
    assert any("no such file" in e for e in _errors(at)), _errors(at)
    assert at.session_state["extra_models"] == []


def test_models_page_load_by_path_and_compare(ckpt, labelled_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy.pt"
    shutil.copy(ckpt, copy)
    at = _app()
    _classify(at, ("a.jpg", _jpeg(12), "image/jpeg"))
    at.switch_page(PAGES["models"]).run()
    at.text_input(key="model_path").set_value(str(copy))
    at.button(key="FormSubmitter:model_path_form-Load from path").click().run()
    assert not at.exception and not _errors(at)
    assert "made it the active model" in " ".join(s.value for s in at.success)
    assert at.session_state["active_model"] == str(copy.resolve())
    assert "copy.pt" in " ".join(m.value for m in at.sidebar.markdown)  # the sidebar follows
    at.switch_page(PAGES["classify"]).run()
    assert "active model has changed" in _texts(at)  # no stale verdicts from the previous model
    assert not _heatmaps(at)
    at.switch_page(PAGES["models"]).run()
    at.text_input(key="compare_folder").set_value(str(labelled_folder))
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    assert not at.exception and not _errors(at)
    table = at.dataframe[-1].value  # one column per model, one row per measure
    assert len(table.columns) == 2 and "ROC-AUC" in table.index and "false-alarm rate (real)" in table.index
    assert len(at.get("plotly_chart")) >= 2


def test_bad_input_corpus_through_the_upload(tmp_path):
    """Every uploadable case of the generated corpus: a verdict or one clear error line, never an exception."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bad_inputs_corpus import upload_cases

    from realitycheck.serving.app import inputs

    # The uploader only admits image extensions (Streamlit enforces it server-side too), so a .pdf or
    # .svg never reaches the app; everything else, including garbage named .jpg, does.
    allowed = {"." + t.lower() for t in inputs.IMAGE_TYPES}
    cases = [c for c in upload_cases(tmp_path) if Path(c.filename).suffix.lower() in allowed]
    assert len(cases) >= 40
    at = _app()
    for start in range(0, len(cases), 8):
        chunk = cases[start:start + 8]
        _classify(at, [(c.filename, c.data, "application/octet-stream") for c in chunk])
        errors = _errors(at)
        for c in chunk:
            mine = [e for e in errors if c.filename in e]
            if c.expect == "error":
                assert mine, f"{c.name}: no error shown for {c.filename}"
                assert all("Traceback" not in e for e in mine)
                if c.error_has:
                    assert any(c.error_has.lower() in e.lower() for e in mine), (c.name, mine)
            else:
                assert not mine, f"{c.name}: unexpected error {mine}"
    _classify(at, [("good.jpg", (ROOT / "sample_images" / "grace_hopper.jpg").read_bytes(), "image/jpeg")])
    assert not _errors(at) and len(at.session_state["history"]) > 0  # the app survives to classify a good image


# ---------------------------------------------------------------------------------------------
# Issue 14: what a new user hit
# ---------------------------------------------------------------------------------------------

def _mistake_pick_key(at: AppTest) -> str:
    return next(s.key for s in at.selectbox if s.key and s.key.startswith("eval_error_pick"))


def test_second_evaluation_in_a_session_keeps_the_mistakes_browser_working(labelled_folder):
    """Folder, then zip in the same session: the mistakes browser must follow the new run (it crashed)."""
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(labelled_folder))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    at.slider(key="eval_threshold").set_value(0.01).run()  # every real image is now a mistake
    assert not at.exception and not _errors(at), _errors(at)
    at.selectbox(key=_mistake_pick_key(at)).set_value(str(labelled_folder / "real" / "real2.jpg")).run()
    assert not at.exception and not _errors(at), _errors(at)

    members = {f"other/{p.parent.name}/{p.name}": p.read_bytes()
               for p in sorted(labelled_folder.rglob("*.jpg")) if p.name != "broken.jpg"}
    at.radio(key="eval_source").set_value("Zip file upload").run()
    at.file_uploader(key="eval_zip").set_value(("set.zip", _zip(members), "application/zip"))
    at.button(key="FormSubmitter:eval_zip_form-Evaluate").click().run()
    at.slider(key="eval_threshold").set_value(0.01).run()
    assert not at.exception and not _errors(at), _errors(at)
    pick = at.selectbox(key=_mistake_pick_key(at))
    assert pick.value in set(at.session_state["evaluation"]["result"].table["path"])  # the new run's, not the old
    # the picked mistake is shown once: as the left half of the original | heatmap panel
    shown = [im for im in at.image if any("evidence" in c for c in im.captions)]
    assert len(shown) == 1
    assert not [im for im in at.image if any(c.startswith("true ") for c in im.captions)]


def test_same_file_twice_in_one_submit_is_shown_once_without_a_key_clash():
    at = _app()
    data = _jpeg(13)
    _classify(at, [("twice.jpg", data, "image/jpeg"), ("twice.jpg", data, "image/jpeg"),
                   ("other.jpg", _jpeg(14), "image/jpeg")])
    assert not _errors(at), _errors(at)
    assert len(_heatmaps(at)) == 2
    assert any("twice.jpg" in t and "once" in t for t in _texts(at).splitlines()), _texts(at)


def test_heatmap_can_show_evidence_for_either_class_and_says_which():
    at = _app()
    _classify(at, ("a.jpg", _jpeg(15), "image/jpeg"))
    verdict = next(iter(at.session_state["predictions"].values()))["pred"].label
    other = "real" if verdict == "fake" else "fake"
    assert at.radio(key="cam_evidence").value == "verdict"  # default: the verdict's class
    assert any(f"evidence for '{verdict}' (the verdict)" in c for im in _heatmaps(at) for c in im.captions)
    at.radio(key="cam_evidence").set_value(other).run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any(f"evidence for '{other}' (not the verdict)" in c for im in _heatmaps(at) for c in im.captions)
    assert {k[3] for k in at.session_state["explanations"]} == {verdict, other}
    # demo mode keeps the choice, in plain words
    at.toggle(key="demo_mode").set_value(True).run()
    radio = at.radio(key="cam_evidence")
    assert set(radio.options) == {"what supports the verdict", "what looks generated", "what looks real"}
    look = "generated" if other == "fake" else "real"
    assert any(f"what looks {look} to the model" in c for im in at.image for c in im.captions)
    assert "evidence for" not in " ".join(c for im in at.image for c in im.captions)


def test_evaluate_says_plainly_when_the_model_cannot_tell(tmp_path):
    """The same photos on both sides: ROC-AUC 0.5 exactly. No ordinary cards, no threshold offered."""
    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
        for i in range(4):
            (tmp_path / label / f"{i}.jpg").write_bytes(_jpeg(40 + i))
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(tmp_path))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("cannot tell real from AI-generated" in w.value for w in at.warning), [w.value for w in at.warning]
    auc = next(m for m in at.metric if m.label == "ROC-AUC")
    assert auc.value == "0.500" and "guessing" in str(auc.proto.delta)
    assert not [b for b in at.button if b.key == "eval_use_best"]
    assert "No threshold is suggested" in _texts(at)


def test_best_threshold_is_offered_with_its_false_alarm_and_miss_rates(ckpt, tmp_path):
    """Photos split by the model's own ranking (lower half 'real'), so it separates them by construction."""
    from realitycheck.model.inference import Classifier

    folder_ranked_by(Classifier.from_file(ckpt, precision="fp32"), tmp_path)
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(tmp_path))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at)
    offers = [m.value for m in at.markdown if "Best threshold" in m.value]
    assert offers and "false alarms" in offers[0] and "missed" in offers[0], offers
    assert [b for b in at.button if b.key == "eval_use_best"]
    assert not any("cannot tell" in w.value for w in at.warning)


def test_separation_verdicts():
    from realitycheck.analysis import metrics as M

    assert M.separation({"roc_auc": 0.485, "ci95": {"roc_auc": [0.30, 0.66]}})[0] == "chance"
    assert M.separation({"roc_auc": 0.97, "ci95": {"roc_auc": [0.95, 0.99]}})[0] == "separates"
    assert M.separation({"roc_auc": 0.2, "ci95": {"roc_auc": [0.1, 0.35]}})[0] == "reversed"
    assert M.separation({"roc_auc": None})[0] == "unknown"
    assert M.separation({"roc_auc": 0.7, "ci95": {"roc_auc": None}})[0] == "separates"


def test_no_paths_of_the_developers_machine_in_the_interface(no_weights):
    """A newcomer has no ../shared: no page, placeholder or sidebar line may point there."""
    at = _app()
    seen = []
    for page in PAGES.values():
        at.switch_page(page).run()
        seen += [_texts(at)] + [t.placeholder or "" for t in at.text_input]
        seen += [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]
    assert not [t for t in seen if "shared/" in t or "../" in t]


def test_sidebar_names_the_data_its_test_metrics_come_from(ckpt, tmp_path, monkeypatch):
    card = checkpoints.read_card(ckpt)
    card.training = {"data": "/home/someone/../shared/data/faces-140k-sample",
                     "extra_real": ["../shared/data/real-world-faces/"]}
    model, _ = checkpoints.load_checkpoint(ckpt)
    path = checkpoints.save_checkpoint(tmp_path / "named.pt", model, card)
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(path))
    at = _app()
    side = " ".join(c.value for c in at.sidebar.caption)
    assert "Training data: faces-140k-sample + real-world-faces" in side
    assert "Measured on 6 held-out test images of faces-140k-sample + real-world-faces" in side
    assert "shared" not in side


def test_several_images_get_a_summary_table_before_the_cards():
    at = _app()
    _classify(at, [(f"m{i}.jpg", _jpeg(50 + i), "image/jpeg") for i in range(3)])
    assert not _errors(at), _errors(at)
    table = at.dataframe[0].value
    assert list(table["name"]) == ["m0.jpg", "m1.jpg", "m2.jpg"]
    assert {"image", "verdict", "p_fake", "faces", "ms"} <= set(table.columns)
    assert str(table["image"].iloc[0]).startswith("data:image/jpeg;base64,")
    assert all(v.split(" ")[0] in ("REAL", "FAKE") for v in table["verdict"])  # "(no face: unreliable)" may follow
    preds = [r["pred"].p_fake for r in at.session_state["predictions"].values()]
    assert sorted(table["p_fake"]) == sorted(preds)
    assert len(_heatmaps(at)) == 3  # the cards still follow
    _classify(at, ("one.jpg", _jpeg(60), "image/jpeg"))
    assert not at.dataframe  # one image: just its card


def test_html_report_puts_metrics_before_the_model_card(labelled_folder, ckpt, tmp_path):
    from realitycheck.analysis import evaluate
    from realitycheck.model.inference import Classifier

    clf = Classifier.from_file(ckpt, precision="fp32")
    result = evaluate.evaluate_folder(clf, labelled_folder, workers=0)
    html = evaluate.write_report(tmp_path / "r.html", clf, result, threshold=clf.threshold).read_text()
    order = [html.index(h) for h in ("<h2>Summary</h2>", "<h2>Metrics</h2>", "<h2>Plots</h2>", "<h2>Model</h2>")]
    assert order == sorted(order)


def test_curve_legends_sit_below_the_plot():
    from realitycheck.analysis import metrics as M
    from realitycheck.analysis import plots

    c = M.curves(["real", "fake"] * 5, [0.1, 0.9, 0.2, 0.8, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55])
    name = "a model with a long name (a-long-file-name-for-its-weights.pt)"
    for fig in (plots.roc_fig({name: c}), plots.pr_fig({name: c}), plots.calibration_fig({name: c})):
        assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0, fig.layout.title.text
    count_axis = plots.calibration_fig({name: c}).layout.yaxis2  # whole photos per bin, evenly spaced
    assert count_axis.tickmode == "linear" and count_axis.dtick == 1 and count_axis.tickformat == "d"
    assert [plots._count_step(n) for n in (0, 5, 7, 13, 40, 110, 600)] == [1, 1, 2, 5, 10, 20, 100]


def test_demo_mode_speaks_plainly_throughout():
    at = _app()
    at.toggle(key="demo_mode").set_value(True).run()
    at.button(key="example_0").click().run()
    _classify(at, [("one.jpg", _jpeg(70), "image/jpeg"), ("two.jpg", _jpeg(71), "image/jpeg")])
    assert not _errors(at), _errors(at)
    shown = _texts(at) + " ".join(c for im in at.image for c in im.captions)
    shown += " ".join(str(e.label) for e in at.expander) + " ".join(str(r.label) for r in at.radio)
    for jargon in ("p(fake)", "gradcam", "threshold", "evidence for", "Faithfulness", "points"):
        assert jargon not in shown, jargon
    assert "likely AI-generated" in shown and "what looks" in shown
    assert "likely AI-generated" in str(at.dataframe[0].proto.columns)  # the table's column, in words


def test_uploads_become_a_labelled_folder_with_safe_unique_names(tmp_path):
    from realitycheck.intake import uploads
    from realitycheck.intake.data import discover

    root = uploads.write_labelled_folder({"real": [("../../a.jpg", _jpeg(1)), ("a.jpg", _jpeg(2))],
                                          "fake": [("b c.jpg", _jpeg(3))]}, tmp_path)
    found = sorted((p.name, label) for p, label in discover(root))
    assert found == [("00000_a.jpg", "real"), ("00000_b_c.jpg", "fake"), ("00001_a.jpg", "real")]
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in tmp_path.rglob("*"))


def test_compare_models_is_a_package_function(ckpt, labelled_folder):
    from realitycheck.analysis import evaluate
    from realitycheck.model.inference import Classifier

    seen = []
    comp = evaluate.compare_models({"a": Classifier.from_file(ckpt), "b": Classifier.from_file(ckpt, threshold=0.3)},
                                   labelled_folder, threshold=0.5, workers=0,
                                   progress=lambda name, d, t: seen.append(name))
    assert [r["model"] for r in comp["rows"]] == ["a", "b"] and set(comp["curves"]) == {"a", "b"}
    assert comp["rows"][0]["roc_auc"] == comp["rows"][1]["roc_auc"]  # same weights, same data
    assert comp["rows"][0]["images"] == 6 and seen and set(seen) == {"a", "b"}


def test_evaluate_shows_each_source_of_a_folder(tmp_path):
    for sub in ("real", "fake/genA", "fake/genB"):
        (tmp_path / "set" / sub).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "set" / sub / f"{sub.replace('/', '_')}{i}.jpg").write_bytes(_jpeg(hash(sub) % 97 + i))
    at = _app()
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(tmp_path / "set"))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at)
    [df] = [d.value for d in at.dataframe if "measures" in d.value.columns]
    assert set(df["source"]) == {"real", "genA", "genB"}
    assert set(df.loc[df["class"] == "fake", "measures"]) == {"detection rate"}
    assert df.loc[df["source"] == "real", "measures"].item() == "false-alarm rate"


def test_an_unfamiliar_image_is_said_to_be_so(ckpt, tmp_path, monkeypatch):
    import numpy as np

    from realitycheck.model import checkpoints
    from realitycheck.model.ood import OODStats

    stats = OODStats.fit(np.random.default_rng(0).normal(size=(40, 1280)), n_components=4)
    stats.threshold = 0.0  # everything is unfamiliar to this model
    model, card = checkpoints.load_checkpoint(ckpt)
    path = checkpoints.save_checkpoint(tmp_path / "ood.pt", model, card, extras={"ood": stats.to_tensors()})
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(path))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tmp_path))
    at = _classify(_app(), [("a.jpg", _jpeg(3), "image/jpeg")])
    assert any("unfamiliar image" in w.value.lower() for w in at.warning), [w.value for w in at.warning]


def test_the_sidebar_threshold_starts_at_the_models_own(ckpt, tmp_path, monkeypatch):
    """A card's threshold (chosen on its validation data) is the dashboard's, so the app and the CLI agree."""
    from realitycheck.model import checkpoints

    model, card = checkpoints.load_checkpoint(ckpt)
    card.threshold = 0.8565
    path = checkpoints.save_checkpoint(tmp_path / "tuned.pt", model, card)
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(path))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tmp_path))
    at = _app()
    assert at.slider(key="threshold").value == pytest.approx(0.8565)
    at = _classify(at, [("a.jpg", _jpeg(5), "image/jpeg")])
    assert any("threshold 0.8565" in c.value for c in at.caption), \
        [c.value for c in at.caption]
