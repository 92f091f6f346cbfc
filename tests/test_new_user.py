"""What a new user tripped on (issue 30), package and CLI side: every rule here is the package's, so the
CLI, JSON, report and dashboard say the same. Dashboard behaviour is in tests/test_new_user_app.py."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realitycheck.serving import cli
from tests.helpers import jpeg as _jpeg

ROOT = Path(__file__).resolve().parent.parent


def _folder(root: Path, per_class: int = 3, broken: bool = False, same: bool = False) -> Path:
    """real/ and fake/; `same`: fake/ holds the very images of real/ (a mislabelled set: chance level)."""
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            seed = i if (same or label == "real") else 100 + i
            (root / label / f"{label}{i}.jpg").write_bytes(_jpeg(seed, noisy=label == "fake" and not same))
    if broken:
        (root / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
        (root / "real" / "empty.jpg").write_bytes(b"")
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# 1. a comparison scores each model at its own threshold
# ---------------------------------------------------------------------------------------------

def test_compare_scores_each_model_at_its_own_threshold(tiny_checkpoint, tmp_path):
    from realitycheck.analysis import evaluate
    from realitycheck.model.inference import Classifier

    folder = _folder(tmp_path / "set", per_class=4)
    low = Classifier.from_file(tiny_checkpoint, precision="fp32", threshold=0.2)
    high = Classifier.from_file(tiny_checkpoint, precision="fp32", threshold=0.8)
    comp = evaluate.compare_models({"low": low, "high": high}, folder, workers=0)
    assert comp["threshold"] is None and comp["thresholds"] == {"low": 0.2, "high": 0.8}
    rows = {r["model"]: r for r in comp["rows"]}
    for name, clf in (("low", low), ("high", high)):
        alone = evaluate.evaluate_folder(clf, folder, workers=0).summary(clf.threshold)  # as `evaluate` scores it
        assert rows[name]["threshold"] == clf.threshold
        assert rows[name]["accuracy"] == alone["accuracy"] and rows[name]["recall_fake"] == alone["recall_fake"]
    # one common threshold only when asked, and then for both
    same = evaluate.compare_models({"low": low, "high": high}, folder, threshold=0.5, workers=0)
    assert same["threshold"] == 0.5 and {r["threshold"] for r in same["rows"]} == {0.5}
    assert same["rows"][0]["accuracy"] == same["rows"][1]["accuracy"]


# ---------------------------------------------------------------------------------------------
# 2. thresholds outside [0, 1] are refused
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["2", "-1", "nan", "1.0001"])
def test_threshold_outside_0_1_is_a_usage_error(bad, tiny_checkpoint, capsys):
    for command in (["predict", ROOT / "sample_images" / "grace_hopper.jpg"], ["evaluate", "somewhere"],
                    ["explain", "x.jpg", "--out", "o"]):
        code, out, err = _run(capsys, *command, "--weights", tiny_checkpoint, f"--threshold={bad}")
        assert code == 2, (command, err)
        assert "between 0 and 1" in err and "Traceback" not in err and not out


def test_threshold_rule_is_the_packages(tiny_checkpoint, tmp_path):
    from realitycheck.analysis import evaluate
    from realitycheck.model.inference import Classifier, ThresholdError, check_threshold

    assert check_threshold(0) == 0.0 and check_threshold("1") == 1.0 and check_threshold(0.7745) == 0.7745
    for bad in (2, -1, float("nan"), "x", None):
        with pytest.raises(ThresholdError):
            check_threshold(bad)
    with pytest.raises(ThresholdError):
        Classifier.from_file(tiny_checkpoint, threshold=2)
    clf = Classifier.from_file(tiny_checkpoint)
    with pytest.raises(ThresholdError):
        clf.predict_one(str(ROOT / "sample_images" / "grace_hopper.jpg")).at_threshold(-1)
    with pytest.raises(ThresholdError):
        evaluate.compare_models({"a": clf}, _folder(tmp_path / "s", 1), threshold=1.5, workers=0)


# ---------------------------------------------------------------------------------------------
# 3. exit codes are the README's, for predict and evaluate
# ---------------------------------------------------------------------------------------------

def test_readme_exit_codes_hold_for_predict_and_evaluate(tiny_checkpoint, tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    assert "Exit codes: 0 all succeeded, 1 some inputs failed, 2 usage, data or weights errors." in readme
    clean = _folder(tmp_path / "clean")
    messy = _folder(tmp_path / "messy", broken=True)
    w = ["--weights", tiny_checkpoint, "--no-progress"]
    assert _run(capsys, "evaluate", clean, *w, "--workers", "0")[0] == 0
    code, out, err = _run(capsys, "evaluate", messy, *w, "--workers", "0")
    assert code == 1, err
    assert "failed: 2" in out and "accuracy" in out and "2 of 8 inputs failed" in err  # metrics still printed
    code, out, _ = _run(capsys, "evaluate", messy, *w, "--workers", "0", "--json")
    assert code == 1 and json.loads(out)["n_failed"] == 2
    assert _run(capsys, "evaluate", tmp_path / "absent", *w)[0] == 2
    assert _run(capsys, "predict", clean / "real" / "real0.jpg", *w)[0] == 0
    assert _run(capsys, "predict", clean / "real" / "real0.jpg", messy / "fake" / "broken.jpg", *w)[0] == 1
    assert _run(capsys, "predict", clean / "real" / "real0.jpg", "--weights", tmp_path / "none.pt")[0] == 2


def test_failed_files_name_their_path_once(tiny_checkpoint, tmp_path, capsys):
    messy = _folder(tmp_path / "messy", broken=True)
    broken = messy / "fake" / "broken.jpg"
    for argv in (["evaluate", messy, "--workers", "0"], ["predict", broken], ["explain", broken, "--out", tmp_path]):
        _, out, _ = _run(capsys, *argv, "--weights", tiny_checkpoint, "--no-progress")
        lines = [line for line in out.splitlines() if "broken.jpg" in line]
        assert lines and all(line.count("broken.jpg") == 1 for line in lines), (argv[0], lines)
        assert any("truncated" in line for line in lines), lines  # the reason stays


# ---------------------------------------------------------------------------------------------
# 4. at chance level the CLI, JSON and report say so, and suggest no threshold
# ---------------------------------------------------------------------------------------------

def test_chance_level_is_said_and_no_threshold_suggested_everywhere(tiny_checkpoint, tmp_path, capsys):
    folder = _folder(tmp_path / "same", per_class=4, same=True)  # real vs the same images labelled fake
    w = ["--weights", tiny_checkpoint, "--no-progress", "--workers", "0"]
    code, out, _ = _run(capsys, "evaluate", folder, *w, "--report", tmp_path / "r.html")
    assert code == 0
    assert "WARNING: The model cannot tell real from AI-generated photos" in out
    assert "No threshold is suggested" in out and "maximising" not in out
    code, out, _ = _run(capsys, "evaluate", folder, *w, "--json")
    s = json.loads(out)
    assert s["separation"]["kind"] == "chance" and s["threshold_advice"] is None
    assert "best_threshold_balanced_accuracy" not in s and "threshold_for_fpr_5pct" not in s
    html = (tmp_path / "r.html").read_text()
    assert "cannot tell real from AI-generated" in html and "No threshold is suggested" in html


def test_a_separating_model_gets_advice_with_interval_size_and_where_it_applies(tmp_path):
    from realitycheck.analysis import metrics as M
    from realitycheck.analysis.evaluate import threshold_advice_words

    y = ["real"] * 15 + ["fake"] * 15
    p = list(np.linspace(0.01, 0.2, 15)) + list(np.linspace(0.0755, 0.9, 15))
    kind, _ = M.separation(M.compute_metrics(y, p, 0.5))
    a = M.threshold_advice(y, p, kind)
    assert kind == "separates" and a["small_sample"] and a["n_real"] == a["n_fake"] == 15
    # the shown value is the one whose rates are given: re-scoring at it reproduces them exactly
    again = M.compute_metrics(y, p, a["threshold"], n_bootstrap=0)
    assert a["fpr"] == again["fpr"] and a["fnr"] == again["fnr"]
    assert a["fpr_ci95"][0] <= a["fpr"] <= a["fpr_ci95"][1] and a["fpr_ci95"][1] > 0.1  # 15 images: wide
    words = threshold_advice_words(a)
    assert "30 images (15 real, 15 fake)" in words and "rough guide" in words
    assert "95% CI" in words
    assert M.threshold_advice(y, p, "chance") is None and M.threshold_advice(y, p, "reversed") is None


# ---------------------------------------------------------------------------------------------
# 5. public mode: a batch over the rate limit is scored up to it, and the rest can always run later
# ---------------------------------------------------------------------------------------------

def test_a_batch_over_the_rate_limit_is_scored_up_to_it_and_the_rest_later():
    from realitycheck.serving import access

    n, stamps, wait = access.rate_allowance([], 0.0, limit=30, want=40)  # 40 distinct images, 30 per 60 s
    assert n == 30 and len(stamps) == 30 and wait == pytest.approx(60.0)
    msg = access.rate_allowance_message(30, n, 40, wait)
    assert "30 of these 40 were classified now; 10 were left for later" in msg and "again in 60 s" in msg
    # the retry after the wait the message gave is allowed in full: never a retry that cannot succeed
    n2, stamps, wait2 = access.rate_allowance(stamps, wait, limit=30, want=10)
    assert n2 == 10 and wait2 == 0.0
    # a rest bigger than the whole budget is told how to split it
    n, stamps, wait = access.rate_allowance([], 0.0, limit=30, want=75)
    msg = access.rate_allowance_message(30, n, 75, wait)
    assert n == 30 and "45 were left for later" in msg and "in batches of at most 30" in msg
    # at the limit already: nothing runs, and the wait is until enough slots come free
    n, _, wait = access.rate_allowance([0.0, 10.0, 20.0], 30.0, limit=3, want=2)
    assert n == 0 and wait == pytest.approx(40.0)
    assert access.rate_allowance([1.0] * 100, 2.0, limit=0, want=500)[0] == 500  # 0: no limit


# ---------------------------------------------------------------------------------------------
# 6. several faces: a table of them, the user picks the face to explain, poor deciding faces said
# ---------------------------------------------------------------------------------------------

SAMPLES = ROOT / "sample_images"


def two_faces(path: Path, small_second: bool = False, blur_second: bool = False) -> Path:
    """Grace Hopper beside Eileen Collins (optionally shrunk to a background-sized face, or blurred)."""
    from PIL import ImageFilter

    a = Image.open(SAMPLES / "grace_hopper.jpg").convert("RGB")
    b = Image.open(SAMPLES / "astronaut_eileen_collins.jpg").convert("RGB")
    b = b.resize((round(b.width * a.height / b.height), a.height))
    if small_second:
        b = b.resize((b.width // 4, b.height // 4))
    if blur_second:
        b = b.filter(ImageFilter.GaussianBlur(3))
    pair = Image.new("RGB", (a.width + b.width, a.height), (128, 128, 128))
    pair.paste(a, (0, 0))
    pair.paste(b, (a.width, 0))
    pair.save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def aligned_checkpoint(tmp_path_factory, tiny_checkpoint):
    from dataclasses import replace

    from realitycheck.model import checkpoints

    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    return checkpoints.save_checkpoint(tmp_path_factory.mktemp("aligned") / "aligned.pt", model,
                                       replace(card, preprocessing=replace(card.preprocessing, align="face")))


def test_each_face_gets_a_row_and_the_poor_deciding_face_is_named(aligned_checkpoint, tmp_path):
    from dataclasses import replace

    from realitycheck.analysis.face_table import deciding_face_caveat, face_rows
    from realitycheck.model.inference import Classifier

    clf = Classifier.from_file(aligned_checkpoint, precision="fp32")
    pred = clf.predict([str(two_faces(tmp_path / "pair.jpg", small_second=True, blur_second=True))],
                       keep_images=True)[0]
    assert pred.faces == 2
    rows = face_rows(pred)
    assert [r["face"] for r in rows] == [1, 2] and [r["p_fake"] for r in rows] == pred.face_p_fake
    big, small = rows
    assert big["small"] is False and big["blurred"] is False  # a clear portrait
    assert small["small"] is True and small["blurred"] is True and small["width_px"] < 64
    assert sum(r["deciding"] for r in rows) == 1
    # whichever face the model picks, the caveat follows it: force each in turn
    for decides in (0, 1):
        forced = replace(pred, face_p_fake=[0.9, 0.1] if decides == 0 else [0.1, 0.9])
        caveat = deciding_face_caveat(face_rows(forced))
        if decides == 0:
            assert caveat is None
        else:
            assert caveat.startswith("The verdict comes from face 2") and "small and blurred" in caveat
            assert "unreliable" in caveat


def test_the_user_can_explain_any_face(aligned_checkpoint, tmp_path):
    from realitycheck import explain
    from realitycheck.model.checkpoints import load_checkpoint

    model, card = load_checkpoint(aligned_checkpoint)
    img = Image.open(two_faces(tmp_path / "pair.jpg")).convert("RGB")
    ex = explain.Explainer(model, card)
    first, second = (ex.explain([img], face=i, faithfulness=False)[0] for i in (0, 1))
    assert not np.array_equal(np.asarray(first.region_image), np.asarray(second.region_image))
    deciding = ex.explain([img], faithfulness=False)[0]
    assert any(np.array_equal(np.asarray(deciding.region_image), np.asarray(e.region_image)) for e in (first, second))
    with pytest.raises(ValueError, match="face 3 was asked for, but 2"):
        ex.explain([img], face=2, faithfulness=False)


def test_the_face_that_decided_is_the_one_every_path_explains(aligned_checkpoint, tmp_path, monkeypatch):
    """The CLI and the API explain the face `Prediction.deciding_face` names, not a face they pick
    themselves: predict's rule is made to pick the face the explainer would not pick on its own (the
    less suspicious one), and both paths' heatmap panels must be of that face."""
    from realitycheck import explain
    from realitycheck.model import inference
    from realitycheck.serving.api.scoring import explain_record
    from realitycheck.serving.cli import main

    photo = two_faces(tmp_path / "pair.jpg")
    clf = inference.load_classifier(str(aligned_checkpoint))  # as the CLI loads it
    p = clf.predict_one(str(photo)).face_p_fake
    assert len(p) == 2
    other = 1 if p[1] <= p[0] else 0  # the face the explainer's own choice (the most suspicious) is not
    monkeypatch.setattr(inference, "deciding", lambda views: other if len(views) == 2 else 0)
    pred = clf.predict_one(str(photo))
    assert pred.deciding_face == other and pred.p_fake == pred.face_p_fake[other]
    img = Image.open(photo).convert("RGB")
    ex = explain.Explainer(clf.model, clf.card)
    assert np.array_equal(np.asarray(ex.explain([img], faithfulness=False)[0].region_image),
                          np.asarray(ex.explain([img], face=1 - other, faithfulness=False)[0].region_image))

    def panel_of(face: int, png: bytes | None = None) -> np.ndarray:
        if png is None:
            e = ex.explain([img], method="gradcam", face=face, faithfulness=False)[0]
            return np.asarray(explain.render_panel(e.region_image, e.heatmap, opacity=0.5).convert("RGB"))
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    out = tmp_path / "cli"
    assert main(["explain", str(photo), "--weights", str(aligned_checkpoint), "--method", "gradcam",
                 "--out", str(out), "--opacity", "0.5"]) == 0
    cli_panel = np.asarray(Image.open(next(out.glob("*.gradcam.png"))).convert("RGB"))
    assert np.array_equal(cli_panel, panel_of(other)) and not np.array_equal(cli_panel, panel_of(1 - other))

    api = explain_record(clf, photo.read_bytes(), photo.name, "gradcam", None, with_png=True)
    assert api["p_fake"] == pred.p_fake
    by_face = [panel_of(k, explain.to_png_bytes(ex.explain([img], method="gradcam", face=k)[0].panel(max_side=None)))
               for k in (0, 1)]
    api_panel = panel_of(other, base64.b64decode(api["png_base64"]))
    assert np.array_equal(api_panel, by_face[other]) and not np.array_equal(api_panel, by_face[1 - other])


def test_face_numbers_on_the_picture_are_legible():
    from realitycheck.intake.faces import draw_faces

    img = Image.new("RGB", (1200, 800), (128, 128, 128))
    out = np.asarray(draw_faces(img, [(600, 400, 100, 100)], [True]))  # one face, judged fake (red)
    column = out[:400, 603]  # above the box, inside its label
    red = (column[:, 0] > 200) & (column[:, 1] < 80)
    assert red.sum() >= 1200 / 30, red.sum()  # the label is at least 1/30 of the long side tall (was 14 px)


# ---------------------------------------------------------------------------------------------
# 8. no face: the explanation says what was scored
# ---------------------------------------------------------------------------------------------

def test_without_a_face_the_verdict_is_headed_unreliable_and_the_region_is_named(aligned_checkpoint):
    from realitycheck import explain
    from realitycheck.analysis.face_table import verdict_caveat
    from realitycheck.model.checkpoints import load_checkpoint
    from realitycheck.model.inference import Classifier

    img = Image.open(io.BytesIO(_jpeg(7, size=200))).convert("RGB")  # stripes: no face
    pred = Classifier.from_file(aligned_checkpoint).predict([img])[0]
    assert pred.faces == 0 and "unreliable" in verdict_caveat(pred) and "no face found" in verdict_caveat(pred)
    exp = explain.Explainer(*load_checkpoint(aligned_checkpoint)).explain([img], faithfulness=False)[0]
    assert "no face found" in exp.region and "aligned face" not in exp.region
    face = Classifier.from_file(aligned_checkpoint).predict([str(SAMPLES / "grace_hopper.jpg")])[0]
    assert face.faces == 1 and verdict_caveat(face) is None


# ---------------------------------------------------------------------------------------------
# 9. the faithfulness sentence: one rule from the numbers, never contradicting them
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hot, rnd, kind, words", [
    (-0.12, -0.33, "against", "not evidence the model uses"),  # the case: hiding it RAISES confidence
    (0.31, 0.04, "supports", "points at evidence the model uses"),
    (0.08, 0.05, "weak", "weak support"),
    (0.05, 0.08, "random", "no more than random"),
    (0.001, 0.0, "no effect", "cannot confirm"),
    (0.005, -0.2, "against", "not evidence"),
])
def test_faithfulness_conclusion_follows_the_numbers(hot, rnd, kind, words):
    from realitycheck.explain import Faithfulness
    from realitycheck.explain.heatmap_words import faithfulness_words

    f = Faithfulness(hot, rnd, target_class="fake")
    assert f.conclusion == kind
    text = faithfulness_words(f)
    assert words in text and words in f.meaning
    if kind != "supports":
        assert "points at evidence" not in text


def test_an_empty_heatmap_has_no_highlighted_part_to_speak_of():
    from realitycheck.explain import Faithfulness
    from realitycheck.explain.heatmap_words import faithfulness_words

    f = Faithfulness(0.2, 0.01, target_class="fake", empty=True)
    assert f.conclusion == "empty" and "highlighted 20%" not in faithfulness_words(f)
    assert "empty" in faithfulness_words(f) and "points at evidence" not in f.meaning


# ---------------------------------------------------------------------------------------------
# 11. region words come from the face's outline, not its detector box
# ---------------------------------------------------------------------------------------------

def test_hair_inside_the_detector_box_is_outside_the_face():
    from realitycheck.explain.heatmap_words import describe_evidence

    crop = (100, 0, 300, 250)
    box = (140, 30, 120, 140)  # a roomy box: it holds the hair above the forehead and beside the temples
    landmarks = np.array([[180, 105], [220, 105], [200, 125], [185, 148], [215, 148]], dtype=float)
    ys, xs = np.mgrid[0:250, 0:200]

    def blob(x, y):
        return np.exp(-((xs + 0.5 - (x - crop[0])) ** 2 + (ys + 0.5 - (y - crop[1])) ** 2) / 32.0)

    hair = describe_evidence(blob(200, 45), crop, [box], "fake", landmarks=landmarks)  # inside the box, above the hairline
    assert "outside the face" in hair and "above the face" in hair and "forehead" not in hair
    ear = describe_evidence(blob(254, 110), crop, [box], "fake", landmarks=landmarks)  # box edge, beside the eye
    assert "outside the face" in ear and "beside the face" in ear
    forehead = describe_evidence(blob(200, 80), crop, [box], "fake", landmarks=landmarks)
    assert "around the forehead" in forehead


# ---------------------------------------------------------------------------------------------
# 12. limitations come from the active model's card
# ---------------------------------------------------------------------------------------------

def test_limitations_follow_the_models_card(tiny_checkpoint):
    from dataclasses import replace

    from realitycheck.model.checkpoints import read_card
    from realitycheck.model.model_limits import limitations

    card = read_card(tiny_checkpoint)
    per_source = [{"source": "studio", "label": "real", "n": 50, "rate": 0.08, "ci95_low": 0.03, "ci95_high": 0.19},
                  {"source": "newgen", "label": "fake", "n": 40, "rate": 0.55, "ci95_low": 0.4, "ci95_high": 0.69},
                  {"source": "oldgan", "label": "fake", "n": 40, "rate": 0.9, "ci95_low": 0.77, "ci95_high": 0.96}]
    mine = replace(card, name="mine", training={"sources": ["studio", "newgen", "oldgan"]},
                   metrics={"test": {"per_source": per_source}})
    text = "\n".join(limitations(mine))
    assert "real photos from studio; AI-generated faces from newgen, oldgan" in text
    assert "55.0% of the newgen fakes" in text and "8.0% of the studio photos" in text  # the weakest of each
    assert "FFHQ" not in text and "StyleGAN" not in text
    bare = "\n".join(limitations(replace(card, training={}, metrics={})))
    assert "does not record its training data" in bare


def test_limitations_of_the_shipped_model_name_its_own_sources():
    from realitycheck.model.checkpoints import read_card
    from realitycheck.model.inference import default_weights_path
    from realitycheck.model.model_limits import limitations

    path = default_weights_path()
    if not path.is_file():
        pytest.skip(f"no shipped weights at {path.name}")
    card = read_card(path)
    text = "\n".join(limitations(card))
    for source in card.training.get("sources") or []:
        assert source in text
    worst = min((r for r in card.metrics["test"]["per_source"] if r["label"] == "fake"), key=lambda r: r["rate"])
    assert f"{worst['rate']:.1%} of the {worst['source']} fakes" in text


# ---------------------------------------------------------------------------------------------
# 15. the path box suggests a path the default roots accept
# ---------------------------------------------------------------------------------------------

def test_the_suggested_labelled_path_is_accepted_by_the_default_roots(tmp_path, monkeypatch):
    import re

    from realitycheck.serving import access
    from realitycheck.serving.app.inputs import LABELLED_PLACEHOLDER

    example = re.search(r"e\.g\. (\S+)", LABELLED_PLACEHOLDER).group(1)
    monkeypatch.chdir(tmp_path)
    for label in ("real", "fake"):
        (tmp_path / Path(example).expanduser() / label).mkdir(parents=True, exist_ok=True)
    settings = access.load_settings(env={}, cwd=tmp_path)  # no settings file, no REALITYCHECK_ROOTS
    assert access.check_path(example, settings, want="dir").is_dir()


# ---------------------------------------------------------------------------------------------
# 16. small words
# ---------------------------------------------------------------------------------------------

def test_generator_with_a_model_name_reads_as_one_phrase():
    from PIL.PngImagePlugin import PngInfo

    from realitycheck.intake import provenance as P

    info = PngInfo()
    info.add_text("parameters", "a portrait\nSteps: 20, Sampler: Euler a, CFG scale: 7, Model: v2-1_768")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 150)).save(buf, "PNG", pnginfo=info)
    p = P.read_provenance(buf.getvalue())
    assert p.generator.endswith(", model v2-1_768")
    said = P.disagreement(p, "real")
    assert f"declares it was generated with AI by {p.generator} (" in said and "v2-1_768 with AI" not in said
    assert p.claim is None or "v2-1_768 with AI" not in p.claim


def test_durations_and_counts_in_words():
    pytest.importorskip("streamlit")
    from realitycheck.serving.app.display import duration_words, plural

    assert duration_words(0.3) == "under 1 s" and duration_words(12.4) == "about 12 s"
    assert plural(1, "misclassified image") == "1 misclassified image" and plural(3, "image") == "3 images"
