"""Does test-time flip averaging, or averaging several checkpoints, help? Measured on VALIDATION only.

    .venv/bin/python scripts/tta_check.py weights/realitycheck-lite0.pt [more.pt ...] [--data DIR] [--split val]

Prints accuracy and ROC-AUC per checkpoint for the plain image, its mirror image, their average,
and (with several checkpoints) the average of all. The split defaults to validation because this
is for choosing settings; run it with --split test only for a final, already-chosen setting.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from realitycheck.intake.data import discover, split_of
from realitycheck.model.inference import Classifier, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", default="../shared/data/faces-140k-sample")
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    args = ap.parse_args()

    items = [(p, lab) for p, lab in discover(args.data) if split_of(p) == args.split]
    y = np.array([lab == "fake" for _, lab in items], dtype=int)
    print(f"{len(items)} images ({args.split} split of {args.data})")

    def report(name: str, p: np.ndarray) -> None:
        print(f"{name:60s} accuracy {accuracy_score(y, p > 0.5):.4f}  ROC-AUC {roc_auc_score(y, p):.4f}")

    averaged = []
    for w in args.weights:
        clf = Classifier.from_file(w, face_check=False, mirror_average=False)  # each view on its own
        # every image's views as predict cuts them (aligned faces or the whole image), plain and mirrored
        views = [prepare(str(p), None, clf.card.preprocessing, face_check=False).tensor for p, _ in items]
        plain_v = [clf.probabilities(v, "fp32") for v in views]
        mirror_v = [clf.probabilities(v.flip(3), "fp32") for v in views]
        # an image is as suspicious as its most suspicious view (predict's rule), for each way of scoring it
        plain = np.array([max(a) for a in plain_v])
        mirror = np.array([max(b) for b in mirror_v])
        both = np.array([max((a + b) / 2) for a, b in zip(plain_v, mirror_v)])
        report(f"{w}", plain)
        report(f"{w} mirrored", mirror)
        report(f"{w} plain+mirrored", both)
        averaged.append(both)
    if len(averaged) > 1:
        report(f"average of {len(averaged)} checkpoints (plain+mirrored)", np.mean(averaged, 0))


if __name__ == "__main__":
    main()
