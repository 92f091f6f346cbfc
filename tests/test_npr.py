"""npr_resnet (NPR-style up-sampling residuals, Tan et al. CVPR 2024) through the whole package.

Small inputs only (32-64 px): the residual, the network's shapes, the registry entry, a checkpoint
round trip with unfamiliarity statistics through `Classifier`, Grad-CAM on its layer2, and two
training steps through `train.fit`.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image

from realitycheck.model import checkpoints, models
from realitycheck.model.checkpoints import ModelCard, Preprocessing
from realitycheck.model.inference import Classifier
from realitycheck.model.ood import FeatureTap, OODStats, head_module

SMALL = dict(resize=64, crop=64)  # a 64 px card: every path at a fraction of the 224 px cost


def _png(seed: int, side: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def npr():
    torch.manual_seed(0)
    return models.build_model("npr_resnet").eval()


def test_residual_of_a_nearest_upsampled_image_is_zero():
    small = torch.rand(2, 3, 16, 20)
    up = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")
    assert torch.equal(models.npr_residual(up), torch.zeros_like(up))
    x = torch.rand(1, 3, 33, 31)  # odd sizes keep their shape; a noise image has a non-zero residual
    r = models.npr_residual(x)
    assert r.shape == x.shape and r.abs().sum() > 0
    assert torch.equal(r[..., ::2, ::2], torch.zeros_like(r[..., ::2, ::2]))  # each block's anchor pixel
    even = torch.rand(2, 3, 24, 18)  # the paper's formulation, F.interpolate down by 0.5 and up by 2
    nearest = torch.nn.functional.interpolate
    ref = even - nearest(nearest(even, scale_factor=0.5, mode="nearest"), scale_factor=2, mode="nearest")
    assert torch.equal(models.npr_residual(even), ref)
    assert torch.equal(models.npr_residual(even.contiguous(memory_format=torch.channels_last)), ref)


def test_builds_with_a_two_class_head_and_the_paper_shapes(npr):
    assert isinstance(npr, models.NPRResNet)
    assert len(npr.layer1) == 3 and len(npr.layer2) == 4
    assert 1.3e6 < sum(p.numel() for p in npr.parameters()) < 1.6e6
    assert npr(torch.rand(3, 3, 64, 64)).shape == (3, 2)
    assert npr.features(torch.rand(1, 3, 64, 64)).shape == (1, 512, 8, 8)  # stride 8
    spec = models.get_arch("npr_resnet")
    assert spec.from_scratch and spec.classes == ("fake", "real")
    assert models.target_layer(npr, "npr_resnet") is npr.layer2[-1]
    head = head_module(npr, "npr_resnet")
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (512, 2)
    with pytest.raises(models.WeightsUnavailable, match="no pretrained weights"):
        models.build_model("npr_resnet", pretrained=True)


def test_checkpoint_round_trip_through_classifier_with_unfamiliarity(npr, tmp_path):
    card = checkpoints.default_card("npr", "npr_resnet", preprocessing=checkpoints.default_preprocessing(
        "npr_resnet", **SMALL))
    images = [_png(s) for s in range(12)]
    clf0 = Classifier(npr, card, precision="fp32", face_check=False)
    feats = np.stack([f for _, f in clf0.iter_features(images, workers=0)])
    assert feats.shape == (12, 512)  # FeatureTap on the head's input
    stats = OODStats.fit(feats, n_components=4)
    stats.choose_threshold(feats)
    path = checkpoints.save_checkpoint(tmp_path / "npr.pt", npr, card, half=True, extras={"ood": stats.to_tensors()})

    clf = Classifier.from_file(path, face_check=False, precision="fp32")
    assert clf.card.arch == "npr_resnet" and clf.card.classes == ["fake", "real"]
    assert clf.card.preprocessing.mean == models.IMAGENET_MEAN
    preds = clf.predict(images[:3])
    x = torch.stack([card.preprocessing.transform()(Image.open(io.BytesIO(b)).convert("RGB")) for b in images[:3]])
    with torch.no_grad():
        ref = copy.deepcopy(npr).half().float()(x).softmax(1)[:, 0]  # the checkpoint stores fp16 weights
    assert [p.p_fake for p in preds] == pytest.approx(ref.tolist(), abs=1e-4)
    assert all(p.ok and p.unfamiliar is not None and p.ood_score is not None for p in preds)
    with FeatureTap(clf.model, "npr_resnet") as tap, torch.no_grad():
        clf.model(x)
    assert tap.features.shape == (3, 512)


def test_gradcam_heatmap_covers_the_crop(npr):
    from realitycheck import explain as E

    card = ModelCard(name="npr", arch="npr_resnet", preprocessing=Preprocessing(resize=64, crop=48))
    img = Image.open(io.BytesIO(_png(1, 80))).convert("RGB")  # 80 px -> 64 -> centre 48 = 60 px of the input
    ex = E.explain(npr, card, [img], faithfulness=False)[0]
    l, t, r, b = ex.crop_box
    assert ex.region == "centre crop" and (r - l, b - t) == (60, 60) and ex.heatmap.shape == (60, 60)
    assert ex.heatmap.max() > 0  # layer2's 6 x 6 map (stride 8) up-sampled to the region
    assert ex.heatmap.dtype == np.float32 and 0 <= ex.heatmap.min() and ex.heatmap.max() <= 1


def test_fit_trains_from_scratch_and_writes_a_loadable_checkpoint(tmp_path):
    from realitycheck.training.train import TrainConfig, fit
    from tests.helpers import make_toy_folder

    data = make_toy_folder(tmp_path / "toy", side=32, per_class=12, blur=2)
    messages: list[str] = []
    path = fit(TrainConfig(data=str(data), out=str(tmp_path / "npr"), arch="npr_resnet", epochs=1, max_steps=2,
                           batch_size=8, resize=32, crop=32, workers=0, augment="flip", precision="fp32", half=False),
               log=messages.append)
    card = checkpoints.read_card(path)
    assert card.arch == "npr_resnet" and card.init.startswith("random (from scratch)")
    assert any("npr_resnet (random" in m for m in messages)
    clf = Classifier.from_file(path, face_check=False, precision="fp32")
    pred = clf.predict([_png(0, 32)])[0]
    assert pred.ok and 0 <= pred.p_fake <= 1 and pred.unfamiliar is not None


def test_crop_never_resize_keeps_the_native_pixel_grid():
    """resize = 0: training crops, the test-time centre crop and Grad-CAM's region are native pixels."""
    from realitycheck.training.train import train_transform

    rng = np.random.default_rng(3)
    arr = (rng.random((70, 90, 3)) * 255).astype("uint8")
    img = Image.fromarray(arr)
    pre = checkpoints.default_preprocessing("npr_resnet", resize=0, crop=48)
    assert checkpoints.card_problem(ModelCard(name="n", arch="npr_resnet", preprocessing=pre)) is None
    box = pre.crop_box(img.size)
    assert box == (21, 11, 69, 59)
    x = pre.transform()(img)
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    pixels = (x * std + mean) * 255
    l, t, r, b = box
    assert torch.allclose(pixels, torch.from_numpy(arr[t:b, l:r]).permute(2, 0, 1).float(), atol=1e-3)
    # a random training crop is a window of the original pixels (searched at every offset)
    torch.manual_seed(0)
    crop = ((train_transform(pre, "crop")(img) * std + mean) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    windows = [arr[i:i + 48, j:j + 48] for i in range(70 - 47) for j in range(90 - 47)]
    assert any(np.array_equal(crop, w) or np.array_equal(crop[:, ::-1], w) for w in windows)
    assert "no resizing" in checkpoints.card_markdown(ModelCard(name="n", arch="npr_resnet", preprocessing=pre))
