"""Would a bf16 forward pass with fp32 recomputation near the decision boundaries be faster? (issue 28)

OpenVINO bf16 (AMX) runs the default's graph ~2.3x faster than ONNX Runtime fp32 but moves a few
verdicts and unfamiliar flags (it fails the export gate). A cascade would score every view in bf16
and recompute in fp32 the views whose p_fake (in logits) or unfamiliarity score lies within a margin
of its threshold, a margin of k times the largest bf16 error seen. This measures, on VALIDATION, the
bf16 errors, how many views each margin sends back to fp32, and the forward cost that implies:

    python scripts/bf16_cascade_check.py [--weights W] [--limit N]

Cost per view = t_bf16 + share_recomputed * t_fp32, with the two times measured here, interleaved.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from realitycheck.model import engines
from realitycheck.model.export import labelled_files, training_seed
from realitycheck.model.inference import load_classifier, prepare


def views_of(clf, items) -> np.ndarray:
    """Every view predict would score, for each readable image (face check off, as the export gate)."""
    xs = []
    for it in items:
        pr = prepare(str(it[0]), None, clf.card.preprocessing, face_check=False)
        if pr.error is None:
            xs.append(np.asarray(pr.tensor, dtype=np.float32))
    return np.concatenate(xs)


def run(engine, x: np.ndarray, batch: int = 16):
    """(fake-minus-real logit, features, seconds) over `x` in batches."""
    logits, feats, seconds = [], [], 0.0
    for i in range(0, len(x), batch):
        t0 = time.perf_counter()
        lo, fe = engine.run_with_features(x[i:i + batch])
        seconds += time.perf_counter() - t0
        logits.append(lo), feats.append(fe)
    return np.concatenate(logits), np.concatenate(feats), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/realitycheck-lite2-t2i.pt")
    ap.add_argument("--data", default="manifests/shared-data.toml")
    ap.add_argument("--limit", type=int, default=None, help="at most this many validation images (random, seed 0)")
    a = ap.parse_args()
    clf = load_classifier(a.weights, engine="torch")
    graph = engines.beside_dir(a.weights) / engines.FP32_FILE
    fast, exact = engines.GraphEngine("openvino", "bf16", graph), engines.GraphEngine("onnxruntime", "fp32", graph)
    items = labelled_files([a.data], "val", training_seed(clf.card))
    if a.limit:
        items = [items[i] for i in np.random.default_rng(0).permutation(len(items))[:a.limit]]
    x = views_of(clf, items)
    fi = clf.fake_index
    out = {}
    for name, engine in (("bf16", fast), ("fp32", exact), ("bf16 again", fast), ("fp32 again", exact)):
        lo, fe, s = run(engine, x)  # twice each, interleaved: a busy moment lands on both
        out.setdefault(name.split()[0], []).append((lo[:, fi] - lo[:, 1 - fi], clf.ood.score(fe), s))
    margin = {k: v[0][0] for k, v in out.items()}
    ood = {k: v[0][1] for k, v in out.items()}
    ms = {k: 1000 * min(s for _, _, s in v) / len(x) for k, v in out.items()}
    t = clf.threshold
    t_logit, t_ood = np.log(t / (1 - t)), clf.ood.threshold
    d_logit, d_ood = np.abs(margin["bf16"] - margin["fp32"]), np.abs(ood["bf16"] - ood["fp32"])
    print(f"{len(x)} validation views ({Path(a.weights).name}); forward ms/view (batch 16, best of 2): "
          f"OpenVINO bf16 {ms['bf16']:.2f}, ONNX Runtime fp32 {ms['fp32']:.2f}")
    print(f"bf16 vs fp32: verdicts flipped {int(np.sum((margin['bf16'] > t_logit) != (margin['fp32'] > t_logit)))}, "
          f"unfamiliar flags flipped {int(np.sum((ood['bf16'] > t_ood) != (ood['fp32'] > t_ood)))}")
    print("|d logit| p50 %.3f p95 %.3f p99 %.3f max %.3f; |d unfamiliarity| p50 %.4f p95 %.4f p99 %.4f max %.4f"
          % (*np.percentile(d_logit, [50, 95, 99, 100]), *np.percentile(d_ood, [50, 95, 99, 100])))
    print("| margin (x largest bf16 error) | logit margin | unfamiliarity margin | views recomputed in fp32 | "
          "forward ms/view | x fp32 |\n|---|---|---|---|---|---|")
    for k in (1.0, 1.5, 2.0):
        near = (np.abs(margin["bf16"] - t_logit) < k * d_logit.max()) | (np.abs(ood["bf16"] - t_ood) < k * d_ood.max())
        cost = ms["bf16"] + near.mean() * ms["fp32"]
        print(f"| {k} | {k * d_logit.max():.3f} | {k * d_ood.max():.4f} | {near.mean():.1%} | {cost:.2f} | "
              f"{ms['fp32'] / cost:.2f}x |")


if __name__ == "__main__":
    main()
