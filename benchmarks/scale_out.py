#!/usr/bin/env python
"""Scale-out figures for docs/scale.md: Ray Data folder scoring and torchrun DDP training on CPU.

    python benchmarks/scale_out.py ray [--limit N] [--weights FILE] [--cpus 2]
    python benchmarks/scale_out.py ddp [--limit N] [--steps N]

ray: scores the same N images (half real, half fake, of faces-140k-sample) with the local path and
with Ray Data in several layouts on one local Ray, in one run, and prints images/s of each (the
Ray figures include starting the actors, not starting Ray) and the largest |delta p_fake| against
the local path. ddp: trains one epoch of `--steps` steps per process (batch 16 each) with 1 and 2 torchrun
processes (gloo), 1 or 2 threads each and prints, from the run logs, images trained per second over the epoch (its
validation pass included; two processes split it). Ratios from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "faces-140k-sample"


def sample(limit: int) -> list[tuple[Path, str]]:
    from realitycheck.intake.data import discover

    by: dict[str, list] = {"real": [], "fake": []}
    for p, lab in discover(DATA):
        by[lab].append((p, lab))
    return by["real"][: limit // 2] + by["fake"][: limit // 2]


def bench_ray(args) -> dict:
    import numpy as np

    from realitycheck.model.inference import Classifier
    from realitycheck.serving import distributed

    items = sample(args.limit)
    paths = [str(p) for p, _ in items]
    clf = Classifier.from_file(args.weights, precision="fp32", batch_size=16)
    out: dict = {"images": len(paths), "weights": Path(args.weights).name, "ray_cpus": args.cpus,
                 "os_cpus": os.cpu_count()}
    t0 = time.perf_counter()
    local = {p.name: p.p_fake for p in clf.iter_predict(paths)}
    out["local (Classifier.iter_predict, default workers)"] = round(len(paths) / (time.perf_counter() - t0), 2)
    t0 = time.perf_counter()
    distributed.connect(num_cpus=args.cpus)
    out["ray_start_seconds"] = round(time.perf_counter() - t0, 1)
    layouts = {
        "ray: 1 model actor + decode tasks (default)": {"actors": 1},
        "ray: 1 actor, decode fused into it": {"actors": 1, "fuse_decode": True},
        "ray: 2 actors, decode fused into them": {"actors": 2, "fuse_decode": True},
    }
    for name, kw in layouts.items():
        t0 = time.perf_counter()
        got = {p.name: p.p_fake for p in distributed.iter_predict(clf, paths, **kw)}
        out[name] = round(len(paths) / (time.perf_counter() - t0), 2)
        out[name + " max |dp|"] = float(np.max(np.abs([got[k] - local[k] for k in local])))
    t0 = time.perf_counter()
    list(clf.iter_predict(paths))  # again at the end: the machine's load drifts during a run
    out["local again"] = round(len(paths) / (time.perf_counter() - t0), 2)
    out["load average at the end (1 min)"] = os.getloadavg()[0]
    return out


def bench_ddp(args) -> dict:
    out: dict = {"os_cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "data.csv"
        listing.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in sample(args.limit)))
        # (processes, threads each), interleaved: load and disk cache drift during a run
        for run, (n, threads) in enumerate(((1, 1), (2, 1), (1, 2), (1, 1), (2, 1))):
            prefix = Path(tmp) / f"ddp{run}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "realitycheck", "train", str(listing), "--out", str(prefix), "--epochs", "1",
                   "--max-steps", str(args.steps), "--batch-size", "16", "--resize", "128", "--crop", "112",
                   "--workers", "0", "--precision", "fp32", "--augment", "flip"]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
            wall = time.perf_counter() - t0
            import csv

            with open(prefix.with_suffix(".log.csv"), newline="") as fh:
                row = list(csv.DictReader(fh))[-1]
            what = f"run {run + 1}, {n} process(es) x {threads} thread(s)"
            out[f"{what}: training images/s (all ranks)"] = float(row["images_per_second"])
            out[f"{what}: wall seconds incl. start, val and test"] = round(wall, 1)
            out[f"run {run + 1}: load average (1 min) after"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["ray", "ddp"])
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--weights", default=str(ROOT / "weights" / "realitycheck-lite0.pt"))
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--steps", type=int, default=12, help="ddp: training steps per run")
    args = ap.parse_args()
    res = bench_ray(args) if args.what == "ray" else bench_ddp(args)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
