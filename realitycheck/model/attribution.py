"""Which generator family a fake looks like: a second head, never mixed into p_fake.

The head is a multinomial logistic regression on the same penultimate features the unfamiliar
check reads (every engine already returns them), fitted on the training-split fakes with each
source's `family` as the label. Fitting it after the detector keeps p_fake exactly what it was,
works on exported graphs without re-export, and leaves old checkpoints (no head) untouched: they
simply say nothing about the generator.

A guess below `min_confidence` is reported as "other/unknown". Its weights live in the checkpoint
under "attribution" (tensors); the family names and `min_confidence` live in the card (one home
each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

UNKNOWN = "other/unknown"
# Top-1 accuracy the named (not "unknown") guesses must reach on validation; sets min_confidence
TARGET_NAMED_ACCURACY = 0.95
MIN_CONFIDENCE_FLOOR = 0.5


@dataclass
class AttributionHead:
    families: tuple[str, ...]
    weight: np.ndarray  # (K, D): folded with the feature standardisation it was fitted with
    bias: np.ndarray  # (K,)
    min_confidence: float = MIN_CONFIDENCE_FLOOR

    @classmethod
    def fit(cls, features: np.ndarray, families, c: float = 0.5, seed: int = 0) -> "AttributionHead":
        """Logistic regression on standardised features, classes balanced (FLUX.1 dev has ~100 images)."""
        from sklearn.linear_model import LogisticRegression

        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(list(families))
        names = tuple(sorted(set(labels)))
        if len(names) < 2:
            raise ValueError(f"an attribution head needs fakes of at least two families, got {list(names)}")
        mean, std = features.mean(0), features.std(0) + 1e-6
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
        lr.fit((features - mean) / std, labels)
        order = [list(lr.classes_).index(n) for n in names]
        coef = lr.coef_ if len(names) > 2 else np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
        icpt = lr.intercept_ if len(names) > 2 else np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        weight = coef[order] / std
        bias = icpt[order] - weight @ mean
        return cls(names, weight.astype(np.float64), bias.astype(np.float64))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) softmax over the families."""
        z = np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def name(self, probs: np.ndarray) -> list[str]:
        """Top family per row, or UNKNOWN when its probability is below min_confidence."""
        probs = np.atleast_2d(probs)
        top = probs.argmax(1)
        return [self.families[k] if probs[i, k] >= self.min_confidence else UNKNOWN for i, k in enumerate(top)]

    def choose_min_confidence(self, val_features: np.ndarray, val_families,
                              target: float = TARGET_NAMED_ACCURACY) -> float:
        """The lowest confidence (>= the floor) at which the named validation guesses are >= `target` right."""
        probs = self.probabilities(val_features)
        conf, right = probs.max(1), np.array(self.families)[probs.argmax(1)] == np.asarray(list(val_families))
        chosen = MIN_CONFIDENCE_FLOOR
        for t in sorted({MIN_CONFIDENCE_FLOOR, *conf[conf >= MIN_CONFIDENCE_FLOOR].tolist()}):
            kept = conf >= t
            if not kept.any() or right[kept].mean() >= target:
                chosen = t
                break
        self.min_confidence = float(chosen)
        return self.min_confidence

    def guess(self, probs: np.ndarray) -> dict:
        """One image's guess as the JSON field `generator`: name + every family's probability."""
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        return {"name": self.name(probs[None])[0],
                "probabilities": {f: round(float(p), 6) for f, p in zip(self.families, probs)}}

    # -- storage: tensors in the checkpoint, names and min_confidence in the card ---------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias)}

    def card_entry(self) -> dict:
        return {"families": list(self.families), "min_confidence": self.min_confidence}

    @classmethod
    def from_checkpoint(cls, tensors: dict, card_entry: dict) -> "AttributionHead":
        families = tuple(card_entry.get("families") or ())
        weight = np.asarray(tensors["weight"].double().numpy())
        bias = np.asarray(tensors["bias"].double().numpy())
        if weight.shape[0] != len(families) or bias.shape != (len(families),):
            raise ValueError(f"attribution head has {weight.shape[0]} outputs but the card names {len(families)} "
                             "families")
        return cls(families, weight, bias, float(card_entry.get("min_confidence", MIN_CONFIDENCE_FLOOR)))


def generator_words(generator: dict | None) -> str:
    """The guess in words, as every interface shows it beside a FAKE verdict ("" when there is none)."""
    if not generator:
        return ""
    name = generator["name"]
    if name == UNKNOWN:
        return "looks like: no known generator family (other/unknown)"
    return f"looks like: {name}, {generator['probabilities'][name]:.0%}"


def confusion(true_families, guessed) -> "object":
    """Attribution confusion matrix (rows: true family, columns: guess incl. UNKNOWN) as a DataFrame."""
    import pandas as pd

    t, g = list(true_families), list(guessed)
    cols = sorted(set(g) - {UNKNOWN}) + ([UNKNOWN] if UNKNOWN in g else [])
    return pd.crosstab(pd.Series(t, name="true"), pd.Series(g, name="guess")).reindex(
        index=sorted(set(t)), columns=cols, fill_value=0)
