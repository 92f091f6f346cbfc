"""A checkpoint's release thresholds, chosen on VALIDATION results and written into its card.

`realitycheck threshold CKPT VAL_CSV` runs `write_thresholds`. Both thresholds follow one rule
(`model.decision.threshold_for_every_group`): the decision threshold is the lowest at which every real
source's false-alarm rate on validation is at most `max_false_alarm` (default 5%); the unfamiliar-image
threshold the lowest at which at most that share of every source is flagged. The test split is never
read to choose: a test table given as well is only re-scored at the chosen threshold. Produce the
validation table with

    realitycheck evaluate --data manifests/shared-data.toml --only-split val --weights W --csv val.csv
"""

from __future__ import annotations

import math
import os

import pandas as pd

from realitycheck.analysis.metrics import (
    as_text,
    metrics_from_table,
    per_source_from_table,
    threshold_for_every_source,
    valid_rows,
)
from realitycheck.model import checkpoints
from realitycheck.model.checkpoints import ModelCard
from realitycheck.model.decision import (
    by_group,
    is_unfamiliar,
    threshold_for_every_group,
)

__all__ = ["release_threshold", "unfamiliar_threshold", "choose_thresholds", "write_thresholds"]


def release_threshold(table: pd.DataFrame, max_false_alarm: float = 0.05) -> float | None:
    """`metrics.threshold_for_every_source` rounded up to 4 decimals (never more false alarms than the
    rule allows) and at most 0.9999 (a card's threshold lies strictly between 0 and 1). None: the table
    has no scored real images."""
    t = threshold_for_every_source(table, max_false_alarm)
    if t is None:
        return None
    up = math.ceil(float(t) * 1e4)
    if up / 1e4 < t:  # t * 1e4 rounded down to a whole number (t one float above a 4-decimal score)
        up += 1
    return min(0.9999, up / 1e4)


def unfamiliar_threshold(table: pd.DataFrame, max_flag_rate: float = 0.05) -> float | None:
    """The lowest unfamiliarity threshold that flags at most `max_flag_rate` of every source's scored
    images (column `ood_score`); None when the table holds no such scores."""
    if "ood_score" not in table or not table["ood_score"].notna().any():
        return None
    ok = table[valid_rows(table)]
    sources = as_text(ok["source"]) if "source" in ok else pd.Series([""] * len(ok), index=ok.index)
    t = threshold_for_every_group(by_group(ok["ood_score"], sources), max_flag_rate, rule=is_unfamiliar)
    if t is None:
        raise ValueError("no scores to choose an unfamiliarity threshold on")
    return t


def choose_thresholds(card: ModelCard, val: pd.DataFrame, max_false_alarm: float = 0.05, *,
                      unfamiliar: bool = False, test: pd.DataFrame | None = None) -> pd.DataFrame:
    """Set `card.threshold` (and with `unfamiliar`, `card.ood["threshold"]`) from the validation table
    `val`, and record in the card how; with `test`, the card's test metrics at the chosen threshold.

    Returns the per-source validation rates at the chosen threshold. ValueError: no real images.
    """
    t = release_threshold(val, max_false_alarm)
    if t is None:
        raise ValueError("the validation table has no scored real images, so no false-alarm rate to hold")
    card.threshold = t
    ood_t = unfamiliar_threshold(val, max_false_alarm) if unfamiliar else None
    if ood_t is not None:
        card.ood["threshold"] = ood_t
        card.ood["threshold_chosen_on"] = (f"{int(valid_rows(val).sum())} validation images: the lowest threshold "
                                           f"that flags at most {max_false_alarm:.0%} of every source")
        card.ood.pop("test_flag_rate", None)
    rows = per_source_from_table(val, card.threshold)
    card.training["threshold_choice"] = {
        "rule": f"lowest threshold with false alarms <= {max_false_alarm:.0%} on every real source of the validation split",
        "validation_rates": {r["source"]: round(r["rate"], 4) for r in rows.to_dict("records")},
    }
    if test is not None:
        metrics = metrics_from_table(test, card.threshold)
        metrics["per_source"] = per_source_from_table(test, card.threshold).to_dict("records")
        for k in ("failed", "unlabelled"):
            metrics.pop(k, None)
        card.metrics["test"] = metrics
        card.training["test_scored"] = (f"realitycheck evaluate --only-split test ({len(test)} images), "
                                        "at the chosen threshold")
    return rows


def _read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A per-image results CSV (`realitycheck evaluate --csv`); failed rows are left out by `valid_rows`."""
    return pd.read_csv(path, dtype={"error": str})


def write_thresholds(weights: str | os.PathLike, val_csv: str | os.PathLike, max_false_alarm: float = 0.05,
                     test_csv: str | os.PathLike | None = None) -> tuple[ModelCard, pd.DataFrame]:
    """`choose_thresholds` on the checkpoint `weights` from its validation results `val_csv` (and its test
    results `test_csv`, re-scored only), written back into `weights` (half precision, as shipped).

    Returns the updated card and the per-source validation rates at its threshold.
    """
    val = _read_results(val_csv)
    test = _read_results(test_csv) if test_csv else None
    model, card, extras = checkpoints.load_checkpoint_extras(weights)
    rows = choose_thresholds(card, val, max_false_alarm, unfamiliar="ood" in extras, test=test)
    checkpoints.save_checkpoint(weights, model, card, half=True, extras=extras)
    return card, rows
