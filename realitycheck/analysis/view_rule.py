"""The mirror-view rule, chosen on VALIDATION and written into the card (issue 28, "fewer views").

A card that averages each view with its mirror image pays two forward passes a face. Far from the
threshold the mirror cannot change the verdict, so it is scored only where the first view's p_fake
lies within a margin of the threshold (`views.needs_mirror`). The margin is the smallest at which the
rule's verdicts agree with the two-view verdicts on at least `target` of every validation source (the
image's verdict is its most suspicious view's, as in predict) and the ROC-AUC moves by at most 0.002
(the export gate's bounds). The unfamiliar check reads the first view only, so its flags never change.
`realitycheck views CKPT --data MANIFEST` runs `write_view_rule`.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pandas as pd

from realitycheck.model import checkpoints
from realitycheck.model.checkpoints import ModelCard
from realitycheck.model.decision import is_fake
from realitycheck.model.export import GATE_AGREEMENT, GATE_DAUC
from realitycheck.model.views import needs_mirror

# the export gate's bounds for any faster path: label agreement at least, |ROC-AUC change| at most
TARGET_AGREEMENT, MAX_DAUC = GATE_AGREEMENT, GATE_DAUC

__all__ = ["TARGET_AGREEMENT", "image_scores", "agreement_by_source", "choose_mirror_margin", "auc_change",
           "check_view_rule", "write_view_rule"]


def image_scores(p_first: np.ndarray, p_mirror: np.ndarray, image: np.ndarray, threshold: float,
                 margin: float | None) -> np.ndarray:
    """Each image's p_fake under the rule (margin None: every view averaged with its mirror): per view,
    the first p_fake, or the mean with the mirror's where the rule scores it; the image's, its most
    suspicious view's (`views.deciding`)."""
    p_first, p_mirror = np.asarray(p_first, float), np.asarray(p_mirror, float)
    p = np.where(needs_mirror(p_first, threshold, margin), (p_first + p_mirror) / 2, p_first)
    out = np.full(int(image.max()) + 1 if len(image) else 0, -np.inf)
    np.maximum.at(out, image, p)
    return out


def agreement_by_source(p_first, p_mirror, image, sources, threshold: float, margin: float | None) -> pd.DataFrame:
    """Per source: images, verdicts that agree with the two-view verdicts, agreement, views mirrored."""
    rule = is_fake(image_scores(p_first, p_mirror, image, threshold, margin), threshold)
    two = is_fake(image_scores(p_first, p_mirror, image, threshold, None), threshold)
    mirrored = needs_mirror(p_first, threshold, margin)
    views_per_image = np.bincount(image, minlength=len(sources))
    mirrored_per_image = np.bincount(image, weights=mirrored, minlength=len(sources))
    t = pd.DataFrame({"source": list(sources), "agree": rule == two, "views": views_per_image,
                      "mirrored": mirrored_per_image})
    g = t.groupby("source", sort=True).agg(images=("agree", "size"), agree=("agree", "sum"),
                                           views=("views", "sum"), mirrored=("mirrored", "sum")).reset_index()
    g["agreement"] = g["agree"] / g["images"]
    g["mirrored_share"] = g["mirrored"] / g["views"]
    return g


def choose_mirror_margin(p_first, p_mirror, image, sources, threshold: float, target: float = TARGET_AGREEMENT,
                         labels=None, max_dauc: float = MAX_DAUC) -> float:
    """The smallest margin at which every source's verdicts agree with two views on >= `target` of its
    images and, given `labels`, the ROC-AUC moves by at most `max_dauc` (the export gate's bounds).

    Candidates are 0 and each view's distance from the threshold (a hair above, so that view is
    mirrored), tried from the smallest; the first that passes is returned (1.0, every view mirrored,
    if none does)."""
    p_first = np.asarray(p_first, float)
    for m in np.concatenate([[0.0], np.unique(np.abs(p_first - threshold)) + 1e-6]):
        if not (agreement_by_source(p_first, p_mirror, image, sources, threshold, float(m))["agreement"] >= target).all():
            continue
        dauc = None if labels is None else auc_change(p_first, p_mirror, image, labels, threshold, float(m))
        if dauc is None or dauc <= max_dauc:
            return round(float(m), 6)
    return 1.0


def view_pairs(clf, items: list[tuple], workers: int | None = None):
    """(p_first, p_mirror, image index per view, source per image, label per image) of `items`
    [(path, label, source)], as `export.labelled_files` gives them, as `clf` views them (images that
    fail to decode are left out)."""
    firsts, mirrors, image, sources, labels = [], [], [], [], []
    for (_, pf, pm), (_, label, source) in zip(clf.iter_view_pairs([str(it[0]) for it in items], workers=workers),
                                               items):
        if pf is None:
            continue
        firsts.append(pf), mirrors.append(pm)
        image += [len(sources)] * len(pf)
        sources.append(source), labels.append(label)
    if not sources:
        raise ValueError("no image could be read")
    return np.concatenate(firsts), np.concatenate(mirrors), np.asarray(image), sources, labels


def auc_change(p_first, p_mirror, image, labels, threshold: float, margin: float | None) -> float | None:
    """|ROC-AUC under the rule - ROC-AUC with every mirror| over the images (None without both classes)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray([str(v).lower() == "fake" for v in labels])
    if y.all() or not y.any():
        return None
    return abs(float(roc_auc_score(y, image_scores(p_first, p_mirror, image, threshold, margin)))
               - float(roc_auc_score(y, image_scores(p_first, p_mirror, image, threshold, None))))


def check_view_rule(weights: str | os.PathLike, items: list[tuple], *,
                    workers: int | None = None) -> tuple[pd.DataFrame, float | None]:
    """(per source, how the card's rule agrees with two views; |ROC-AUC change|) on `items` [(path,
    label, source)], e.g. the held-out test split."""
    from realitycheck.model.inference import load_classifier

    clf = load_classifier(weights, views="all", precision="fp32")
    p_first, p_mirror, image, sources, labels = view_pairs(clf, items, workers)
    m = clf.card.views.get("mirror_margin")
    return (agreement_by_source(p_first, p_mirror, image, sources, clf.threshold, m),
            auc_change(p_first, p_mirror, image, labels, clf.threshold, m))


def write_view_rule(weights: str | os.PathLike, items: list[tuple], *, target: float = TARGET_AGREEMENT,
                    workers: int | None = None, what: str = "validation images",
                    log: Callable[[str], None] = print) -> tuple[ModelCard, pd.DataFrame]:
    """Choose the checkpoint's mirror margin on `items` (its VALIDATION images: path, label, source) at
    its card's threshold and write it into the card (the weights and every threshold stay)."""
    from realitycheck.model.inference import load_classifier

    model, card, extras = checkpoints.load_checkpoint_extras(weights)
    if not card.preprocessing.mirror_average:
        raise ValueError(f"{weights}: the card scores one view per face (no mirror averaging); there is nothing to skip")
    clf = load_classifier(weights, views="all", precision="fp32")
    log(f"scoring {len(items)} {what}, every view and its mirror ...")
    p_first, p_mirror, image, sources, labels = view_pairs(clf, items, workers)
    t = card.threshold
    margin = choose_mirror_margin(p_first, p_mirror, image, sources, t, target, labels=labels)
    rows = agreement_by_source(p_first, p_mirror, image, sources, t, margin)
    card.views = {
        "mirror_margin": margin,
        "rule": "a view's mirror image is scored (and averaged) only when its first p_fake lies within "
                "mirror_margin of the threshold; --views all scores every mirror",
        "chosen_on": f"{len(sources)} {what}, at threshold {t}",
        "target_agreement": target,
        "agreement_by_source": {r.source: round(float(r.agreement), 4) for r in rows.itertuples()},
        "mirrored_share": round(float(rows["mirrored"].sum() / rows["views"].sum()), 4),
        "abs_dauc": auc_change(p_first, p_mirror, image, labels, t, margin),
    }
    checkpoints.save_checkpoint(weights, model, card, half=checkpoints.stored_half(weights), extras=extras)
    return card, rows
