"""A heatmap in words a non-specialist can check against the picture.

On a press photo the hot spot may be a necktie or the background, so the words are relative to
the face the detector found: which part of the face holds the evidence (forehead, eyes, nose,
cheeks, mouth, chin and jaw: placed by the detector's five landmarks, so a tilted face is read
along its own axes), or that it lies outside the face. Without landmarks the face box's thirds
are used. For an aligned-face model the face's box and landmarks inside the aligned view are
known (`faces.box_in_aligned_view`, `faces.landmark_position`), so the same words apply.
`Explanation.describe` is the one caller.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

HOT_SHARE = 0.10  # the hottest 10% of the heatmap's pixels are "where the evidence is"
MOSTLY = 0.5  # more than half of that evidence inside (or outside) the face decides the wording

# Upper, middle and lower third of a detector's face box (brows to chin): when there are no landmarks.
_FACE_THIRDS = ("the eyes and forehead", "the nose and cheeks", "the mouth and chin")
# Parts of the face placed by the five landmarks (`face_parts`).
FACE_PARTS = ("the forehead", "the eyes", "the nose", "the cheeks", "the mouth", "the chin and jaw")
_OUTSIDE = {
    "above": "above the face (hair, headwear or background)",
    "below": "below the face (neck, clothing or background)",
    "beside": "beside the face (hair, ears or background)",
}
_CLASS_WORDS = {"fake": "AI-generated", "real": "real"}


def _hot_mask(heat: np.ndarray) -> np.ndarray:
    cut = np.quantile(heat, 1.0 - HOT_SHARE)
    mask = heat >= cut
    return mask & (heat > 0)


def face_box_in_region(box: Sequence[int], crop_box: Sequence[int]) -> tuple[int, int, int, int]:
    """A face box (x, y, w, h in image pixels) as (left, top, right, bottom) in the heatmap's crop."""
    x, y, w, h = (int(v) for v in box)
    left, top = int(crop_box[0]), int(crop_box[1])
    return x - left, y - top, x - left + w, y - top + h


def face_parts(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """An HxW map of indices into FACE_PARTS, from five landmarks in the heatmap's pixels.

    Coordinates along the face's own axes, in eye distances d: across (from the left eye to the
    right) and down (from the eye line to the mouth). Bands: forehead above the eyes, the eye band,
    then nose (near the nose tip's column) or cheeks, the mouth band, and chin/jaw below it.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    e1, e2 = lm[0], lm[1]
    eye_l, eye_r = (e1, e2) if e1[0] <= e2[0] else (e2, e1)
    d = max(float(np.hypot(*(eye_r - eye_l))), 1e-6)
    across = (eye_r - eye_l) / d
    down = np.array([-across[1], across[0]])  # image y grows downwards
    centre = (eye_l + eye_r) / 2
    mouth = (lm[3] + lm[4]) / 2
    mouth_down = max(float((mouth - centre) @ down) / d, 0.6)
    mouth_half = max(float(abs((lm[4] - lm[3]) @ across)) / d / 2, 0.3)
    nose_across = float((lm[2] - centre) @ across) / d
    mouth_across = float((mouth - centre) @ across) / d
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    rel_x, rel_y = xs + 0.5 - centre[0], ys + 0.5 - centre[1]
    a = (rel_x * across[0] + rel_y * across[1]) / d
    b = (rel_x * down[0] + rel_y * down[1]) / d
    eye_band, mouth_band = 0.3, 0.25
    parts = np.full(shape, FACE_PARTS.index("the cheeks"), dtype=np.int8)
    mid = (b > eye_band) & (b < mouth_down - mouth_band)
    parts[mid & (np.abs(a - nose_across) <= 0.3)] = FACE_PARTS.index("the nose")
    in_mouth = (b >= mouth_down - mouth_band) & (b <= mouth_down + mouth_band)
    parts[in_mouth & (np.abs(a - mouth_across) <= mouth_half + 0.15)] = FACE_PARTS.index("the mouth")
    parts[b > mouth_down + mouth_band] = FACE_PARTS.index("the chin and jaw")
    parts[np.abs(b) <= eye_band] = FACE_PARTS.index("the eyes")
    parts[b < -eye_band] = FACE_PARTS.index("the forehead")
    return parts


def face_outline(shape: tuple[int, int], landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face's outline from its five landmarks: (inside mask, across, down) over an HxW map, where
    across/down are each pixel's coordinates along the face's own axes in units of m, the distance
    from the eye line to the mouth (which a turned head keeps, unlike the eye distance).

    An ellipse from the hairline (1.15 m above the eyes) to the chin (0.8 m below the mouth), 1.1 m
    to each side, shifted away from the nose in a turned head: a detector's box also holds hair,
    ears and background at its edges, which are not "the forehead" or "the cheeks".
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    e1, e2 = lm[0], lm[1]
    eye_l, eye_r = (e1, e2) if e1[0] <= e2[0] else (e2, e1)
    d = max(float(np.hypot(*(eye_r - eye_l))), 1e-6)
    ax = (eye_r - eye_l) / d
    dn = np.array([-ax[1], ax[0]])
    centre = (eye_l + eye_r) / 2
    m = max(float(((lm[3] + lm[4]) / 2 - centre) @ dn), 0.6 * d, 1e-6)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    rel_x, rel_y = xs + 0.5 - centre[0], ys + 0.5 - centre[1]
    a = (rel_x * ax[0] + rel_y * ax[1]) / m
    b = (rel_x * dn[0] + rel_y * dn[1]) / m
    nose = float((lm[2] - centre) @ ax) / m  # a turned head: the nose points the way it faces
    top, bottom, half = -1.15, 1.8, 1.1
    mid_b, half_b = (top + bottom) / 2, (bottom - top) / 2
    inside = ((a + 0.5 * nose) / half) ** 2 + ((b - mid_b) / half_b) ** 2 <= 1.0
    return inside, a, b


def describe_evidence(heatmap: np.ndarray, crop_box: Sequence[int], face_boxes: Sequence[Sequence[int]],
                      target_class: str, landmarks: np.ndarray | None = None) -> str:
    """Where the evidence for `target_class` lies, relative to the largest detected face.

    heatmap: HxW over the crop the model saw; crop_box: that crop in the image (left, top, right,
    bottom); face_boxes: the detector's boxes in image pixels, largest first (may be empty);
    landmarks: the largest face's five landmarks in image pixels, if known (names the parts).
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    what = f"what looks {_CLASS_WORDS.get(target_class, target_class)} to the model"
    subject = what[0].upper() + what[1:]
    if heat.ndim != 2 or heat.size == 0 or heat.max() <= 0:
        return f"The heatmap is empty: nothing in the picture {what.replace('what looks', 'looks')}."
    hot = _hot_mask(heat)
    weight = heat * hot
    total = weight.sum()
    h, w = heat.shape
    if not face_boxes:
        ys, xs = np.nonzero(hot)
        cy, cx = float(np.average(ys, weights=weight[ys, xs])) / h, float(np.average(xs, weights=weight[ys, xs])) / w
        vert = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
        horiz = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
        place = "centre" if (vert, horiz) == ("middle", "centre") else f"{vert} {horiz}".replace("middle ", "")
        return (f"No face was found, so only the position can be given: {what} is mostly in the {place} "
                "of the part of the picture the model saw.")
    fl, ft, fr, fb = face_box_in_region(face_boxes[0], crop_box)
    cl, ct, cr, cb = max(fl, 0), max(ft, 0), min(fr, w), min(fb, h)
    has_landmarks = landmarks is not None and np.all(np.isfinite(landmarks))
    if has_landmarks:  # the face's outline, not its box: hair and background at the box's edges are outside
        lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2) - [float(crop_box[0]), float(crop_box[1])]
        outline, a_face, b_face = face_outline((h, w), lm)
        inside = float(weight[outline].sum() / total)
        if inside <= MOSTLY:
            out_w = weight * ~outline
            side = {"above": out_w[b_face < -0.3].sum(), "below": out_w[b_face > 1.0].sum()}
            side["beside"] = max(float(out_w.sum()) - side["above"] - side["below"], 0.0)
            where = max(side, key=side.get)
            return (f"{subject} is mostly outside the face: {_OUTSIDE[where]} "
                    f"({1 - inside:.0%} of the strongest evidence), not the face itself.")
    else:
        inside = weight[ct:cb, cl:cr].sum() / total if cr > cl and cb > ct else 0.0
    if inside > MOSTLY:
        if has_landmarks:
            in_face = weight * outline
            names = FACE_PARTS
            shares = np.bincount(face_parts((h, w), lm).ravel(), weights=in_face.ravel(), minlength=len(names))
        else:
            names = _FACE_THIRDS
            thirds = np.linspace(ft, fb, 4).round().astype(int)
            shares = []
            for i in range(3):
                t0, t1 = max(thirds[i], 0), min(thirds[i + 1], h)
                shares.append(weight[t0:t1, cl:cr].sum() if t1 > t0 and cr > cl else 0.0)
        order = np.argsort(shares)[::-1]
        parts = [names[order[0]]]
        if shares[order[1]] >= 0.6 * shares[order[0]]:
            parts.append(names[order[1]])
        return (f"{subject} is mostly on the face, around {' and '.join(parts)} "
                f"({inside:.0%} of the strongest evidence).")
    # outside the face: which side holds most of it
    side = {"above": weight[:max(ft, 0), :].sum(), "below": weight[min(max(fb, 0), h):, :].sum()}
    side["beside"] = max(total - inside * total - side["above"] - side["below"], 0.0)
    where = max(side, key=side.get)
    return (f"{subject} is mostly outside the face: {_OUTSIDE[where]} "
            f"({1 - inside:.0%} of the strongest evidence), not the face itself.")


def faithfulness_words(faithfulness) -> str:
    """The faithfulness check in plain words (no "points"): hide the highlighted parts, then random
    parts of the same size, and compare how much the model's confidence falls.

    The verdict at the end (does the heatmap matter?) is `explain.Faithfulness.meaning`'s, so its
    cut-offs have one home.
    """
    f = faithfulness
    pct = f"{f.fraction:.0%}"
    cls = _CLASS_WORDS.get(f.target_class, f.target_class)

    def change(d: float) -> str:
        n = round(abs(d) * 100)
        if n == 0:
            return "hardly changes it"
        return f"{'lowers' if d > 0 else 'raises'} it by {n} in 100"

    from realitycheck.explain.faithfulness import CONCLUSION_WORDS

    if f.conclusion == "empty":
        return "Check: the heatmap is empty, so there is no highlighted part to hide and test."
    verdict = CONCLUSION_WORDS[f.conclusion]
    return (f"Check: hiding the highlighted {pct} of the picture {change(f.drop_hot)} "
            f"(the model's confidence that the photo is {cls}); hiding a random {pct} {change(f.drop_random)}. "
            f"So {verdict}.")
