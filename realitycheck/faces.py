"""Face check: how many faces an image holds, where, and an optional crop to the largest.

OpenCV's Haar cascade is used because it ships inside opencv-python-headless (<5), which
pytorch-grad-cam already depends on: no extra dependency, no model download, ~10 ms per image
on 2 cores. MTCNN would need facenet-pytorch (which pins older torch releases) or a weights
download; scikit-image's LBP cascade is slower and adds scikit-image. The detector only tells
the user whether the photo matches what the classifier was trained on; it is not a verdict.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DETECT_MAX_SIDE = 480  # detection runs on a downscaled copy; faces smaller than ~5% are ignored


@dataclass
class FaceReport:
    count: int
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h), largest first
    available: bool = True  # False when OpenCV/cascade is missing: count is then unknown

    @property
    def message(self) -> str:
        if not self.available:
            return "face check unavailable"
        if self.count == 0:
            return "no face found: the model was trained on clear, frontal, prominent faces, so this verdict is unreliable"
        if self.count == 1:
            return "1 face found"
        return f"{self.count} faces found: the verdict covers the whole image, not each face"


_local = threading.local()  # cv2 cascades are not thread-safe; one per thread


def _cascade():
    c = getattr(_local, "cascade", None)
    if c is None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path} (opencv-python-headless>=5 ships none; pin <5)")
        _local.cascade = c
    return c


def find_faces(image: Image.Image) -> FaceReport:
    """Detect frontal faces; boxes are in the coordinates of `image`."""
    try:
        cascade = _cascade()
        import cv2
    except Exception:  # pragma: no cover - depends on the installation
        return FaceReport(count=0, available=False)
    w, h = image.size
    scale = min(1.0, DETECT_MAX_SIDE / max(w, h))
    small = image if scale == 1.0 else image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    gray = np.asarray(small.convert("L"))
    if min(gray.shape) < 24:
        return FaceReport(count=0)
    gray = cv2.equalizeHist(gray)
    min_side = max(20, int(0.08 * min(gray.shape)))
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in (found if len(found) else [])]
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    return FaceReport(count=len(boxes), boxes=boxes)


def crop_to_face(image: Image.Image, box: tuple[int, int, int, int], margin: float = 0.35) -> Image.Image:
    """Square crop around a face box with context (hairline, chin, ears), clipped to the image."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    cx, cy = x + w / 2, y + h / 2
    left = int(max(0, cx - side / 2))
    top = int(max(0, cy - side / 2))
    right = int(min(image.size[0], left + side))
    bottom = int(min(image.size[1], top + side))
    return image.crop((left, top, right, bottom))
