"""Overhead of the provenance column in `evaluate_folder`: the same run with `kind_of` replaced by a constant.

Usage: PYTHONPATH=. .venv/bin/python scripts/provenance_overhead.py [IMAGES_PER_CLASS]  (needs ../shared/data)
Runs the shipped model over the first N real and N fake images of faces-140k-sample, twice each way,
alternating, and prints the wall times and the ratio of the best runs.
"""

import glob
import os
import sys
import tempfile
import time
from pathlib import Path

from realitycheck.analysis import evaluate
from realitycheck.model import inference


def main(n: int) -> None:
    sample = "../shared/data/faces-140k-sample"
    files = sorted(glob.glob(f"{sample}/real/*.jpg"))[:n] + sorted(glob.glob(f"{sample}/fake/*.jpg"))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for p in files:
            (folder / Path(p).parent.name).mkdir(exist_ok=True)
            os.symlink(os.path.abspath(p), folder / Path(p).parent.name / Path(p).name)
        clf = inference.load_classifier()
        real = evaluate.kind_of
        evaluate.evaluate_folder(clf, folder)  # warm-up
        times = {"with": [], "without": []}
        for _ in range(2):
            for mode in ("with", "without"):
                evaluate.kind_of = real if mode == "with" else (lambda p: "none")
                t = time.perf_counter()
                result = evaluate.evaluate_folder(clf, folder)
                times[mode].append(time.perf_counter() - t)
    print({k: [round(x, 2) for x in v] for k, v in times.items()}, "images", len(result.table))
    print("ratio with/without (best of 2):", round(min(times["with"]) / min(times["without"]), 3))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
