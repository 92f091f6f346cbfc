"""realitycheck.explain: heatmaps are non-zero, in the right place, at the right size, and leave no trace.

Small models and small images only: a hand-built 4-channel CNN whose evidence is known, and a
random-init efficientnet_lite0 at 80 px. No ScoreCAM/AblationCAM on a real network.
"""

from __future__ import annotations

import io
import math
import threading
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from realitycheck import explain as E
from realitycheck.model import models
from realitycheck.model.checkpoints import ModelCard, Preprocessing

# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------

IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # tensor = pixels / 255


class Tiny(nn.Module):
    """Fake evidence = brightness. Conv responds to bright pixels (> 0.5), the fc adds it to 'fake'.

    The target layer is `act` (8x8 map for a 32 px input). Dropout makes train mode visible.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.conv.weight.copy_((0.5 + torch.rand(4, 3, 3, 3, generator=g)) / 27)  # ~mean of 27 pixels
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.tensor([[40.0, 30.0, 50.0, 40.0], [-40.0, -30.0, -50.0, -40.0]]))
            self.fc.bias.copy_(torch.tensor([-0.5, 0.5]))

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.act(self.conv(x))).flatten(1)))


TINY_CARD = ModelCard(name="tiny", arch="efficientnet_lite0", preprocessing=Preprocessing(resize=32, crop=32, **IDENTITY))


def patch_image(quadrant: str = "top-left", size: int = 32) -> Image.Image:
    """Dark image with one bright 8x8 patch in the middle of the given quadrant."""
    a = np.full((size, size, 3), 25, np.uint8)
    q = size // 2
    r0 = 0 if quadrant.startswith("top") else q
    c0 = 0 if quadrant.endswith("left") else q
    a[r0 + 4:r0 + 12, c0 + 4:c0 + 12] = 240
    return Image.fromarray(a)


def tiny_explain(model, images, **kw):
    kw.setdefault("faithfulness", False)
    kw.setdefault("progress", False)
    return E.explain(model, TINY_CARD, images, target_layer=model.act, **kw)


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    m = models.build_model("efficientnet_lite0", pretrained=False)
    return m.eval()


@pytest.fixture(scope="module")
def card80():
    return ModelCard(name="t", arch="efficientnet_lite0", preprocessing=Preprocessing(resize=96, crop=80))


def rand_image(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def count_hooks(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    return sum(len(getattr(m, n, {})) for m in model.modules() for n in names)


def flags(model):
    return [p.requires_grad for p in model.parameters()]


def quadrant_means(h):
    H, W = h.shape
    return {"top-left": h[:H // 2, :W // 2].mean(), "top-right": h[:H // 2, W // 2:].mean(),
            "bottom-left": h[H // 2:, :W // 2].mean(), "bottom-right": h[H // 2:, W // 2:].mean()}


# ---------------------------------------------------------------------------------------------
# Gradients with frozen backbones, layouts, batches
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", ["backbone", "everything"])
@pytest.mark.parametrize("copy_model", [True, False])
def test_frozen_model_gives_nonzero_cam_and_flags_restored(effnet, card80, freeze, copy_model):
    models.freeze_backbone(effnet, "efficientnet_lite0")
    if freeze == "everything":
        for p in effnet.parameters():
            p.requires_grad_(False)
    before = flags(effnet)
    try:
        ex = E.explain(effnet, card80, [rand_image(96, 96, 1)], faithfulness=False, copy_model=copy_model)
        assert ex[0].heatmap.max() > 0.5 and ex[0].heatmap.std() > 0
        assert flags(effnet) == before
        assert all(p.grad is None for p in effnet.parameters())  # no gradient left behind
    finally:
        for p in effnet.parameters():
            p.requires_grad_(True)


def test_same_map_as_plain_gradcam_on_trainable_model(effnet):
    """The leaf trick (no parameter needs grad) changes speed, not the heatmap."""
    card = ModelCard(name="t", arch="efficientnet_lite0", preprocessing=Preprocessing(resize=80, crop=80))
    img = rand_image(80, 80, 2)
    x = card.preprocessing.transform()(img)[None]
    ref_model = models.build_model("efficientnet_lite0")
    ref_model.load_state_dict(effnet.state_dict())
    ref_model.eval()
    with GradCAM(ref_model, [ref_model._head_act]) as cam:
        ref = cam(x, [ClassifierOutputTarget(0)])[0]
    models.freeze_backbone(effnet, "efficientnet_lite0")
    try:
        ex = E.explain(effnet, card, [img], target_class="fake", faithfulness=False)[0]
    finally:
        for p in effnet.parameters():
            p.requires_grad_(True)
    assert ex.region == "full image" and ex.heatmap.shape == ref.shape
    np.testing.assert_allclose(ex.heatmap, ref, atol=1e-4)


def test_existing_grads_and_train_mode_preserved():
    model = Tiny()
    model.train()
    out = model(torch.rand(1, 3, 32, 32)).sum()
    out.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ex = tiny_explain(model, [patch_image()], copy_model=False)
    assert model.training and model.drop.training  # mode restored
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])  # pytorch-grad-cam's zero_grad undone
    eval_model = Tiny().eval()
    with torch.no_grad():
        p = torch.softmax(eval_model(TINY_CARD.preprocessing.transform()(patch_image())[None]), -1)[0, 0]
    assert ex[0].p_fake == pytest.approx(float(p), abs=1e-6)  # computed in eval mode (no dropout)


def test_batch_gives_distinct_maps(effnet, card80):
    imgs = [rand_image(96, 96, s) for s in range(4)]
    ex = E.explain(effnet, card80, imgs, batch_size=3, faithfulness=False)
    assert len(ex) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(ex[i].heatmap, ex[j].heatmap)
    # batching does not change results
    single = E.explain(effnet, card80, imgs[3:], faithfulness=False)[0]
    np.testing.assert_allclose(single.heatmap, ex[3].heatmap, atol=1e-4)
    assert single.p_fake == pytest.approx(ex[3].p_fake, abs=1e-5)


def test_heatmap_matches_region_the_model_saw(effnet, card80):
    wide = rand_image(120, 90, 3)
    ex = E.explain(effnet, card80, [wide], faithfulness=False)[0]
    box = card80.preprocessing.crop_box(wide.size)
    l, t, r, b = box
    assert ex.region == "centre crop" and ex.crop_box == box
    assert ex.heatmap.shape == (b - t, r - l) and ex.heatmap.dtype == np.float32
    assert ex.region_image.size == (r - l, b - t)
    assert 0 <= ex.heatmap.min() and ex.heatmap.max() <= 1

    full = ModelCard(name="t", arch="efficientnet_lite0", preprocessing=Preprocessing(resize=80, crop=80))
    for side in (80, 150):
        sq = rand_image(side, side, 4)
        ex = E.explain(effnet, full, [sq], faithfulness=False)[0]
        assert ex.region == "full image" and ex.crop_box == (0, 0, side, side)
        assert ex.heatmap.shape == (side, side)


def test_non_rgb_input_accepted(effnet, card80):
    gray = rand_image(96, 96, 5).convert("L")
    ex = E.explain(effnet, card80, gray, faithfulness=False)  # a single image is accepted too
    assert len(ex) == 1 and ex[0].region_image.mode == "RGB"


# ---------------------------------------------------------------------------------------------
# Planted evidence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quadrant", ["top-left", "bottom-right"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam", "scorecam", "ablationcam"])
def test_heatmap_hottest_where_evidence_was_planted(quadrant, method):
    ex = tiny_explain(Tiny(), [patch_image(quadrant)], method=method, batch_size=2)[0]
    assert ex.target_class == "fake" and ex.p_fake > 0.9
    means = quadrant_means(ex.heatmap)
    assert max(means, key=means.get) == quadrant
    y, x = np.unravel_index(ex.heatmap.argmax(), ex.heatmap.shape)
    assert (y < 16) == quadrant.startswith("top") and (x < 16) == quadrant.endswith("left")


def test_faithfulness_on_planted_evidence():
    ex = tiny_explain(Tiny(), [patch_image("top-left")], faithfulness=True)[0]
    f = ex.faithfulness
    assert math.isfinite(f.drop_hot) and math.isfinite(f.drop_random)
    assert f.drop_hot > 0.3 and f.score > 0.2  # removing the bright patch removes the evidence
    assert f.score == pytest.approx(f.drop_hot - f.drop_random)
    assert "fake" in f.meaning and "the heatmap points at evidence the model uses" in f.meaning
    again = tiny_explain(Tiny(), [patch_image("top-left")], faithfulness=True)[0].faithfulness
    assert again == f  # seeded


def test_faithfulness_finite_on_real_network(effnet, card80):
    rng_state = torch.get_rng_state()
    ex = E.explain(effnet, card80, [rand_image(96, 96, s) for s in range(2)])
    assert torch.equal(torch.get_rng_state(), rng_state)  # caller's RNG untouched
    for e in ex:
        assert e.faithfulness is not None
        assert math.isfinite(e.faithfulness.drop_hot) and math.isfinite(e.faithfulness.drop_random)
        assert isinstance(e.faithfulness.meaning, str) and e.faithfulness.meaning.endswith(".")
    assert E.explain(effnet, card80, [rand_image(96, 96, 0)], faithfulness=False)[0].faithfulness is None


def test_faithfulness_meaning_sentences():
    good = E.Faithfulness(0.31, 0.04, target_class="fake")
    assert good.meaning == ("Removing the hottest 20% of pixels lowers confidence in fake by 31 points vs 4 "
                            "for random pixels: the heatmap points at evidence the model uses.")
    assert "treat this heatmap with caution" in E.Faithfulness(0.05, 0.08, target_class="real").meaning
    assert "cannot confirm" in E.Faithfulness(0.001, 0.0, target_class="real").meaning
    assert "raises confidence" in E.Faithfulness(-0.1, 0.02).meaning


# ---------------------------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------------------------

def test_predicted_class_by_default_and_either_on_request(effnet, card80):
    imgs = [rand_image(96, 96, s) for s in range(3)]
    for e in E.explain(effnet, card80, imgs, faithfulness=False):
        assert e.target_class == e.predicted_class == ("fake" if e.p_fake >= 0.5 else "real")
    for cls in ("fake", "real"):
        ex = E.explain(effnet, card80, imgs, target_class=cls, faithfulness=False)
        assert {e.target_class for e in ex} == {cls}
    fake_map = E.explain(effnet, card80, imgs[:1], target_class="fake", faithfulness=False)[0].heatmap
    real_map = E.explain(effnet, card80, imgs[:1], target_class="real", faithfulness=False)[0].heatmap
    assert not np.allclose(fake_map, real_map)
    with pytest.raises(ValueError, match="not one of"):
        E.explain(effnet, card80, imgs, target_class="cat")


def test_tiny_model_predicts_real_for_dark_image():
    dark = Image.new("RGB", (32, 32), (20, 20, 20))
    ex = tiny_explain(Tiny(), [dark, patch_image()])
    assert [e.predicted_class for e in ex] == ["real", "fake"]
    assert [e.target_class for e in ex] == ["real", "fake"]


# ---------------------------------------------------------------------------------------------
# No state left on the model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("copy_model", [True, False])
def test_hooks_released_over_repeated_calls(effnet, card80, copy_model):
    img = rand_image(96, 96, 6)
    E.explain(effnet, card80, [img], faithfulness=False, copy_model=copy_model)  # warm the private copy
    work = E.shared_copy(effnet).work
    before = (count_hooks(effnet), count_hooks(work))
    for method in ("gradcam", "gradcam++", "eigencam", "gradcam", "layercam"):
        E.explain(effnet, card80, [img], method=method, copy_model=copy_model)
    assert (count_hooks(effnet), count_hooks(work)) == before


def test_private_copy_reused_and_refreshed_when_weights_change():
    model = Tiny().eval()
    tiny_explain(model, [patch_image()])
    first = E.shared_copy(model).work
    tiny_explain(model, [patch_image()])
    assert E.shared_copy(model).work is first  # cached
    with torch.no_grad():
        model.fc.weight.neg_()  # now brightness is evidence for "real"
    ex = tiny_explain(model, [patch_image()])[0]
    assert E.shared_copy(model).work is not first and ex.predicted_class == "real"


@pytest.mark.parametrize("method", ["ablationcam", "scorecam"])
@pytest.mark.parametrize("copy_model", [True, False])
def test_cancelled_slow_run_leaves_model_intact(method, copy_model):
    model = Tiny().eval()
    model.conv.weight.requires_grad_(False)
    before_flags, before_hooks = flags(model), count_hooks(model)
    act = model.act

    def cancel(done, total):
        raise KeyboardInterrupt("user pressed stop")

    with pytest.raises(KeyboardInterrupt):
        tiny_explain(model, [patch_image()], method=method, batch_size=1, progress=cancel, copy_model=copy_model)
    assert model.act is act  # AblationCAM swapped the layer back
    assert flags(model) == before_flags and count_hooks(model) == before_hooks
    if copy_model:
        work = E.shared_copy(model).work
        assert isinstance(work.act, nn.ReLU) and count_hooks(work) == 0
    assert tiny_explain(model, [patch_image()], method=method, copy_model=copy_model)[0].predicted_class == "fake"


def test_concurrent_predictions_undisturbed_by_slow_explanation():
    """A shared model (Streamlit) keeps answering correctly while AblationCAM runs on it."""
    model = Tiny().eval()
    x = TINY_CARD.preprocessing.transform()(patch_image())[None]
    with torch.inference_mode():
        expected = model(x)
    errors, done = [], threading.Event()

    def predict_loop():
        while not done.is_set():
            with torch.inference_mode():
                if not torch.allclose(model(x), expected):
                    errors.append("prediction changed during explanation")

    t = threading.Thread(target=predict_loop)
    t.start()
    try:
        for _ in range(5):
            tiny_explain(model, [patch_image()] * 2, method="ablationcam", batch_size=1)
    finally:
        done.set()
        t.join()
    assert not errors


def test_concurrent_explanations_agree():
    model = Tiny().eval()
    imgs = [patch_image(q) for q in ("top-left", "bottom-right")]
    ref = [e.heatmap for e in tiny_explain(model, imgs)]
    results = [None] * 4

    def run(i):
        results[i] = [e.heatmap for e in tiny_explain(model, imgs, copy_model=bool(i % 2))]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in results:
        for a, b in zip(r, ref):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_works_inside_callers_inference_mode(effnet, card80):
    img = rand_image(96, 96, 7)
    ref = E.explain(effnet, card80, [img], faithfulness=False)[0]
    with torch.inference_mode():
        ex = E.explain(effnet, card80, [img], faithfulness=True, copy_model=False)[0]
        assert torch.is_inference_mode_enabled()
    with torch.no_grad():
        ex2 = E.explain(effnet, card80, [img], faithfulness=False)[0]
        assert not torch.is_grad_enabled()
    np.testing.assert_allclose(ex.heatmap, ref.heatmap, atol=1e-5)
    np.testing.assert_allclose(ex2.heatmap, ref.heatmap, atol=1e-5)
    assert ex.heatmap.max() > 0


def test_model_created_under_inference_mode():
    with torch.inference_mode():
        model = Tiny().eval()
    ex = tiny_explain(model, [patch_image("bottom-right")])[0]  # private copy has normal tensors
    assert max(quadrant_means(ex.heatmap).items(), key=lambda kv: kv[1])[0] == "bottom-right"
    with pytest.raises(ValueError, match="inference_mode"):
        tiny_explain(model, [patch_image()], copy_model=False)


@pytest.mark.parametrize("copy_model", [True, False])
def test_target_layer_must_belong_to_model(copy_model):
    with pytest.raises(ValueError, match="not a module"):
        E.explain(Tiny(), TINY_CARD, [patch_image()], target_layer=nn.ReLU(), progress=False, copy_model=copy_model)


# ---------------------------------------------------------------------------------------------
# Methods, progress, estimates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(set(E.METHODS) - E.SLOW_METHODS))
def test_every_fast_method_runs(method):
    ex = tiny_explain(Tiny(), [patch_image(), patch_image("bottom-left")], method=method, faithfulness=True)
    assert len(ex) == 2 and all(e.method == method for e in ex)
    for e in ex:
        assert e.heatmap.shape == (32, 32) and np.isfinite(e.heatmap).all() and e.heatmap.max() > 0
        assert e.seconds > 0 and math.isfinite(e.faithfulness.score)


def test_method_names_and_slow_set():
    assert set(E.METHODS) == {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam",
                              "scorecam", "ablationcam"}
    assert E.SLOW_METHODS == {"scorecam", "ablationcam"}
    assert E.get_method("GradCAM++").name == "gradcam++" and E.get_method("Score-CAM").name == "scorecam"
    with pytest.raises(ValueError, match="unknown CAM method"):
        E.get_method("fullgrad").name


@pytest.mark.parametrize("method", sorted(E.SLOW_METHODS))
def test_slow_methods_report_progress(method):
    calls = []
    ex = tiny_explain(Tiny(), [patch_image(), patch_image("top-right")], method=method, batch_size=3,
                      progress=lambda done, total: calls.append((done, total)))
    per_image = math.ceil(4 / 3)  # 4 channels in batches of 3
    assert calls == [(i, 2 * per_image) for i in range(1, 2 * per_image + 1)]
    assert [max(quadrant_means(e.heatmap).items(), key=lambda kv: kv[1])[0] for e in ex] == ["top-left", "top-right"]


def test_scorecam_matches_library_weights():
    """Our lazily batched ScoreCAM gives the library's result."""
    from pytorch_grad_cam import ScoreCAM

    model = Tiny().eval()
    x = TINY_CARD.preprocessing.transform()(patch_image())[None]
    with ScoreCAM(model, [model.act]) as cam:
        cam.batch_size = 2
        ref = cam(x, [ClassifierOutputTarget(0)])[0]
    ours = tiny_explain(model, [patch_image()], method="scorecam", target_class="fake", batch_size=3)[0]
    np.testing.assert_allclose(ours.heatmap, ref, atol=1e-5)


def test_estimate_seconds(effnet, card80):
    fast = E.estimate_seconds("gradcam", effnet, card80)
    slow = E.estimate_seconds("scorecam", effnet, card80, n_images=2, batch_size=64)
    assert 0 < fast < slow
    assert slow == pytest.approx(2 * E.estimate_seconds("scorecam", effnet, card80, batch_size=64))


# ---------------------------------------------------------------------------------------------
# Words and pictures
# ---------------------------------------------------------------------------------------------

def _blob(row, col, size=90):
    h = np.zeros((size, size), np.float32)
    c = size // 3
    h[row * c + 5:row * c + c - 5, col * c + 5:col * c + c - 5] = 1.0
    return h


def test_overlay_side_by_side_panel_and_png():
    img = rand_image(70, 50, 8)
    heat = _blob(1, 1, 60)  # different size from the image: resized to fit
    ov = E.overlay(img, heat, opacity=0.45)
    assert ov.size == img.size and ov.mode == "RGB"
    assert np.array_equal(np.asarray(E.overlay(img, heat, opacity=0.0)), np.asarray(img))
    with pytest.raises(ValueError):
        E.overlay(img, heat, colormap="no-such-map")
    sbs = E.side_by_side(img, ov)
    assert sbs.size == (2 * 70 + 8, 50)
    outlined = E.outline_hot_regions(ov, heat, top_k=2)
    assert outlined.size == ov.size and not np.array_equal(np.asarray(outlined), np.asarray(ov))
    bar = E.colorbar_image(140)
    assert bar.width == 140 and bar.height > 12
    assert E.colorbar_image(100, vertical=True).height == 100
    panel = E.render_panel(img, heat, caption="fake 97%")
    assert panel.width == sbs.width and panel.height > img.height + bar.height
    png = E.to_png_bytes(panel)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == panel.size


def test_hot_regions_ranked_by_heat():
    h = np.zeros((60, 60), np.float32)
    h[5:15, 5:15] = 1.0
    h[40:50, 40:50] = 0.95
    h[40:44, 5:9] = 0.9
    regions = E.hot_regions(h, top_k=2, percentile=90)
    assert [r.box for r in regions] == [(5, 5, 15, 15), (40, 40, 50, 50)]
    assert E.hot_regions(np.zeros((10, 10))) == []


def test_explanation_helpers(effnet, card80):
    ex = E.explain(effnet, card80, [rand_image(120, 90, 9)], faithfulness=False)[0]
    assert ex.overlay().size == ex.region_image.size
    assert ex.panel().width > 2 * ex.region_image.width
    words = ex.describe([(10, 10, 40, 40)])
    assert words.startswith(f"What looks {'AI-generated' if ex.target_class == 'fake' else 'real'} to the model")
    eig = E.explain(effnet, card80, [rand_image(120, 90, 9)], method="eigencam", faithfulness=False)[0]
    assert any("EigenCAM" in n for n in eig.notes)


def test_where_words_come_from_the_face_found_in_the_input_image(effnet, card80):
    """Explanation.where(image): a whole-image model's evidence is placed on the face the detector finds
    in `image`, by its landmarks (the mouth is named); without an image, only a position in the crop."""
    from realitycheck.intake.faces import find_faces
    from tests.helpers import SAMPLE_IMAGES

    img = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB")
    ex = E.explain(effnet, card80, [img], faithfulness=False)[0]
    left, top, right, bottom = ex.crop_box
    h, w = ex.heatmap.shape
    mouth = find_faces(img).faces[0].landmarks[3:].mean(0)  # in image pixels -> heatmap pixels
    mx, my = (mouth[0] - left) * w / (right - left), (mouth[1] - top) * h / (bottom - top)
    yy, xx = np.mgrid[0:h, 0:w]
    ex.heatmap = np.exp(-((xx + 0.5 - mx) ** 2 + (yy + 0.5 - my) ** 2) / 4.0)
    words = ex.where(img)
    assert "around the mouth" in words and "the mouth and chin" not in words  # landmarks, not the box's thirds
    assert ex.where(None).startswith("No face was found")
    # Given the faces already found (the dashboard passes its Prediction's), the detector does not run again
    report = find_faces(img)
    with mock.patch("realitycheck.intake.faces.find_faces", side_effect=AssertionError("detected twice")):
        assert ex.where(img, report) == words


def test_a_kept_prediction_carries_the_faces_found_in_its_image(effnet, card80):
    """predict(keep_images=True) keeps the FaceReport of the image it keeps (what Explanation.where
    reuses); the JSON form leaves both out."""
    from realitycheck.intake.faces import find_faces
    from realitycheck.model.inference import Classifier
    from tests.helpers import SAMPLE_IMAGES

    img = Image.open(SAMPLE_IMAGES / "grace_hopper.jpg").convert("RGB")
    clf = Classifier(effnet, card80)
    kept = clf.predict([img], keep_images=True)[0]
    assert kept.face_report is not None and kept.face_report.boxes == find_faces(img).boxes == kept.face_boxes
    assert clf.predict([img])[0].face_report is None
    assert "face_report" not in kept.to_dict() and "image" not in kept.to_dict()


# ---------------------------------------------------------------------------------------------
# Explainer: who owns the private copy
# ---------------------------------------------------------------------------------------------

def test_explainer_owns_its_copy_and_frees_it():
    import gc
    import weakref

    model = Tiny().eval()
    explainer = E.Explainer(model, TINY_CARD, target_layer=model.act)
    ex = explainer.explain([patch_image("bottom-right")], faithfulness=False, progress=False)[0]
    assert max(quadrant_means(ex.heatmap).items(), key=lambda kv: kv[1])[0] == "bottom-right"
    work = explainer.private_copy.work
    assert work is not None and work is not model
    explainer.explain([patch_image()], faithfulness=False, progress=False)
    assert explainer.private_copy.work is work  # reused while the weights are unchanged
    assert model not in E.explainer._shared_copies  # the one-call functions' copy was not made
    gone = weakref.ref(work)
    del work
    explainer.close()
    gc.collect()
    assert gone() is None and explainer.private_copy.work is None
    with E.Explainer(model, TINY_CARD, target_layer=model.act) as scoped:
        assert scoped.estimate_seconds("gradcam") > 0
        gone = weakref.ref(scoped.private_copy.work)
    gc.collect()
    assert gone() is None  # leaving the block freed the copy


def test_method_registry_drives_behaviour():
    assert E.METHODS["gradcam"].needs_gradients and not E.METHODS["gradcam"].slow
    assert set(E.METHOD_NOTES) == {"eigencam", "ablationcam"}
    ex = tiny_explain(Tiny(), [patch_image()], method="ablationcam", batch_size=4)[0]
    assert ex.notes[0] == E.METHODS["ablationcam"].note
