"""The per-group table of docs/fairness.md (Markdown) from an evaluation's per-image CSV.

    realitycheck evaluate --data manifests/shared-data.toml --only-split test --groups --csv runs/fairness-test.csv
    python scripts/fairness_table.py runs/fairness-test.csv                   # at the model's threshold
    python scripts/fairness_table.py runs/fairness-test.csv --threshold 0.2   # a stricter operating point

Attributes come from the file names (`groups.from_name`: UTKFace, All-Age-Faces) or --attributes CSV.
Re-thresholding the stored p_fake runs no model, so both tables come from one evaluation.
"""

from __future__ import annotations

import argparse

import pandas as pd

from realitycheck.analysis import groups as G
from realitycheck.analysis.metrics import rethreshold, valid_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="per-image results (evaluate --csv)")
    ap.add_argument("--threshold", type=float, help="default: the shipped model's card threshold")
    ap.add_argument("--weights", help="read the threshold from this checkpoint's card (default: the shipped model)")
    ap.add_argument("--attributes", help="a CSV of path,attribute,value (default: attributes from file names)")
    args = ap.parse_args()
    table = pd.read_csv(args.csv, keep_default_na=False)
    threshold = args.threshold
    if threshold is None:
        from realitycheck.model import checkpoints, inference

        threshold = float(checkpoints.read_card(args.weights or inference.default_weights_path()).threshold)
    attrs = G.attributes_for(table["path"], csv_path=args.attributes)
    rows = G.group_rates(table, attrs, threshold)
    with_attr = table[table["path"].astype(str).isin(attrs)]
    t = rethreshold(with_attr, threshold)
    t = t[valid_rows(t).to_numpy(dtype=bool)]
    print(f"threshold {threshold:.4g}; {len(t)} scored images with a known attribute, "
          f"{int((t['predicted'] == 'fake').sum())} called fake; by source: "
          + ", ".join(f"{s} {n}" for s, n in t["source"].value_counts().sort_index().items()))
    print()
    print(G.format_table(rows, markdown=True))


if __name__ == "__main__":
    main()
