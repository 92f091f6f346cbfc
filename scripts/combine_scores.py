"""Would two detectors together do better than either? Combine their per-image scores, choose the
threshold on VALIDATION (the rule of `realitycheck threshold`), report the held-out TEST per source.

    realitycheck evaluate --weights A.pt --data manifests/shared-data.toml --only-split val  --csv a.val.csv
    realitycheck evaluate --weights A.pt --data manifests/shared-data.toml --only-split test --csv a.test.csv
    (the same for B)
    python scripts/combine_scores.py a.val.csv b.val.csv a.test.csv b.test.csv

Combinations: each model alone, the mean of p_fake, the mean of the logits, and the max (an image
is as suspicious as the more suspicious model finds it). The test tables are read only after each
threshold is fixed. Rows are matched by path; images either model failed on are left out.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from realitycheck.analysis.metrics import (
    per_source_from_table,
    threshold_for_every_source,
    valid_rows,
)
from realitycheck.model.decision import is_fake


def _logit(p: pd.Series) -> np.ndarray:
    p = np.clip(p.to_numpy(dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


COMBINATIONS = {
    "A only": lambda a, b: a,
    "B only": lambda a, b: b,
    "mean p_fake": lambda a, b: (a + b) / 2,
    "mean logit": lambda a, b: 1 / (1 + np.exp(-(_logit(a) + _logit(b)) / 2)),
    "max": lambda a, b: np.maximum(a, b),
}


def paired(a_csv: str, b_csv: str) -> pd.DataFrame:
    """One row per image both models scored: true_label, source, p_a, p_b."""
    a, b = (pd.read_csv(f, dtype={"error": str}) for f in (a_csv, b_csv))
    a, b = (t[valid_rows(t)] for t in (a, b))
    m = a[["path", "true_label", "source", "p_fake"]].merge(b[["path", "p_fake"]], on="path", suffixes=("_a", "_b"))
    if m.empty:
        raise SystemExit(f"{a_csv} and {b_csv} share no scored images (are they of the same split and data?)")
    return m


def score(m: pd.DataFrame, how: str) -> pd.DataFrame:
    out = m[["path", "true_label", "source"]].copy()
    out["p_fake"] = np.asarray(COMBINATIONS[how](m["p_fake_a"], m["p_fake_b"]), dtype=float)
    out["error"] = ""
    return out


def report(test: pd.DataFrame, threshold: float, sources_140k=("ffhq", "stylegan1")) -> dict:
    """Per-source rate (detection for fakes, false alarms for reals) in %, accuracy and ROC-AUC."""
    row = {r.source: round(100 * float(r.rate), 1) for r in per_source_from_table(test, threshold).itertuples()}
    for name, t in (("all", test), ("140k", test[test["source"].isin(sources_140k)])):
        if t["true_label"].nunique() == 2:
            y = (t["true_label"] == "fake").to_numpy()
            row[f"{name} acc %"] = round(100 * float((is_fake(t["p_fake"], threshold) == y).mean()), 1)
            row[f"{name} AUC"] = round(float(roc_auc_score(y, t["p_fake"])), 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a_val"), ap.add_argument("b_val"), ap.add_argument("a_test"), ap.add_argument("b_test")
    ap.add_argument("--max-false-alarm", type=float, default=0.05)
    a = ap.parse_args()
    val, test = paired(a.a_val, a.b_val), paired(a.a_test, a.b_test)
    rows = []
    for how in COMBINATIONS:
        t = threshold_for_every_source(score(val, how), a.max_false_alarm)  # chosen on validation only
        rows.append({"combination": how, "threshold (val)": round(t, 4), **report(score(test, how), t)})
    table = pd.DataFrame(rows)
    print(f"validation {len(val)} images, test {len(test)} images; per source: % detected (fakes) or "
          f"% false alarms (reals) at the threshold chosen on validation")
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
