"""Image -> views: the one place that decides what the model looks at.

A view is one model input cut from an image by the card's preprocessing: each detected face aligned
to the card's framing (aligned cards), else the whole image resized and centre-cropped (or, with
`crop_face`, the largest face's crop). Predict, explain, the engines' gate, Ray, training and the
benchmark all take their views from here, so they cannot drift apart; the verdict is the most
suspicious view's (`deciding`), and a prediction keeps which view that was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from realitycheck.intake.faces import (
    Face,
    FaceReport,
    align_face,
    box_in_aligned_view,
    crop_to_face,
    find_faces,
    landmark_position,
)
from realitycheck.model.checkpoints import ModelCard, Preprocessing


@dataclass(frozen=True)
class View:
    """One model input: its pixels, its tensor, what it shows, and which face (None: the whole image)."""

    image: Image.Image  # an aligned face at input size, or the image the whole-image transform frames
    tensor: torch.Tensor  # (3, H, W), normalised
    region: str  # words for what the model saw: "aligned face 2", "centre crop", "face crop"
    face: int | None = None  # index into the FaceReport's faces (largest first)


def face_view(image: Image.Image, landmarks: np.ndarray, pre: Preprocessing) -> Image.Image:
    """A face aligned to the card's framing at its input size (training jitters `landmarks` first)."""
    return align_face(image, landmarks, pre.crop, pre.zoom)


def image_views(image: Image.Image, pre: Preprocessing, report: FaceReport | None, *,
                crop_face: bool = False) -> list[View]:
    """The views of an RGB image given its faces: one per face for aligned cards, else one whole-image view."""
    found = report is not None and report.count > 0
    if pre.align == "face" and found:
        norm = pre.tensor_transform()
        faces = [face_view(image, f.landmarks, pre) for f in report.faces]
        return [View(img, norm(img), f"aligned face {i + 1}", i) for i, img in enumerate(faces)]
    if pre.align != "face" and crop_face and found:
        image = crop_to_face(image, report.boxes[0])
        return [View(image, pre.transform()(image), "face crop")]
    return [View(image, pre.transform()(image), "centre crop")]  # no face to align: the whole image


def needs_faces(pre: Preprocessing, face_check: bool) -> bool:
    """Whether the faces must be found: aligned cards need them; others only for the face check."""
    return face_check or pre.align == "face"


def find_views(image: Image.Image, pre: Preprocessing, *, face_check: bool = True,
               crop_face: bool = False) -> tuple[list[View], FaceReport]:
    """Find the faces (when needed) and cut the views: what every path runs on one decoded image."""
    report = find_faces(image) if needs_faces(pre, face_check) else FaceReport(count=0, available=False)
    return image_views(image, pre, report, crop_face=crop_face), report


def deciding(p_fake_per_view) -> int:
    """Which view decides: the most suspicious one (the image is as suspicious as its most suspicious face)."""
    p = [float(v) for v in p_fake_per_view]
    return p.index(max(p))


def mirror_margin(card: ModelCard) -> float | None:
    """The card's margin around the threshold inside which the mirror view is computed; None (every
    view gets its mirror) for cards without the rule, which all cards before it were."""
    m = (card.views or {}).get("mirror_margin")
    return None if m is None else float(m)


def needs_mirror(p_first, threshold: float, margin: float | None) -> np.ndarray:
    """Which views also need their mirror image (cards that average the two): every view without a
    margin (a card without the rule, or `--views all`); else only those whose first p_fake lies
    within `margin` of the threshold, the only ones whose verdict the mirror could change. The card's
    margin is chosen on validation (`realitycheck views`): away from it one view gives the verdict two would."""
    p = np.asarray(p_first, dtype=float).reshape(-1)
    if margin is None:
        return np.ones(len(p), dtype=bool)
    return np.abs(p - float(threshold)) < float(margin)


def explained_image(view: View, pre: Preprocessing) -> Image.Image:
    """The view's pixels at input size, as a heatmap is drawn on them (an aligned face, or the framed image)."""
    return view.image if view.face is not None else pre.transform().framed(view.image)


def face_geometry(face: Face, pre: Preprocessing) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(the face's box, its five landmarks) inside its aligned view."""
    return box_in_aligned_view(face, pre.crop, pre.zoom), landmark_position(face.landmarks, pre.crop, pre.zoom)
