"""Does a second, unresampled view fused with the aligned one catch StyleGAN1 better? (issue 24, item 2)

The cheap form of "a second view cut at native scale, fused with the aligned view inside one model":
two frozen backbones, the aligned default A (faces warped to 224 px) and the whole-image model B (the
image's shorter side at 256 px: the 140k faces pass at their native 256 px, no resampling), and one
new linear head over both penultimate feature vectors, fitted on TRAINING-split images. The head's
regularisation and the threshold are chosen on VALIDATION (the threshold by the project's rule: at most
5% false alarms on every real source); the test split is read only with --test, after that choice.
A head over A's features alone is fitted the same way, so a gain can be told from the refit itself.

    python scripts/fuse_features.py --out runs/fuse              # features cached in runs/fuse/*.npz
    python scripts/fuse_features.py --out runs/fuse --test       # the held-out test table, once

Both backbones' training splits are this manifest's (the same name hash, seed 0: B's 310 test and 341
validation 140k images are exactly the manifest's), so no validation or test image trained either.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from combine_scores import report  # noqa: E402  (one home for the per-source table)

from realitycheck.analysis.metrics import threshold_for_every_source  # noqa: E402
from realitycheck.model.inference import load_classifier  # noqa: E402
from realitycheck.training.train import build_data  # noqa: E402
from realitycheck.training.train_config import TrainConfig  # noqa: E402

A = "weights/realitycheck-lite2-t2i.pt"
B = "weights/realitycheck-lite2.pt"
CS = (0.003, 0.01, 0.03, 0.1)


def split_items(manifest: str, per_source_train: int) -> dict[str, list]:
    """train: at most `per_source_train` per source (hash subset); val and test: every image."""
    full = build_data(TrainConfig(data=[manifest], max_per_source=None, seed=0)).splits
    capped = build_data(TrainConfig(data=[manifest], max_per_source=per_source_train, seed=0)).splits
    held = {str(it[0]) for s in ("val", "test") for it in full[s]}
    assert not held & {str(it[0]) for it in capped["train"]}, "a held-out image in the training subset"
    return {"train": capped["train"], "val": full["val"], "test": full["test"]}


def features(weights: str, items: list, cache: Path) -> pd.DataFrame:
    """Penultimate features of each image's first view (as the unfamiliar check reads them), cached."""
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return pd.DataFrame({"path": z["path"], "f": list(z["f"])})
    clf = load_classifier(weights, precision="fp32")
    rows = [(str(it[0]), f) for it, (_, f) in zip(items, clf.iter_features([str(it[0]) for it in items], workers=1))
            if f is not None]
    np.savez(cache, path=np.array([p for p, _ in rows]), f=np.stack([f for _, f in rows]))
    print(f"  {weights}: {len(rows)} of {len(items)} images -> {cache}", flush=True)
    return pd.DataFrame({"path": [p for p, _ in rows], "f": [f for _, f in rows]})


def table(items: list, out: Path, split: str) -> pd.DataFrame:
    """One row per image both backbones read: path, true_label, source, features of A and of B."""
    meta = pd.DataFrame({"path": [str(it[0]) for it in items], "true_label": [it[1] for it in items],
                         "source": [it[2] for it in items]})
    fa = features(A, items, out / f"A-{split}.npz").rename(columns={"f": "fa"})
    fb = features(B, items, out / f"B-{split}.npz").rename(columns={"f": "fb"})
    return meta.merge(fa, on="path").merge(fb, on="path")


def design(t: pd.DataFrame, which: str) -> np.ndarray:
    return np.stack(t["fa"]) if which == "A" else np.hstack([np.stack(t["fa"]), np.stack(t["fb"])])


def source_balanced(t: pd.DataFrame) -> np.ndarray:
    """Each class half the weight, each source an equal share of its class (small sources count)."""
    w = np.zeros(len(t))
    for label, part in t.groupby("true_label"):
        for _, idx in part.groupby("source").groups.items():
            w[t.index.get_indexer(idx)] = 0.5 / part["source"].nunique() / len(idx)
    return w * len(t)


def fit(train: pd.DataFrame, which: str, c: float):
    scaler = StandardScaler().fit(design(train, which))
    head = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(design(train, which)),
                                                      (train["true_label"] == "fake").to_numpy(),
                                                      sample_weight=source_balanced(train))
    return lambda t: head.predict_proba(scaler.transform(design(t, which)))[:, 1]


def scored(t: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    out = t[["path", "true_label", "source"]].copy()
    out["p_fake"], out["error"] = p, ""
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="manifests/shared-data.toml")
    ap.add_argument("--out", default="runs/fuse")
    ap.add_argument("--per-source-train", type=int, default=500)
    ap.add_argument("--test", action="store_true", help="also score the held-out test split (after the choice)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    items = split_items(a.data, a.per_source_train)
    train, val = table(items["train"], out, "train"), table(items["val"], out, "val")
    print(f"train {len(train)} images, validation {len(val)}")
    rows, chosen = [], {}
    for which in ("A", "A+B"):
        best = None
        for c in CS:
            p = fit(train, which, c)(val)
            auc = roc_auc_score(val["true_label"] == "fake", p)
            print(f"  head over {which}, C={c}: validation ROC-AUC {auc:.4f}")
            best = max(best or (auc, c), (auc, c))
        c = best[1]
        predict = fit(train, which, c)
        threshold = threshold_for_every_source(scored(val, predict(val)), 0.05)
        chosen[which] = (predict, threshold)
        rows.append({"head": which, "C": c, "threshold": round(threshold, 4), **report(scored(val, predict(val)), threshold)})
    show("VALIDATION (each head at its own threshold, chosen here)", rows)
    if a.test:
        test = table(items["test"], out, "test")
        show("TEST (held out; heads and thresholds fixed on validation)",
             [{"head": w, "threshold": round(t, 4), **report(scored(test, p(test)), t)} for w, (p, t) in chosen.items()])


def show(title: str, rows: list[dict]) -> None:
    t = pd.DataFrame(rows)
    print(f"\n{title}; per source: % detected (fakes) or % false alarms (reals)")
    print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
    for r in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
