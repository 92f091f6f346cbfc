"""Choose a checkpoint's decision threshold on VALIDATION results and write it into its card.

The rule (metrics.threshold_for_every_source): the lowest threshold at which every real source's
false-alarm rate on validation is at most --max-false-alarm (default 5%). The test split is never
read here. Produce the validation table with

    realitycheck evaluate --data manifests/shared-data.toml --only-split val --weights W --csv val.csv
    python scripts/choose_threshold.py W val.csv

With --test-csv (the same model's `evaluate --only-split test --csv` table) the card's test metrics
are recomputed at the chosen threshold: the threshold is chosen first, the test table only read.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

from realitycheck.analysis.metrics import (
    as_text,
    per_source_from_table,
    threshold_for_every_source,
    valid_rows,
)
from realitycheck.model import checkpoints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("val_csv")
    ap.add_argument("--max-false-alarm", type=float, default=0.05)
    ap.add_argument("--test-csv", help="per-image test results of this model, re-read at the chosen threshold")
    a = ap.parse_args()
    table = pd.read_csv(a.val_csv, dtype={"error": str})  # failed rows: left out by metrics.valid_rows
    t = threshold_for_every_source(table, a.max_false_alarm)
    model, card, extras = checkpoints.load_checkpoint_extras(a.weights)
    card.threshold = math.ceil(float(t) * 1e4) / 1e4  # rounded up: never more false alarms than the rule allows
    if "ood" in extras and "ood_score" in table and table["ood_score"].notna().any():
        # the unfamiliarity threshold by the same rule: at most 5% of any validation source flagged
        import torch

        from realitycheck.model.ood import by_source, threshold_flagging_at_most

        ok = table[valid_rows(table)]
        ood_t = threshold_flagging_at_most(by_source(ok["ood_score"], as_text(ok["source"])), a.max_false_alarm)
        extras["ood"]["threshold"] = torch.tensor([ood_t], dtype=torch.float64)
        card.ood["threshold"] = ood_t
        card.ood["threshold_chosen_on"] = (f"{len(ok)} validation images: the lowest threshold that flags at most "
                                           f"{a.max_false_alarm:.0%} of every source")
        card.ood.pop("test_flag_rate", None)
    rows = per_source_from_table(table, card.threshold)
    card.training["threshold_choice"] = {
        "rule": f"lowest threshold with false alarms <= {a.max_false_alarm:.0%} on every real source of the validation split",
        "validation_rates": {r["source"]: round(r["rate"], 4) for r in rows.to_dict("records")},
    }
    if a.test_csv:
        from realitycheck.analysis.metrics import metrics_from_table

        test = pd.read_csv(a.test_csv, dtype={"error": str})
        metrics = metrics_from_table(test, card.threshold)
        metrics["per_source"] = per_source_from_table(test, card.threshold).to_dict("records")
        for k in ("failed", "unlabelled"):
            metrics.pop(k, None)
        card.metrics["test"] = metrics
        card.training["test_scored"] = f"realitycheck evaluate --only-split test ({len(test)} images), at the chosen threshold"
    checkpoints.save_checkpoint(a.weights, model, card, half=True, extras=extras)
    print(f"threshold {card.threshold} written to {a.weights}")
    print(rows.to_string(index=False))


if __name__ == "__main__":
    main()
