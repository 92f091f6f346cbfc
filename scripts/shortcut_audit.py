"""Shortcut audit: do verdicts hold when the cues that differ between sources are swapped?

The shared sources differ in resolution and compression (UTKFace 200 px small JPEGs, diffusion
portraits 768 px and clean). A model that learned "small = real" would stop detecting fakes once
they are shrunk, and would start flagging reals once they are enlarged. On the held-out test
share of every source this re-scores:
  - fakes shrunk so their longer side is 200 px (reals as they are),
  - reals enlarged so their longer side is 768 px (fakes as they are),
  - every image re-compressed as JPEG quality 70,
and reports each source's rate (detection for fakes, false alarms for reals) before and after,
and by how many points it moved. Same images, paired: the change is the model's, not sampling's.

    python scripts/shortcut_audit.py --weights weights/realitycheck-aligned.pt \
        --data manifests/shared-data.toml --json docs/shortcut-audit.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import pandas as pd
from PIL import Image

from realitycheck.intake.data import collect_sources, parse_data_arg, split_of
from realitycheck.intake.images import load_image
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import Classifier


def to_side(img: Image.Image, side: int) -> Image.Image:
    s = side / max(img.size)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                      Image.LANCZOS if s > 1 else Image.BOX)


def jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


CONDITIONS = {
    "original": lambda img, label: img,
    "resized (fakes to 200 px, reals to 768 px)": lambda img, label: to_side(img, 200 if label == "fake" else 768),
    "JPEG q70": lambda img, label: jpeg(img, 70),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit-per-source", type=int)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--json")
    a = ap.parse_args()
    clf = Classifier.from_file(a.weights, precision="fp32", batch_size=16)
    threshold = a.threshold if a.threshold is not None else clf.threshold
    items = [it for it in collect_sources([s for d in a.data for s in parse_data_arg(d)])
             if split_of(it.path, group=it.group) == a.split]
    if a.limit_per_source:
        seen: dict[str, int] = {}
        kept = []
        for it in items:
            if seen.get(it.source, 0) < a.limit_per_source:
                kept.append(it); seen[it.source] = seen.get(it.source, 0) + 1
        items = kept
    rows = []
    for i in range(0, len(items), 16):
        chunk = items[i:i + 16]
        imgs = [load_image(it.path).image for it in chunk]
        for cond, f in CONDITIONS.items():
            preds = clf.predict([f(im, it.label) for im, it in zip(imgs, chunk)], [str(it.path) for it in chunk])
            rows += [{"source": it.source, "label": it.label, "condition": cond, "p_fake": p.p_fake}
                     for it, p in zip(chunk, preds) if p.ok]
        print(f"{min(i + 16, len(items))}/{len(items)}", file=sys.stderr, end="\r")
    df = pd.DataFrame(rows)
    df["called_fake"] = is_fake(df["p_fake"], threshold)
    rate = df.groupby(["source", "label", "condition"])["called_fake"].mean().unstack("condition")
    n = df[df["condition"] == "original"].groupby(["source", "label"]).size()
    out = []
    for (src, label), r in rate.iterrows():
        row = {"source": src, "label": label, "n": int(n[(src, label)]),
               "rate": "detection" if label == "fake" else "false alarms"}
        for cond in CONDITIONS:
            row[cond] = float(r[cond])
            if cond != "original":
                row[f"change: {cond}"] = round(100 * (float(r[cond]) - float(r["original"])), 1)
        out.append(row)
    worst = max(abs(v) for row in out for k, v in row.items() if k.startswith("change"))
    print(f"\nthreshold {threshold}; largest change {worst:.1f} points")
    print("| source | n | rate | original | resized | change (points) | JPEG q70 | change (points) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        rs = "resized (fakes to 200 px, reals to 768 px)"
        print(f"| {r['source']} | {r['n']} | {r['rate']} | {r['original']:.1%} | {r[rs]:.1%} | {r['change: ' + rs]:+.1f} "
              f"| {r['JPEG q70']:.1%} | {r['change: JPEG q70']:+.1f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"weights": a.weights, "threshold": threshold, "split": a.split, "largest_change_points": worst,
                       "rows": out}, fh, indent=2)


if __name__ == "__main__":
    main()
