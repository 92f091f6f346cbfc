"""One row per face of a photo, and when the face that decides the verdict is a poor one to trust.

An aligned-face model scores every detected face and the image takes its most suspicious one, so a
small, blurred face in the background can decide a group photo. The rows (face number, size, p_fake,
unfamiliar, small/blurred) and the caveat are the package's, so every front end says the same.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from realitycheck.model.decision import verdict

# A face whose box is narrower than this is upscaled several times to reach the aligned input
# (224 px): what is left of its generator traces is mostly the resampler's.
SMALL_FACE_PX = 64
# Variance of the Laplacian of the face (grey, at most 128 px across, never upscaled): below this the
# face has little fine detail left (out of focus, motion blur, heavy compression). A heuristic, set
# from the first 80 photos with a face of each shared folder (2026-12-05): the lowest values were 25
# (LFW), 92 (FFHQ), 21 (more-real-faces), 141 (studio portraits), 140 (SD 2.1 portraits); the sample
# portraits under a 2 px Gaussian blur read 7-67, under 3 px 4-23.
BLUR_VARIANCE = 20.0


def sharpness(image: Image.Image, box) -> float:
    """Variance of the Laplacian of the face in `box` (x, y, w, h): higher is sharper."""
    x, y, w, h = (int(round(v)) for v in box)
    crop = image.convert("L").crop((max(0, x), max(0, y), x + w, y + h))
    if crop.width < 3 or crop.height < 3:
        return 0.0
    if max(crop.size) > 128:  # compare faces at one scale, never upscaled (that would blur them)
        crop.thumbnail((128, 128), Image.BILINEAR)
    a = np.asarray(crop, dtype=np.float32)
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(lap.var())


def face_rows(pred, image: Image.Image | None = None) -> list[dict]:
    """One dict per face of a Prediction from an aligned-face model (empty otherwise): `face` (1-based,
    the detector's largest-first order), `size` ("W x H px"), `p_fake`, `verdict`, `unfamiliar`
    (None without the check), `small`, `blurred` (None without the image), `deciding` (the face whose
    p_fake is the image's)."""
    if not pred.ok or not pred.face_p_fake:
        return []
    image = image if image is not None else pred.image
    deciding = int(np.argmax(pred.face_p_fake))
    rows = []
    for i, (box, p) in enumerate(zip(pred.face_boxes, pred.face_p_fake)):
        w, h = int(box[2]), int(box[3])
        unf = pred.face_unfamiliar[i] if i < len(pred.face_unfamiliar) else None
        rows.append({"face": i + 1, "size": f"{w} x {h} px", "width_px": w, "p_fake": float(p),
                     "verdict": verdict(p, pred.threshold), "unfamiliar": unf,
                     "small": min(w, h) < SMALL_FACE_PX,
                     "blurred": None if image is None else sharpness(image, box) < BLUR_VARIANCE,
                     "deciding": i == deciding})
    return rows


def deciding_face_caveat(rows: list[dict]) -> str | None:
    """A plain sentence when the face that decides the verdict is small or blurred (None otherwise)."""
    worst = next((r for r in rows if r["deciding"]), None)
    if worst is None or not (worst["small"] or worst["blurred"]):
        return None
    what = " and ".join(w for w, on in (("small", worst["small"]), ("blurred", worst["blurred"])) if on)
    others = len(rows) - 1
    return (f"The verdict comes from face {worst['face']} ({worst['size']}), which is {what}: the model was "
            "trained on clear, prominent faces, so this verdict is unreliable"
            + (f". Look at the other face{'s' if others > 1 else ''} in the table and explain each on its own."
               if others else "."))


def verdict_caveat(pred) -> str | None:
    """Why a verdict is unreliable on its face, for its headline (None: nothing to say). With no face
    found the model, trained on faces, scored the whole image's centre: the headline must say so."""
    if pred.ok and pred.faces == 0:
        return "unreliable: no face found, so the whole image's centre was scored"
    return None
