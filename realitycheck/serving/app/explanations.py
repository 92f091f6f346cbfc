"""Heatmaps per session: one explanation per (model, image, method, class, face), computed once, and
the words said about it.

`realitycheck.explain` is imported only where a heatmap is made or described: it loads
pytorch-grad-cam (about 1.7 s here), which a page with no heatmap on it does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from realitycheck.model import inference
from realitycheck.serving.app import state
from realitycheck.serving.app.model_cache import classifier_key


def explanation_key(clf: inference.Classifier, key: Any, method: str, target_class: str | None,
                    face: int | None = None) -> tuple:
    """The per-session cache key of a heatmap: model, image, method, the class it explains, the face."""
    return (classifier_key(clf), key, method, target_class) + (() if face is None else (face,))


def has_explanation(clf: inference.Classifier, key: Any, method: str, target_class: str | None,
                    face: int | None = None) -> bool:
    return explanation_key(clf, key, method, target_class, face) in state.get(state.EXPLANATIONS)


def explanation(clf: inference.Classifier, key: Any, image: Image.Image, method: str,
                progress: Callable[[int, int], None] | None = None, target_class: str | None = None,
                face: int | None = None, deciding_face: int | None = None):
    """Grad-CAM (or another method) of one image for `target_class` (None: the model's argmax),
    cached per session by (model, key, method, class, face); `face` (0-based): that face of an aligned
    model instead of the deciding one. `deciding_face`: the prediction's (`Prediction.deciding_face`),
    so the heatmap is of the face that decided the verdict; without it the explainer finds that face."""
    from realitycheck.explain import explainer_for  # lazy: see the module docstring

    ekey = explanation_key(clf, key, method, target_class, face)
    cache = state.get(state.EXPLANATIONS)
    if ekey in cache:
        return cache[ekey]
    result = explainer_for(clf).explain([image], method=method, target_class=target_class,
                                        progress=progress or False,
                                        face=face if face is not None else deciding_face)[0]
    state.remember(state.EXPLANATIONS, ekey, result, state.MAX_CACHED_EXPLANATIONS)
    return result


def where_words(exp, pred) -> str:
    """Where the heatmap's evidence lies, relative to the largest face the prediction found and its
    landmarks (`Explanation.where`); relative to the crop when the model saw a face crop."""
    if pred.region == "face crop":
        return exp.where(None)
    return exp.where(pred.image, pred.face_report)


def faithfulness_words(faithfulness) -> str:
    from realitycheck.explain import heatmap_words  # lazy: see the module docstring

    return heatmap_words.faithfulness_words(faithfulness)
