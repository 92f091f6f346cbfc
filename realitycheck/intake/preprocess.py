"""Image -> model input, without torchvision: the same pixels as its transforms, a second less to start.

`import torchvision` pulls in torch._dynamo and every model family (about a second on this
2-core machine), which dominated the CLI's cold start. Prediction needs four small steps; they
are written here on PIL and torch so that they give exactly what torchvision's `Resize`,
`CenterCrop`, `ToTensor` and `Normalize` give on a PIL image (`tests/test_preprocess.py` checks
bit-equality). Training keeps torchvision for its augmentations.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                 "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Shorter side -> `size`, aspect kept (the longer side truncated as torchvision does)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    try:
        resample = INTERPOLATION[interpolation]
    except KeyError:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {', '.join(INTERPOLATION)}") from None
    return img.resize((new_w, new_h), resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central size x size square; an image smaller than that is first padded with black."""
    w, h = img.size
    if size > w or size > h:
        pw, ph = max(size, w), max(size, h)
        canvas = Image.new(img.mode, (pw, ph))
        canvas.paste(img, ((size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0))
        img, (w, h) = canvas, (pw, ph)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float32 (3, H, W) in [0, 1].

    In numpy, not torch: these small torch ops woke torch's thread pool for every view, and with
    another process on the 2 cores they took 10-30 ms a view instead of 0.2 (measured 2026-12-06).
    The same IEEE float32 operations (convert, then divide), so the same bits as torchvision's ToTensor."""
    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
    x = np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32)
    x /= np.float32(255)
    return torch.from_numpy(x)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, float32, as torchvision's Normalize (numpy: see `to_tensor`)."""
    xn = np.array(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32, copy=True)
    xn -= np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    xn /= np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return torch.from_numpy(xn)


class Normalized:
    """An image already at the model's input size -> normalised tensor."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(img), self.mean, self.std)


class WholeImage(Normalized):
    """A whole image -> tensor: resize the shorter side (none when `resize` is 0: native scale, the
    crop-never-resize recipe), centre crop, normalise."""

    def __init__(self, resize: int, crop: int, mean, std, interpolation: str = "bilinear"):
        super().__init__(mean, std)
        self.resize, self.crop, self.interpolation = resize, crop, interpolation

    def framed(self, img: Image.Image) -> Image.Image:
        """What the model sees, as an image (for overlays)."""
        scaled = resize_shorter(img, self.resize, self.interpolation) if self.resize else img
        return center_crop(scaled, self.crop)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return super().__call__(self.framed(img))
