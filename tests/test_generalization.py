"""Several labelled sources, group-aware splits, class balancing, YuNet faces, alignment and per-face verdicts."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realitycheck.analysis.metrics import per_source
from realitycheck.intake.data import (
    DataError,
    Item,
    SourceSpec,
    collect_sources,
    load_manifest,
    parse_data_arg,
    sample_weights,
    split_items,
)
from tests.helpers import SAMPLE_IMAGES


def _folder(root: Path, names: list[str], size=(32, 32)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for n in names:
        Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(root / n)
    return root


# -- sources -------------------------------------------------------------------------------------

def test_manifest_names_sources_groups_and_subsets(tmp_path):
    _folder(tmp_path / "diff", [f"grp{g}_{i}.png" for g in range(6) for i in range(5)])
    _folder(tmp_path / "mixed", [f"utk_{i}.png" for i in range(4)] + [f"aaf_{i}.png" for i in range(3)])
    _folder(tmp_path / "both" / "real", ["r1.png", "r2.png"])
    _folder(tmp_path / "both" / "fake", ["f1.png"])
    (tmp_path / "m.toml").write_text(
        '[[source]]\nname = "sd"\npath = "diff"\nlabel = "fake"\ngroup = \'^(.+)_\\d+$\'\n\n'
        '[[source]]\nname = "utk"\npath = "mixed"\nlabel = "real"\ninclude = "^utk_"\n\n'
        '[[source]]\nname = "aaf"\npath = "mixed"\nlabel = "real"\ninclude = "^aaf_"\n\n'
        '[[source]]\nname = "both"\npath = "both"\n')
    items = collect_sources(load_manifest(tmp_path / "m.toml"))
    counts = collections.Counter(it.source for it in items)
    assert counts == {"sd": 30, "utk": 4, "aaf": 3, "both/real": 2, "both/fake": 1}
    assert {it.label for it in items if it.source == "sd"} == {"fake"}
    # a prompt group never straddles the split: all five images of a group land on one side
    sides = collections.defaultdict(set)
    for split, its in split_items(items).items():
        for it in its:
            if it.source == "sd":
                sides[it.group].add(split)
    assert len(sides) == 6 and all(len(s) == 1 for s in sides.values())


def test_a_manifest_without_one_source_keeps_the_others_and_their_split(tmp_path):
    """scripts/without_source.py (leave-one-source-out data): the other sources, their files and their
    split sides are unchanged, from a copy written in another folder."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    _folder(tmp_path / "diff", [f"grp{g}_{i}.png" for g in range(6) for i in range(5)])
    _folder(tmp_path / "mixed", [f"utk_{i}.png" for i in range(4)] + [f"aaf_{i}.png" for i in range(3)])
    (tmp_path / "m.toml").write_text(
        '[[source]]\nname = "sd"\npath = "diff"\nlabel = "fake"\ngroup = \'^(.+)_\\d+$\'\n\n'
        '[[source]]\nname = "utk"\npath = "mixed"\nlabel = "real"\ninclude = "^utk_"\n\n'
        '[[source]]\nname = "aaf"\npath = "mixed"\nlabel = "real"\ninclude = "^aaf_"\n')
    script = REPO_ROOT / "scripts" / "without_source.py"
    out = tmp_path / "elsewhere" / "no-utk.toml"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "m.toml"), "utk", "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    full = split_items(collect_sources(load_manifest(tmp_path / "m.toml")))
    part = split_items(collect_sources(load_manifest(out)))
    side = lambda split: {(Path(it.path).resolve(), name) for name, its in split.items() for it in its  # noqa: E731
                          if it.source != "utk"}
    assert side(part) == side(full) and {it.source for its in part.values() for it in its} == {"sd", "aaf"}
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "m.toml"), "nosuch", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no source named nosuch" in bad.stderr


def test_a_file_in_two_sources_is_refused(tmp_path):
    _folder(tmp_path / "a", ["x.png"])
    specs = [SourceSpec("one", str(tmp_path / "a"), label="real"), SourceSpec("two", str(tmp_path / "a"), label="real")]
    with pytest.raises(DataError, match="in two sources"):
        collect_sources(specs)


def test_data_argument_forms(tmp_path):
    _folder(tmp_path / "set" / "real", ["a.png"])
    _folder(tmp_path / "set" / "fake", ["b.png"])
    [spec] = parse_data_arg(f"mine={tmp_path / 'set'}")
    assert spec.name == "mine"
    assert {it.source for it in spec.items()} == {"mine/real", "mine/fake"}
    [spec] = parse_data_arg(str(tmp_path / "set"))
    assert spec.name == "set"
    with pytest.raises(DataError, match="no such manifest"):
        parse_data_arg(str(tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("[[source]]\nname = 'x'\npath = 'set'\ncolour = 'red'\n")
    with pytest.raises(DataError, match="unknown field"):
        parse_data_arg(str(tmp_path / "bad.toml"))


def test_sampling_balances_classes_and_weights_sources():
    items = [Item(f"r{i}.png", "real", "big") for i in range(90)] + [Item(f"s{i}.png", "real", "small") for i in range(10)] \
        + [Item(f"f{i}.png", "fake", "gen") for i in range(20)]
    w = np.asarray(sample_weights(items))
    is_fake = np.array([it.label == "fake" for it in items])
    assert w[is_fake].sum() == pytest.approx(0.5) and w[~is_fake].sum() == pytest.approx(0.5)
    small = np.array([it.source == "small" for it in items])
    assert w[small].sum() == pytest.approx(0.05)  # by size: 10 of 100 reals
    w2 = np.asarray(sample_weights(items, {"small": 9.0}))
    assert w2[small].sum() == pytest.approx(0.25)  # 9 x 10 / (90 + 9 x 10) of the real half


def test_per_source_table_matches_a_hand_count():
    sources = ["sd"] * 5 + ["ffhq"] * 4 + ["lfw"] * 3
    labels = ["fake"] * 5 + ["real"] * 7
    p = [0.9, 0.8, 0.4, 0.6, 0.1, 0.7, 0.2, 0.1, 0.3, 0.55, 0.05, 0.5]
    t = per_source(sources, labels, p, threshold=0.5).set_index("source")
    assert t.loc["sd", "rate_name"] == "detection rate" and t.loc["sd", "called_fake"] == 3
    assert t.loc["sd", "rate"] == pytest.approx(3 / 5)
    assert t.loc["ffhq", "rate_name"] == "false-alarm rate" and t.loc["ffhq", "rate"] == pytest.approx(1 / 4)
    assert t.loc["lfw", "called_fake"] == 2 and t.loc["lfw", "n"] == 3
    assert t.loc["sd", "ci95_low"] < 0.6 < t.loc["sd", "ci95_high"]


# -- faces ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grace_hopper.jpg", "astronaut_eileen_collins.jpg"])
def test_yunet_finds_the_face_and_its_landmarks_in_the_sample_images(name):
    from realitycheck.intake.faces import find_faces

    img = Image.open(SAMPLE_IMAGES / name).convert("RGB")
    report = find_faces(img)
    assert report.available and report.count == 1
    (x, y, w, h) = report.boxes[0]
    lm = report.faces[0].landmarks
    assert lm.shape == (5, 2)
    inside = (lm[:, 0] >= x) & (lm[:, 0] <= x + w) & (lm[:, 1] >= y) & (lm[:, 1] <= y + h)
    assert inside.all()  # eyes, nose and mouth inside the face box
    left, right = report.faces[0].eyes
    assert left[0] < right[0] and abs(left[1] - right[1]) < 0.25 * h  # an upright face: eyes level


def _two_faces() -> Image.Image:
    a = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB").resize((300, 380))
    b = Image.open(SAMPLE_IMAGES / "astronaut_eileen_collins.jpg").convert("RGB").resize((300, 380))
    both = Image.new("RGB", (620, 400), "gray")
    both.paste(a, (0, 10))
    both.paste(b, (320, 10))
    return both


@pytest.mark.parametrize("case", ["grace_hopper.jpg", "astronaut_eileen_collins.jpg", "two faces"])
def test_yunet_in_onnxruntime_finds_what_opencv_finds(case):
    """The fast detector decodes YuNet as OpenCV does: same faces, landmarks and scores, one or several."""
    from realitycheck.intake.faces import find_faces

    img = _two_faces() if case == "two faces" else Image.open(SAMPLE_IMAGES / case).convert("RGB")
    fast, ref = find_faces(img, "onnxruntime"), find_faces(img, "opencv")
    assert fast.count == ref.count == (2 if case == "two faces" else 1)
    assert fast.boxes == ref.boxes
    for f, r in zip(fast.faces, ref.faces):
        assert np.abs(f.landmarks - r.landmarks).max() < 0.05
        assert f.score == pytest.approx(r.score, abs=1e-3)


def test_face_detection_falls_back_to_opencv_without_onnxruntime(monkeypatch):
    import sys
    import threading

    from realitycheck.intake import faces

    monkeypatch.setattr(faces, "_local", threading.local())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert isinstance(faces._detector(), faces._OpenCVYuNet)
    assert faces.find_faces(Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB")).count == 1


def test_alignment_puts_the_eyes_where_the_framing_says():
    from realitycheck.intake.faces import (
        align_face,
        aligned_quad,
        find_faces,
        landmark_position,
    )

    img = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB")
    lm = find_faces(img).faces[0].landmarks
    size, zoom = 224, 0.7
    pts = landmark_position(lm, size, zoom)
    # FFHQ framing: eyes (nearly) level, either side of the centre line, in the upper half
    eye_l, eye_r = sorted(pts[:2].tolist())
    assert abs(eye_l[1] - eye_r[1]) < 0.01 * size
    assert 0.3 * size < eye_l[1] < 0.6 * size
    assert (eye_l[0] + eye_r[0]) / 2 == pytest.approx(size / 2, abs=size * 0.03)
    quad = aligned_quad(lm, zoom)
    assert np.hypot(*(quad[3] - quad[0])) == pytest.approx(np.hypot(*(quad[1] - quad[0])))  # a square
    out = align_face(img, lm, size, zoom)
    assert out.size == (size, size)
    # rotate and rescale the photo: the aligned eyes land at the same place
    turned = img.rotate(12, resample=Image.BICUBIC, expand=True).resize((400, 470))
    lm2 = find_faces(turned).faces[0].landmarks
    pts2 = landmark_position(lm2, size, zoom)
    assert np.abs(pts2[:2] - pts[:2]).max() < size * 0.04


def _aligned_classifier(tiny_checkpoint, tmp_path):
    from realitycheck.model import checkpoints
    from realitycheck.model.inference import Classifier

    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    card.preprocessing.align, card.preprocessing.zoom = "face", 0.7
    path = checkpoints.save_checkpoint(tmp_path / "aligned.pt", model, card)
    return Classifier.from_file(path, precision="fp32")


def test_each_face_gets_a_verdict_and_the_image_takes_the_most_suspicious(tiny_checkpoint, tmp_path):
    clf = _aligned_classifier(tiny_checkpoint, tmp_path)
    a = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB").resize((256, 300))
    b = Image.open(SAMPLE_IMAGES / "astronaut_eileen_collins.jpg").convert("RGB").resize((256, 256))
    def canvas(*photos):
        c = Image.new("RGB", (1000, 500), "white")
        for img, at in photos:
            c.paste(img, at)
        return c

    pred = clf.predict_one(canvas((a, (80, 100)), (b, (640, 120))), "two.png")
    assert pred.ok and pred.faces == 2 and len(pred.face_boxes) == 2
    assert len(pred.face_p_fake) == 2 and pred.p_fake == max(pred.face_p_fake)
    # each face's score is that face's own: the same as each face alone on the same canvas
    alone = [clf.predict_one(canvas(ph), n).p_fake for ph, n in (((a, (80, 100)), "a.png"), ((b, (640, 120)), "b.png"))]
    assert sorted(pred.face_p_fake) == pytest.approx(sorted(alone), abs=1e-4)
    assert "most suspicious face" in pred.face_message


def test_an_aligned_model_scores_the_whole_image_when_no_face_is_found(tiny_checkpoint, tmp_path):
    clf = _aligned_classifier(tiny_checkpoint, tmp_path)
    noise = Image.fromarray((np.random.default_rng(0).random((120, 120, 3)) * 255).astype("uint8"))
    pred = clf.predict_one(noise, "noise.png")
    assert pred.ok and pred.faces == 0 and pred.face_p_fake == [] and pred.region == "centre crop"
    assert "whole image" in pred.face_message


def test_a_damaged_alignment_setting_is_refused(tiny_checkpoint, tmp_path):
    from realitycheck.model import checkpoints

    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    card.preprocessing.align = "eyes"
    path = checkpoints.save_checkpoint(tmp_path / "bad.pt", model, card)
    with pytest.raises(checkpoints.CheckpointError, match="align"):
        checkpoints.load_checkpoint(path)


# -- unfamiliar images ---------------------------------------------------------------------------

def test_the_unfamiliar_flag_flips_for_a_clearly_out_of_distribution_input(tiny_checkpoint, tmp_path):
    """Fit the statistics on face photos (through the real feature path), store them, and read them back."""
    import io

    from realitycheck.model import checkpoints
    from realitycheck.model.inference import Classifier
    from realitycheck.model.ood import OODStats

    faces = []
    for name in ("grace_hopper.jpg", "astronaut_eileen_collins.jpg"):
        img = Image.open(SAMPLE_IMAGES / name).convert("RGB")
        for i in range(12):  # shifted, rescaled, re-compressed copies of the two portraits
            w, h = img.size
            crop = img.crop((i * 4, i * 3, w - (11 - i) * 4, h - (11 - i) * 3)).resize((200 + 10 * i, 200 + 10 * i))
            buf = io.BytesIO(); crop.save(buf, "JPEG", quality=60 + 3 * i)
            path = tmp_path / f"{name}-{i}.jpg"; path.write_bytes(buf.getvalue())
            faces.append(str(path))
    clf = Classifier.from_file(tiny_checkpoint, precision="fp32")
    feats = np.stack([f for _, f in clf.iter_features(faces[::2], workers=0)])
    stats = OODStats.fit(feats, n_components=8)
    stats.choose_threshold(np.stack([f for _, f in clf.iter_features(faces[1::2], workers=0)]), 0.05)
    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    path = checkpoints.save_checkpoint(tmp_path / "with-ood.pt", model, card, extras={"ood": stats.to_tensors()})

    clf = Classifier.from_file(path, precision="fp32")
    assert clf.ood is not None and clf.ood.threshold == pytest.approx(stats.threshold)
    familiar = clf.predict_one(faces[3])
    stripes = np.zeros((160, 160, 3), np.uint8); stripes[:, ::8] = (255, 0, 255)
    strange = clf.predict_one(Image.fromarray(stripes), "stripes.png")
    assert familiar.unfamiliar is False and strange.unfamiliar is True
    assert strange.ood_score > clf.ood.threshold > familiar.ood_score
    # a model without statistics says nothing either way
    plain = Classifier.from_file(tiny_checkpoint, precision="fp32").predict_one(faces[3])
    assert plain.unfamiliar is None and plain.ood_score is None


def test_damaged_unfamiliarity_statistics_are_refused(tiny_checkpoint, tmp_path):
    import torch

    from realitycheck.model import checkpoints
    from realitycheck.model.inference import Classifier

    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    bad = {"mean": torch.zeros(1280), "components": torch.zeros(4, 7), "eigvals": torch.ones(4),
           "resid_var": torch.ones(1, dtype=torch.float64), "threshold": torch.ones(1, dtype=torch.float64)}
    path = checkpoints.save_checkpoint(tmp_path / "bad-ood.pt", model, card, extras={"ood": bad})
    with pytest.raises(checkpoints.CheckpointError, match="unfamiliarity"):
        Classifier.from_file(path)


# -- several sources through the CLI -------------------------------------------------------------

def _toy_sources(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    out = {}
    for name, label, n in (("cam", "real", 7), ("web", "real", 5), ("gen", "fake", 6)):
        d = root / name / label
        d.mkdir(parents=True)
        for i in range(n):
            arr = (rng.random((48, 48, 3)) * 255).astype("uint8")
            Image.fromarray(arr).save(d / f"{name}{i}.png")
        out[name] = root / name
    return out


def test_evaluate_reports_each_source_as_a_hand_count_of_its_rows(tiny_checkpoint, tmp_path):
    import json

    import pandas as pd

    from tests.helpers import run_cli_here as run_cli

    # run_cli_here: the same `main` in-process, without an interpreter + torch start-up
    src = _toy_sources(tmp_path / "data")
    (src["web"] / "real" / "broken.png").write_bytes(b"not an image")
    csv_path = tmp_path / "rows.csv"
    run = run_cli("evaluate", *[f"--data={k}={v}" for k, v in src.items()], "--weights", tiny_checkpoint,
                  "--threshold", "0.5", "--json", "--csv", csv_path, "--workers", "0")
    assert run.returncode == 1, run.stderr  # broken.png failed: exit 1, the metrics still printed
    summary = json.loads(run.stdout)
    rows = pd.read_csv(csv_path)
    assert set(rows["source"]) == {"cam", "web", "gen"}
    assert summary["failed"] == [str(src["web"] / "real" / "broken.png")]
    ok = rows[rows["error"].isna()]
    table = {r["source"]: r for r in summary["per_source"]}
    for name in ("cam", "web", "gen"):
        mine = ok[ok["source"] == name]
        assert table[name]["n"] == len(mine)
        assert table[name]["called_fake"] == int((mine["p_fake"] >= 0.5).sum())
    assert table["gen"]["rate_name"] == "detection rate" and table["cam"]["rate_name"] == "false-alarm rate"
    assert summary["n"] == 7 + 5 + 6


def test_training_on_several_sources_records_each(tmp_path, monkeypatch):
    from realitycheck.model import checkpoints
    from realitycheck.model.ood import OODStats
    from realitycheck.training.train import TrainConfig, fit

    asked = []  # the unfamiliarity threshold is chosen per source (the validation images' own sources)
    choose = OODStats.choose_threshold
    monkeypatch.setattr(OODStats, "choose_threshold",
                        lambda self, x, rate=0.05, sources=None: asked.append(sources) or choose(self, x, rate, sources))

    # run_cli_here: the same `main` in-process, without an interpreter + torch start-up
    src = _toy_sources(tmp_path / "data")
    cfg = TrainConfig(data=[f"{k}={v}" for k, v in src.items()], out=str(tmp_path / "m"), epochs=1, max_steps=1,
                      batch_size=4, resize=48, crop=40, workers=0, precision="fp32", half=False,
                      source_weight=["web=2"])
    card = checkpoints.read_card(fit(cfg, log=lambda m: None))
    assert card.training["sources"] == ["cam", "gen", "web"]
    per = card.training["n_per_source"]
    assert {k: sum(v.values()) for k, v in per.items()} == {"cam": 7, "gen": 6, "web": 5}
    assert "--source-weight web=2" in card.training["command"]
    assert {r["source"] for r in card.metrics["test"]["per_source"]} <= {"cam", "gen", "web"}
    assert asked and asked[0] and set(asked[0]) <= {"cam", "gen", "web"} and len(asked[0]) == card.training["n_val"]
    assert "each source" in card.ood["threshold_chosen_on"]


def test_grad_cam_of_an_aligned_model_explains_the_face_the_verdict_came_from(tiny_checkpoint, tmp_path):
    from realitycheck import explain

    clf = _aligned_classifier(tiny_checkpoint, tmp_path)
    img = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB")
    pred = clf.predict_one(img, "g.jpg")
    exp = explain.explain(clf.model, clf.card, [img], faithfulness=False)[0]
    assert exp.region == "aligned face" and exp.region_image.size == (clf.card.preprocessing.crop,) * 2
    assert exp.p_fake == pytest.approx(pred.p_fake, abs=1e-4)  # the same number as predict
    x, y, w, h = exp.view_face_box
    assert 0 <= x and 0 <= y and x + w <= 80 and y + h <= 80 and w > 20 and h > 20
    heat = np.zeros_like(exp.heatmap)  # evidence placed inside the aligned face's box: words say "on the face"
    heat[y + h // 3:y + 2 * h // 3, x + w // 3:x + 2 * w // 3] = 1.0
    exp.heatmap = heat
    assert "on the face" in exp.describe()
    # the face's landmarks travel into the view too: evidence on the mouth corners is named "mouth"
    lm = exp.view_landmarks
    assert lm.shape == (5, 2) and lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above the nose above the mouth
    yy, xx = np.mgrid[0:heat.shape[0], 0:heat.shape[1]]
    mouth = lm[3:].mean(0)
    exp.heatmap = np.exp(-((xx + 0.5 - mouth[0]) ** 2 + (yy + 0.5 - mouth[1]) ** 2) / 8.0)
    assert "around the mouth" in exp.describe()


def test_a_class_folder_itself_is_a_source_of_that_class(tmp_path):
    _folder(tmp_path / "set" / "fake", ["a.png", "b.png"])
    [spec] = parse_data_arg(f"gen={tmp_path / 'set' / 'fake'}")
    assert {(it.label, it.source) for it in spec.items()} == {("fake", "gen")}


def test_combine_scores_chooses_thresholds_on_validation_and_reports_test_per_source(tmp_path):
    """Model A catches fake kind 'x', model B fake kind 'y': their max catches both, at a threshold
    chosen on the validation tables that keeps the real source's false alarms within 5%."""
    import importlib.util

    import pandas as pd

    from tests.helpers import REPO_ROOT

    spec = importlib.util.spec_from_file_location("combine_scores", REPO_ROOT / "scripts" / "combine_scores.py")
    cs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cs)

    def table(split, model):
        rows = []
        for i in range(40):
            for source, label in (("x", "fake"), ("y", "fake"), ("r", "real")):
                high = (source == "x" and model == "a") or (source == "y" and model == "b")
                p = 0.9 if high else (0.05 if label == "fake" else 0.1 + 0.001 * i)  # a missed fake looks real
                rows.append({"path": f"{split}/{source}{i}.png", "true_label": label, "source": source,
                             "p_fake": p, "error": ""})
        path = tmp_path / f"{model}.{split}.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        return str(path)

    val = cs.paired(table("val", "a"), table("val", "b"))
    test = cs.paired(table("test", "a"), table("test", "b"))
    rows = {}
    for how in cs.COMBINATIONS:
        t = cs.threshold_for_every_source(cs.score(val, how))
        rows[how] = cs.report(cs.score(test, how), t)
    assert rows["A only"]["x"] == 100.0 and rows["A only"]["y"] == 0.0
    assert rows["B only"]["y"] == 100.0 and rows["B only"]["x"] == 0.0
    assert rows["max"]["x"] == rows["max"]["y"] == 100.0 and rows["max"]["r"] <= 5.0


def test_finish_run_turns_a_cut_short_runs_best_weights_into_a_checkpoint(tmp_path, monkeypatch):
    """scripts/finish_run.py: the weights are the run's, the framing the run's, the epoch validation's."""
    import importlib.util
    import sys

    import pandas as pd
    import torch

    from realitycheck.model import checkpoints, models
    from tests.helpers import REPO_ROOT

    spec = importlib.util.spec_from_file_location("finish_run", REPO_ROOT / "scripts" / "finish_run.py")
    fr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fr)

    start = models.build_model("efficientnet_lite0")
    pre = checkpoints.default_preprocessing("efficientnet_lite0", crop=224)
    pre.align, pre.zoom = "face", 0.7
    card = checkpoints.default_card("start", "efficientnet_lite0", preprocessing=pre)
    card.threshold = 0.86
    checkpoints.save_checkpoint(tmp_path / "start.pt", start, card)
    trained = models.build_model("efficientnet_lite0")  # other (random) weights than `start`
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in trained.state_dict().items()},
               tmp_path / "run.best-half.pt")
    pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [0.90, 0.95, 0.93], "val_accuracy": [0.8, 0.9, 0.85],
                  "seconds": [10.0, 10.0, 10.0]}).to_csv(tmp_path / "run.log.csv", index=False)
    monkeypatch.setattr(sys, "argv", ["finish_run.py", str(tmp_path / "run.best-half.pt"), "--like",
                                      str(tmp_path / "start.pt"), "--crop", "192", "--log", str(tmp_path / "run.log.csv"),
                                      "--command", "train ...", "--out", str(tmp_path / "run.pt")])
    fr.main()

    model, out = checkpoints.load_checkpoint(tmp_path / "run.pt")
    assert out.preprocessing.crop == 192 and out.preprocessing.align == "face" and out.preprocessing.zoom == 0.7
    assert out.threshold == 0.5  # chosen afterwards, on validation
    assert out.training["best_epoch"] == 2 and out.training["epochs_run"] == 3
    assert out.metrics["val"]["auc"] == pytest.approx(0.95)
    want = trained.state_dict()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v.float(), want[k].half().float())


def test_unfamiliarity_threshold_flags_at_most_the_rate_in_every_source_and_is_the_lowest_that_does():
    from realitycheck.model.decision import is_unfamiliar, threshold_for_every_group

    def threshold_flagging_at_most(groups, rate):  # the unfamiliar check's rule: flagged when above
        return threshold_for_every_group(groups, rate, rule=is_unfamiliar)

    rng = np.random.default_rng(0)
    groups = [rng.normal(0, 1, 302), rng.normal(0.5, 1, 31), np.append(rng.normal(0, 1, 99), np.nan)]
    t = threshold_flagging_at_most(groups, 0.05)
    for g in groups:
        g = g[~np.isnan(g)]
        assert (g > t).sum() <= int(0.05 * len(g))  # 15 of 302 (a linear quantile lets 16 through), 1 of 31, 4 of 99
    lower = np.nextafter(t, -np.inf)
    assert any((g[~np.isnan(g)] > lower).sum() > int(0.05 * len(g[~np.isnan(g)])) for g in groups)
    assert threshold_flagging_at_most([np.arange(10.0)], 0.0) == 9.0  # rate 0: nothing above the maximum


def test_training_chooses_the_unfamiliarity_threshold_per_source():
    """OODStats.choose_threshold(sources=...), what `train` uses: a small source far from the training
    features is held to the rate too, where one pooled rate would let most of it be flagged."""
    from realitycheck.model.ood import OODStats

    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (400, 8))
    near, far = rng.normal(0, 1, (300, 8)), rng.normal(0, 1, (20, 8)) * 3.0
    stats = OODStats.fit(train, n_components=4)
    val = np.concatenate([near, far])
    pooled = stats.choose_threshold(val, 0.05)
    assert (stats.score(far) > pooled).mean() > 0.5  # pooled: the far source is mostly flagged
    per_source = stats.choose_threshold(val, 0.05, sources=["near"] * 300 + ["far"] * 20)
    assert per_source == stats.threshold > pooled
    assert (stats.score(far) > per_source).sum() <= 1 and (stats.score(near) > per_source).sum() <= 15
