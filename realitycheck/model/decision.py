"""The decision rules, written once: fake or real, unfamiliar or not, and how a threshold is chosen per group.

Every front end, metric, training step and script reads a p_fake (or an unfamiliarity score) through
these functions, so a verdict can never differ between two paths by a `>` written for a `>=`.
Thresholds are always passed in: the model's own come from its card (`ModelCard.threshold`,
`ModelCard.ood["threshold"]`), never from a default here. Plain numpy, no torch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["is_fake", "verdict", "is_unfamiliar", "by_group", "threshold_for_every_group"]


def _scalar_or_array(result):
    """A Python bool for one score, a boolean array for many."""
    return bool(result) if np.ndim(result) == 0 else result


def is_fake(p_fake, threshold: float):
    """An image is judged fake iff p_fake >= threshold (a score on the threshold is flagged).

    Works on one number (-> bool) or any array-like of them (-> boolean array); NaN is never fake.
    """
    return _scalar_or_array(np.greater_equal(np.asarray(p_fake, dtype=np.float64), threshold))


def verdict(p_fake: float, threshold: float) -> str:
    """The word for one image: "fake" iff `is_fake`, else "real"."""
    return "fake" if is_fake(p_fake, threshold) else "real"


def is_unfamiliar(score, threshold: float):
    """An image is unfamiliar iff its unfamiliarity score is *above* the threshold (one on it is not).

    Strict, unlike `is_fake`: the card's unfamiliar thresholds were chosen as the highest score that may
    stay unflagged (`threshold_for_every_group`), so `>` keeps every shipped checkpoint's flags.
    """
    return _scalar_or_array(np.greater(np.asarray(score, dtype=np.float64), threshold))


def by_group(scores, names) -> list[np.ndarray]:
    """`scores` split into one array per group name (`names`: one per score), in first-seen order."""
    scores, names = np.asarray(scores, dtype=np.float64), np.asarray(names, dtype=object)
    return [scores[names == name] for name in dict.fromkeys(names.tolist())]


def _highest_unflagged(groups: Iterable[Sequence[float]], rate: float) -> float | None:
    """The highest score that must stay unflagged so no group has more than `rate` of its scores flagged.

    In a group of n scores at most floor(rate * n) may be flagged (the 1e-9 keeps float rounding, as in
    0.29 * 100 = 28.999..., from costing one), so its (floor(rate * n) + 1)-th highest must not be; the
    strictest group decides. NaN scores (no score) are left out. None: no group holds the rate back.
    """
    highest = None
    for g in groups:
        s = np.asarray(g, dtype=np.float64)
        s = np.sort(s[~np.isnan(s)])
        allowed = math.floor(rate * len(s) + 1e-9)
        if allowed < len(s):
            kept = float(s[len(s) - allowed - 1])
            highest = kept if highest is None else max(highest, kept)
    return highest


def threshold_for_every_group(groups: Iterable[Sequence[float]], rate: float,
                              rule: Callable[[float, float], bool] = is_fake) -> float | None:
    """The lowest threshold at which no group has more than `rate` of its scores flagged by `rule`.

    Lowest, so that as much as possible is still flagged; every group, so that no group pays for the
    others. The threshold is the highest score that must stay unflagged, or the next float above it
    where `rule` flags a score equal to its threshold (`is_fake`). (A linearly interpolated quantile
    would let one score too many through: 16 of 302, 5.3%.) None when no group holds the rate back
    (no scores, or a rate that allows them all).
    """
    s = _highest_unflagged(groups, rate)
    if s is None:
        return None
    return float(np.nextafter(s, np.inf)) if rule(s, s) else s
