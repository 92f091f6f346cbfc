"""The torchvision-free preprocessing gives exactly torchvision's pixels (the models were trained on those)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from realitycheck.intake import preprocess
from realitycheck.model.checkpoints import Preprocessing


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(256, 256), (300, 200), (200, 300), (223, 517), (1024, 768), (201, 150), (37, 90)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_whole_image_transform_equals_torchvision(size, interpolation):
    pre = Preprocessing(resize=256, crop=224, interpolation=interpolation)
    ref = T.Compose([T.Resize(pre.resize, interpolation=T.InterpolationMode(interpolation), antialias=True),
                     T.CenterCrop(pre.crop), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    img = _image(*size, seed=sum(size))
    assert torch.equal(pre.transform()(img), ref(img))


@pytest.mark.parametrize("size", [(200, 200), (201, 240), (150, 231)])
def test_a_crop_larger_than_the_image_pads_like_torchvision(size):
    img = _image(*size, seed=1)
    ours = preprocess.center_crop(img, 224)
    assert ours.size == (224, 224)
    assert np.array_equal(np.asarray(ours), np.asarray(T.CenterCrop(224)(img)))


@pytest.mark.parametrize("size", [(300, 200), (180, 240)])
def test_native_scale_is_a_crop_without_resizing(size):
    """resize = 0 (crop-never-resize): only the centre crop, padded like torchvision when too small."""
    pre = Preprocessing(resize=0, crop=224)
    img = _image(*size, seed=4)
    ref = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    assert torch.equal(pre.transform()(img), ref(img))


def test_tensor_transform_equals_torchvision():
    pre = Preprocessing(crop=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    img = _image(224, 224, seed=2)
    assert torch.equal(pre.tensor_transform()(img), T.Compose([T.ToTensor(), T.Normalize(pre.mean, pre.std)])(img))


def test_unknown_interpolation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown interpolation 'spline'"):
        preprocess.resize_shorter(_image(300, 200, 3), 256, "spline")


def test_predicting_does_not_import_torchvision(tmp_path):
    """torchvision's import (with torch._dynamo) was a second of the CLI's cold start."""
    code = ("import sys; from PIL import Image; from realitycheck.model.checkpoints import Preprocessing; "
            "Preprocessing(align='none').transform()(Image.new('RGB', (300, 200))); "
            "from realitycheck.model.inference import Classifier; print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
