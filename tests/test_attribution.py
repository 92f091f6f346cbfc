"""The generator-attribution head: which family a fake looks like, beside p_fake and never inside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from realitycheck.model.attribution import UNKNOWN, AttributionHead

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "shared-data.toml"


def _clusters(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = {"FLUX": np.r_[5.0, np.zeros(d - 1)], "SDXL": np.r_[0, 5.0, np.zeros(d - 2)],
               "StyleGAN": np.r_[0, 0, 5.0, np.zeros(d - 3)]}
    x = np.vstack([c + rng.normal(size=(n, d)) for c in centres.values()])
    y = [f for f in centres for _ in range(n)]
    return x, y, centres


def test_the_head_names_separable_families_and_says_unknown_between_them():
    x, y, centres = _clusters()
    head = AttributionHead.fit(x, y)
    assert head.families == ("FLUX", "SDXL", "StyleGAN")
    xt, yt, _ = _clusters(seed=1)
    probs = head.probabilities(xt)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert np.mean(np.array(head.families)[probs.argmax(1)] == np.array(yt)) >= 0.95
    head.choose_min_confidence(xt, yt)
    assert 0.5 <= head.min_confidence < 1
    # a point equally far from all three centres: no family is likely enough
    middle = np.mean(list(centres.values()), axis=0)[None]
    assert head.name(head.probabilities(middle)) == [UNKNOWN]
    guess = head.guess(head.probabilities(centres["SDXL"][None])[0])
    assert guess["name"] == "SDXL" and set(guess["probabilities"]) == set(head.families)


def test_two_families_work_too_and_the_head_round_trips_through_its_storage():
    x, y, _ = _clusters()
    keep = [i for i, f in enumerate(y) if f != "StyleGAN"]
    head = AttributionHead.fit(x[keep], [y[i] for i in keep])
    assert head.families == ("FLUX", "SDXL")
    again = AttributionHead.from_checkpoint(head.to_tensors(), head.card_entry())
    np.testing.assert_allclose(again.probabilities(x), head.probabilities(x), atol=1e-12)
    assert np.mean(np.array(head.families)[head.probabilities(x[keep]).argmax(1)] == np.array([y[i] for i in keep])) > 0.95
    with pytest.raises(ValueError, match="names 3 families"):
        AttributionHead.from_checkpoint(head.to_tensors(), {"families": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="at least two families"):
        AttributionHead.fit(x[:10], ["FLUX"] * 10)


def test_the_evaluation_summary_is_a_hand_count_of_the_detected_fakes():
    from realitycheck.analysis.evaluate import attribution_summary

    table = pd.DataFrame({
        "path": list("abcdefg"), "true_label": ["fake"] * 6 + ["real"],
        "p_fake": [0.9, 0.9, 0.9, 0.9, 0.2, 0.9, 0.9], "error": [""] * 7,
        "source": ["sdxl", "sdxl", "flux1_dev", "newgen", "sdxl", "flux1_dev", "lfw"],
        "generator": ["SDXL", "FLUX", "FLUX", "SDXL", "SDXL", UNKNOWN, "SDXL"],
    })
    s = attribution_summary(table, 0.5, {"sdxl": "SDXL", "flux1_dev": "FLUX"})
    # detected fakes only (not e: below the threshold; not g: real): a b c d f
    assert s["n_detected"] == 5
    assert s["top1_accuracy"] == pytest.approx(2 / 5)  # a and c
    assert s["confusion"]["SDXL"] == {"FLUX": 1, "SDXL": 1, UNKNOWN: 0}
    assert s["confusion"]["FLUX"] == {"FLUX": 1, "SDXL": 0, UNKNOWN: 1}
    assert s["confusion"]["newgen"]["SDXL"] == 1  # a source the model never saw stands for itself
    assert attribution_summary(table.assign(generator=None), 0.5, {}) is None  # an old model: nothing to say


# ---------------------------------------------------------------------------------------------
# A tiny trained model with the head, on every path
# ---------------------------------------------------------------------------------------------

def _toy_families(root: Path, side=64, n=16) -> Path:
    """reals: smooth noise; fakes of family A: + a checkerboard; of family B: + horizontal stripes."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    yy, xx = np.indices((side, side))
    traces = {"cam": 0, "gena": ((yy + xx) % 2 * 60 - 30), "genb": ((yy // 2) % 2 * 60 - 30)}
    for name, trace in traces.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            base = Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).filter(ImageFilter.GaussianBlur(4))
            arr = np.asarray(base).astype(np.int16) + np.asarray(trace, dtype=np.int16)[..., None]
            Image.fromarray(np.clip(arr, 0, 255).astype("uint8")).save(folder / f"{name}_{i:03d}.png")
    manifest = root / "toy.toml"
    manifest.write_text(
        '[[source]]\nname = "cam"\npath = "cam"\nlabel = "real"\n\n'
        '[[source]]\nname = "gena"\npath = "gena"\nlabel = "fake"\nfamily = "Alpha"\n\n'
        '[[source]]\nname = "genb"\npath = "genb"\nlabel = "fake"\nfamily = "Beta"\n')
    return manifest


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    from realitycheck.training.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("toy-families")
    manifest = _toy_families(root)
    cfg = TrainConfig(data=[str(manifest)], out=str(root / "m"), epochs=1, max_steps=2, batch_size=8, resize=48,
                      crop=40, workers=0, precision="fp32", half=False, augment="none")
    return fit(cfg, log=lambda m: None), manifest


def test_training_fits_the_head_on_the_families_the_manifest_names(toy_model):
    from realitycheck.model import checkpoints

    path, _ = toy_model
    _, card, extras = checkpoints.read_checkpoint_extras(path)
    assert card.attribution["families"] == ["Alpha", "Beta"]
    assert card.attribution["source_families"] == {"gena": "Alpha", "genb": "Beta"}
    assert set(extras["attribution"]) == {"weight", "bias"} and tuple(extras["attribution"]["weight"].shape)[0] == 2
    assert card.attribution["val_top1_accuracy"] >= 0.8  # checkerboard vs stripes: easy for ImageNet features
    assert "Generator attribution" in path.with_suffix(".md").read_text()


def test_the_guess_rides_beside_p_fake_and_never_changes_it(toy_model):
    from realitycheck.model.inference import Classifier

    path, manifest = toy_model
    with_head = Classifier.from_file(path, precision="fp32")
    without = Classifier.from_file(path, precision="fp32")
    without.attribution = None
    files = sorted((manifest.parent / "genb").glob("*.png"))[:6] + sorted((manifest.parent / "gena").glob("*.png"))[:6]
    a, b = with_head.predict([str(f) for f in files]), without.predict([str(f) for f in files])
    assert [p.p_fake for p in a] == [p.p_fake for p in b]
    assert all(p.generator is None for p in b)
    names = [p.generator["name"] for p in a]
    assert sum(n == "Beta" for n in names[:6]) >= 5 and sum(n == "Alpha" for n in names[6:]) >= 5
    assert all(abs(sum(p.generator["probabilities"].values()) - 1) < 1e-5 for p in a)


def test_old_checkpoints_without_a_head_say_nothing_about_the_generator(tiny_checkpoint, sample_face):
    from tests.helpers import run_cli_here as _run

    def run_cli(args):
        r = _run(*args)
        return r.returncode, r.stdout, r.stderr

    code, out, _ = run_cli(["predict", str(sample_face), "--weights", str(tiny_checkpoint), "--json"])
    assert code == 0 and json.loads(out)[0]["generator"] is None


def test_the_generator_field_on_the_cli_and_in_evaluate_and_the_report(toy_model, tmp_path):
    from tests.helpers import run_cli_here as _run

    def run_cli(args):
        r = _run(*args)
        return r.returncode, r.stdout, r.stderr

    path, manifest = toy_model
    fake = sorted((manifest.parent / "gena").glob("*.png"))[0]
    code, out, _ = run_cli(["predict", str(fake), "--weights", str(path), "--json", "--threshold", "0"])
    assert code == 0
    g = json.loads(out)[0]["generator"]
    assert set(g["probabilities"]) == {"Alpha", "Beta"} and g["name"] in ("Alpha", "Beta", UNKNOWN)
    code, out, _ = run_cli(["predict", str(fake), "--weights", str(path), "--threshold", "0"])
    assert "looks like" in out  # the text output names the family of a FAKE verdict
    report = tmp_path / "r.html"
    code, out, _ = run_cli(["evaluate", "--data", str(manifest), "--weights", str(path), "--threshold", "0",
                            "--json", "--report", str(report), "--csv", str(tmp_path / "t.csv")])
    s = json.loads(out)
    a = s["attribution"]
    assert a["n_detected"] == 32 and set(a["confusion"]) == {"Alpha", "Beta"}
    assert sum(sum(r.values()) for r in a["confusion"].values()) == 32
    assert "generator" in pd.read_csv(tmp_path / "t.csv").columns
    assert "Generator attribution" in report.read_text()


def test_attribute_adds_a_head_to_an_existing_checkpoint_without_touching_its_answers(toy_model, tmp_path):
    from realitycheck.model import checkpoints
    from tests.helpers import run_cli_here as _run

    def run_cli(args):
        r = _run(*args)
        return r.returncode, r.stdout, r.stderr

    path, manifest = toy_model
    bare = tmp_path / "bare.pt"
    model, card, extras = checkpoints.load_checkpoint_extras(path)
    card.attribution = {}
    checkpoints.save_checkpoint(bare, model, card, extras={"ood": extras["ood"]})
    code, _, err = run_cli(["attribute", str(bare), "--data", str(manifest), "--out", str(tmp_path / "with.pt")])
    assert code == 0, err
    sd_a, card_a, ex_a = checkpoints.read_checkpoint_extras(bare)
    sd_b, card_b, ex_b = checkpoints.read_checkpoint_extras(tmp_path / "with.pt")
    assert card_b.attribution["families"] == ["Alpha", "Beta"] and "attribution" in ex_b
    assert all((sd_a[k] == sd_b[k]).all() for k in sd_a) and card_b.threshold == card_a.threshold
    one = manifest.with_name("one-family.toml")
    one.write_text(manifest.read_text().split("[[source]]\nname = \"genb\"")[0])
    code, _, err = run_cli(["attribute", str(bare), "--data", str(one)])
    assert code == 2 and "two generator families" in err


def test_one_t2i_image_number_stays_on_one_side_of_the_split_whichever_generator(tmp_path):
    from realitycheck.intake.data import collect_sources, load_manifest, split_items

    folder = tmp_path / "t2i"
    folder.mkdir()
    for gen in ("SDXL", "FLUX1_dev"):
        for n in range(40):
            (folder / f"{gen}_image_{n:07d}.jpg").write_bytes(b"")
    m = tmp_path / "m.toml"
    m.write_text("".join(
        f'[[source]]\nname = "{g.lower()}"\npath = "t2i"\nlabel = "fake"\ninclude = \'^{g}_image_\'\n'
        f'group = \'^.*_image_(\\d+)$\'\ngroup_scope = "t2i"\n\n' for g in ("SDXL", "FLUX1_dev")))
    splits = split_items(collect_sources(load_manifest(m)))
    number = lambda it: it.path.stem.rsplit("_", 1)[1]  # noqa: E731
    sides = {s: {number(it) for it in items} for s, items in splits.items()}
    assert not (sides["train"] & sides["val"]) and not (sides["train"] & sides["test"]) and not (sides["val"] & sides["test"])
    assert all(len(v) for v in sides.values())


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data beside the checkout (the shared images)")
def test_the_shared_manifest_splits_the_new_sources_leak_free():
    import re

    from realitycheck.intake.data import collect_sources, load_manifest, split_items

    splits = split_items(collect_sources(load_manifest(MANIFEST)))
    key = {"sdxl": r"_image_(\d+)", "flux1_schnell": r"_image_(\d+)", "flux1_dev": r"_image_(\d+)",
           "studio": r"^(london_\d+)_"}
    for side_a, side_b in (("train", "val"), ("train", "test"), ("val", "test")):
        for pattern in set(key.values()):
            ids = {s: {re.search(pattern, it.path.name).group(1) for it in splits[s] if it.source in key
                       and re.search(pattern, it.path.name)} for s in (side_a, side_b)}
            assert not (ids[side_a] & ids[side_b]), (side_a, side_b, pattern)
    sources = {it.source for its in splits.values() for it in its}
    assert {"sdxl", "flux1_schnell", "flux1_dev", "studio"} <= sources
    assert {s.name: s.family for s in load_manifest(MANIFEST) if s.family} == {
        "stylegan1": "StyleGAN", "sd21": "Stable Diffusion 2.1", "sdxl": "SDXL", "flux1_schnell": "FLUX",
        "flux1_dev": "FLUX"}


def test_the_dashboard_shows_the_guess_beside_a_fake_verdict(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from realitycheck.model import checkpoints, models
    from realitycheck.model.checkpoints import ModelCard, Preprocessing

    rng = np.random.default_rng(0)
    head = AttributionHead(("FLUX", "SDXL"), rng.normal(size=(2, 1280)) * 0.01, np.array([0.0, 3.0]), 0.5)
    card = ModelCard(name="with-head", arch="efficientnet_lite0", threshold=1e-4,  # every image is a FAKE verdict (and a card threshold below the old 0.01 slider floor must not break the sidebar)
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3),
                     attribution=head.card_entry())
    path = checkpoints.save_checkpoint(tmp_path / "with-head.pt", models.build_model("efficientnet_lite0"), card,
                                       extras={"attribution": head.to_tensors()})
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(path))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    photo = (Path(__file__).resolve().parents[1] / "sample_images" / "grace_hopper.jpg").read_bytes()
    at.file_uploader(key="classify_files").set_value(("g.jpg", photo, "image/jpeg"))
    at.button(key="FormSubmitter:classify_form-Classify").click()
    at.run()
    assert not at.exception, at.exception
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "looks like: SDXL" in text  # bias 3 vs 0: SDXL at about 95%
