"""Where a heatmap's evidence concentrates, in words people can check against the picture."""

from __future__ import annotations

import numpy as np

# 3x3 grid of a centred face crop (as in the training data): (what is usually there, where).
# Left/right are the image's left/right, i.e. the viewer's.
_CELLS = {
    (0, 0): ("the hair or background", "upper left"),
    (0, 1): ("the forehead and hairline", "upper centre"),
    (0, 2): ("the hair or background", "upper right"),
    (1, 0): ("the ear, cheek or background", "left edge"),
    (1, 1): ("the eyes and nose", "centre"),
    (1, 2): ("the ear, cheek or background", "right edge"),
    (2, 0): ("the jaw, neck or background", "lower left"),
    (2, 1): ("the mouth and chin", "lower centre"),
    (2, 2): ("the jaw, neck or background", "lower right"),
}


def _grid_shares(heatmap: np.ndarray) -> np.ndarray:
    h, w = heatmap.shape
    ys, xs = np.linspace(0, h, 4).round().astype(int), np.linspace(0, w, 4).round().astype(int)
    sums = np.array([[heatmap[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].sum() for c in range(3)] for r in range(3)])
    total = sums.sum()
    return sums / total if total > 0 else sums


def describe_regions(heatmap: np.ndarray, target_class: str | None = None, max_regions: int = 2) -> str:
    """Where the evidence concentrates, in words, by a 3x3 grid of the face crop.

    The anatomical names assume a centred face filling the crop, as in the training data.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    whose = f"the model's evidence for {target_class}" if target_class else "the model's evidence"
    if heat.ndim != 2 or heat.size == 0 or heat.max() <= 0:
        return f"{whose} is empty: no region stands out"
    shares = _grid_shares(heat)
    if shares.max() < 1.5 / 9:  # nothing well above an even spread
        return f"{whose} is spread across the whole crop: no single region stands out"
    order = sorted(_CELLS, key=lambda rc: -shares[rc])
    top = [rc for rc in order[:max_regions] if shares[rc] >= 0.6 * shares[order[0]]]
    parts = [f"{_CELLS[rc][0]} ({_CELLS[rc][1]})" for rc in top]
    return f"{whose} concentrated around " + " and ".join(parts)
