"""Make a checkpoint of a training run that the GPU machine's time limit cut short.

`scripts/gpu_train.sh` returns, for such a run, its best-epoch weights (a bare half-precision
state_dict) and its per-epoch log, but no card: the card's `fit` step never ran. This writes a
RealityCheck checkpoint with the card of the weights the run started from (`--like`), the framing
the run trained with (`--crop`), its log, the epoch that validation chose, and the run's command.
The threshold starts at 0.5 and no "unfamiliar" statistics are stored: choose the first on
validation (`realitycheck threshold`) and fit the second with `realitycheck train --test-only`,
exactly as for a finished run (docs/generalization.md, section 3).

    python scripts/finish_run.py cont192.best-half.pt --like weights/realitycheck-lite2-aligned.pt \\
        --crop 192 --log cont192.log.csv --command "..." --out runs/cont192.pt
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from realitycheck.model import checkpoints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state", help="the run's best-epoch weights (bare state_dict)")
    ap.add_argument("--like", required=True, help="the checkpoint the run started from (its card is copied)")
    ap.add_argument("--crop", type=int, help="the run's input size, where it differs from --like's")
    ap.add_argument("--log", required=True, help="the run's per-epoch log (.log.csv)")
    ap.add_argument("--command", required=True, help="the command the run was started with")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    start = checkpoints.read_card(a.like)
    model, _ = checkpoints.load_initial_weights(a.state, start.arch)
    log = pd.read_csv(a.log)
    best = log.loc[log["val_auc"].idxmax()]
    pre = dataclasses.replace(start.preprocessing, **({"crop": a.crop} if a.crop else {}))
    card = checkpoints.default_card(Path(a.out).stem, start.arch, preprocessing=pre,
                                    init=f"RealityCheck checkpoint {Path(a.like).name}")
    settings = start.training.get("settings", {})
    card.training = {
        **{k: start.training[k] for k in ("data", "sources", "split", "n_per_source", "sampling", "mode")
           if k in start.training},
        "command": a.command,
        "epochs_run": int(len(log)), "best_epoch": int(best["epoch"]),
        "train_seconds": round(float(log["seconds"].sum())),
        "settings": {**settings, "crop": pre.crop},
        "log": log.to_dict(orient="records"),
    }
    card.metrics = {"val": {k.replace("val_", ""): float(best[k]) for k in log.columns if k.startswith("val_")}}
    card.notes.append(f"Cut short by the GPU machine's time limit after {len(log)} epochs; weights of epoch "
                      f"{int(best['epoch'])}, chosen by validation ROC-AUC (scripts/finish_run.py).")
    checkpoints.save_checkpoint(a.out, model, card, half=True)
    print(f"wrote {a.out}: epoch {int(best['epoch'])} of {len(log)}, val AUC {best['val_auc']:.4f}")


if __name__ == "__main__":
    main()
