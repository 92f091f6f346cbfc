"""INT8 distillation measured on the validation split (never the test split, which is the gate's).

    python scripts/int8_distill_check.py IMAGES EPOCHS LR OUT [--baseline]

Distils the default (`weights/realitycheck-lite2-t2i.pt`) on IMAGES training-split images of
manifests/shared-data.toml, quantizes the student as `export --int8` would, and prints how many
validation labels (100 per source at most) its INT8 graph flips against the fp32 model; --baseline
first does the same for post-training INT8 of the model itself.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realitycheck.model import checkpoints  # noqa: E402
from realitycheck.model import export as ex  # noqa: E402
from realitycheck.model.engines import GraphEngine  # noqa: E402
from realitycheck.model.inference import Classifier  # noqa: E402
from realitycheck.training.int8_distill import DistillSettings, distill_for_int8  # noqa: E402

DATA = ["manifests/shared-data.toml"]


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def val_flips(ref, card, model, cal, val, out: Path, name: str) -> int:
    """Labels of `val` that `model`'s INT8 graph flips against `ref` (fp32 PyTorch), per source."""
    graph = ex.quantize_int8(model, card, out / f"{name}.onnx", (cal[i:i + 16].numpy() for i in range(0, len(cal), 16)))
    p, _, ok = ex.probabilities(ref, {("onnxruntime", "int8"): GraphEngine("onnxruntime", "int8", graph)},
                                [r[0] for r in val])
    sources = np.asarray([r[2] for r, good in zip(val, ok) if good])
    a, b = p["torch", "fp32"], p["onnxruntime", "int8"]
    flips = (a >= ref.threshold) != (b >= ref.threshold)
    per = {s: int(flips[sources == s].sum()) for s in sorted(set(sources))}
    dp = np.abs(a - b)
    log(f"{name}: flips {int(flips.sum())}/{len(a)} {per}; max|dp| {dp.max():.4f} p95 {np.quantile(dp, 0.95):.4f}")
    return int(flips.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", type=int)
    ap.add_argument("epochs", type=int)
    ap.add_argument("lr", type=float)
    ap.add_argument("out", type=Path)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--weights", default="weights/realitycheck-lite2-t2i.pt")
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    model, card = checkpoints.load_checkpoint(args.weights)
    ref = Classifier(model, card, precision="fp32", engine="torch")
    seed = ex.training_seed(card)  # the model's own split: calibration and training from train, scores from val
    cal = ex.stack_views(ex.preprocessed_batches(ref, [r[0] for r in ex.calibration_files(DATA, seed, 256)], views=True))
    val = ex.labelled_files(DATA, "val", seed, 100)
    log(f"calibration {len(cal)} views; validation {len(val)} images")
    if args.baseline:
        val_flips(ref, card, model, cal, val, args.out, "ptq")
    rows = ex.calibration_files(DATA, seed, args.images)
    views = ex.stack_views(ex.preprocessed_batches(ref, [r[0] for r in rows], views=True))
    log(f"{len(views)} training views")
    student = distill_for_int8(model, card, views, cal, DistillSettings(epochs=args.epochs, lr=args.lr), log=log)
    torch.save(student.state_dict(), args.out / "student.pt")
    val_flips(ref, card, student, cal, val, args.out, "distilled")


if __name__ == "__main__":
    main()
