"""Does a heatmap point at evidence the model uses? Remove its hottest pixels and watch the confidence.

ROAD (remove most relevant first, pytorch-grad-cam) on the CAM vs on a random map of the same blob
size, with noisy linear imputation so the model is not just reacting to black holes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

REMOVE_FRACTION = 0.2  # the faithfulness check removes this share of the pixels


@dataclass(frozen=True)
class Faithfulness:
    """Confidence drops (probability, 0-1) when the hottest vs a random 20% of pixels are removed.

    Pixels are removed with ROAD's noisy linear imputation (pytorch-grad-cam), which fills them in
    from their neighbours so the model is not just reacting to black holes.
    """

    drop_hot: float
    drop_random: float
    target_class: str = field(default="fake", kw_only=True)
    fraction: float = field(default=REMOVE_FRACTION, kw_only=True)
    empty: bool = field(default=False, kw_only=True)  # the heatmap had nothing highlighted

    @property
    def conclusion(self) -> str:
        """THE rule from the two numbers to a conclusion, for every sentence about this check:
        "empty" (nothing highlighted to check), "no effect" (neither removal moves the model),
        "against" (hiding the highlighted part does not lower confidence: it is not evidence for the
        class, whatever random removal does), "supports" (lowers it at least 5 points more than random),
        "weak" (1 to 5 points more), "random" (no more than random)."""
        if self.empty:
            return "empty"
        if max(abs(self.drop_hot), abs(self.drop_random)) < 0.02:
            return "no effect"
        if self.drop_hot <= 0.01:
            return "against"
        if self.score >= 0.05:
            return "supports"
        if self.score > 0.01:
            return "weak"
        return "random"

    @property
    def score(self) -> float:
        """Positive: the heatmap's hot pixels matter more to the model than random ones."""
        return self.drop_hot - self.drop_random

    @property
    def meaning(self) -> str:
        """One plain-language sentence for people."""
        pct = f"{self.fraction:.0%}"
        cls = self.target_class
        hot, rnd = _points(self.drop_hot), _points(self.drop_random)
        if self.drop_hot >= 0:
            head = f"Removing the hottest {pct} of pixels lowers confidence in {cls} by {hot} points"
        else:
            head = f"Removing the hottest {pct} of pixels raises confidence in {cls} by {_points(-self.drop_hot)} points"
        tail = f"vs {rnd} for random pixels" if self.drop_random >= 0 else \
            f"vs a {_points(-self.drop_random)}-point rise for random pixels"
        if self.empty:
            return "The heatmap is empty: there is no highlighted part to check, so this check says nothing about it."
        return f"{head} {tail}: {CONCLUSION_WORDS[self.conclusion]}."


CONCLUSION_WORDS = {
    "no effect": "neither removal moves the model, so this check cannot confirm the heatmap",
    "against": "hiding the highlighted part does not lower the model's confidence, so it is not evidence "
               "the model uses for this class: treat this heatmap with caution",
    "supports": "the heatmap points at evidence the model uses",
    "weak": "only slightly more than random: weak support for this heatmap",
    "random": "no more than random: treat this heatmap with caution",
}


def _points(p: float) -> str:
    return f"{round(abs(p) * 100):d}"


def _rank_map(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks in [0, 1), ties broken at random, so "the top 20%" is exactly 20% of the pixels.

    CAMs are often 0 over more than 80% of the image; thresholding the raw map at its 80th
    percentile (as ROAD does) would then remove every pixel instead of a fifth of them.
    """
    flat = values.ravel()
    order = np.lexsort((rng.random(flat.size), flat))
    ranks = np.empty(flat.size, dtype=np.float32)
    ranks[order] = np.arange(flat.size, dtype=np.float32) / flat.size
    return ranks.reshape(values.shape)


def faithfulness(model: nn.Module, x: torch.Tensor, cams: np.ndarray, target_idx: np.ndarray,
                 p_before: np.ndarray, class_names: Sequence[str], feature_hw: tuple[int, int],
                 seed: int) -> list[Faithfulness]:
    """One `Faithfulness` per image of the batch `x` (the model's input) and its CAMs.

    The random map is noise at the feature-map resolution (`feature_hw`), upsampled like a CAM, so
    both removals take out blobs of similar size and the imputation is equally hard for both.
    `p_before`: each image's probability of its target class before any removal.
    """
    rng = np.random.default_rng(seed)
    h, w = x.shape[-2:]
    hot = np.stack([_rank_map(c, rng) for c in cams])
    rand = np.stack([_rank_map(cv2.resize(rng.random(feature_hw).astype(np.float32), (w, h)), rng)
                     for _ in cams])
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target_idx] * 2
    metric = ROADMostRelevantFirst(percentile=round(100 * (1 - REMOVE_FRACTION)))
    with torch.random.fork_rng(devices=[]):  # the imputer's noise: reproducible, caller's RNG untouched
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # road.py calls np.argwhere on a tensor (NumPy 2 deprecation)
            warnings.simplefilter("ignore", DeprecationWarning)
            after = metric(torch.cat([x, x]), np.concatenate([hot, rand]), targets, model, return_diff=False)
    after = np.asarray(after, dtype=np.float64).reshape(-1)
    n = len(cams)
    return [Faithfulness(float(p_before[i] - after[i]), float(p_before[i] - after[n + i]),
                         target_class=class_names[int(target_idx[i])]) for i in range(n)]
