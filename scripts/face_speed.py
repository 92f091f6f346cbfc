"""Face detection, old vs new: same faces? same landmarks? faster? One Markdown table, per source.

    python scripts/face_speed.py --per-source 40              # old: method "full", new: "refine"
    git show 0cea005:realitycheck/intake/faces.py > /tmp/faces_old.py
    python scripts/face_speed.py --old-file /tmp/faces_old.py  # old: that file, new: today's default

Per source of the manifest (all splits; the first N files by a hash of the name, the same subset on
every machine): faces found by each (a face of one matches a face of the other when their boxes
overlap with IoU > 0.5), the landmark error of each matched face (the largest of its five landmark
distances, in the image's own pixels) and the speed ratio old / new. "crop": the share of images
the new path answered with the refine method's crop (the others went to the whole image).
Speed: the images are cut into chunks; each chunk is timed old, new, new, old (so a drift of the
machine's load cancels) in every round; the ratio is the median of the per-chunk ratios, with their
interquartile range. Only ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import time

import numpy as np
from PIL import Image

from realitycheck.intake import faces
from realitycheck.intake.data import collect_sources, load_manifest


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    return float(faces._iou(np.asarray(a, float), np.asarray([b], float))[0])


def compare(old: faces.FaceReport, new: faces.FaceReport) -> tuple[int, list[float]]:
    """(faces of `old` without a matching face in `new` or the other way round, landmark errors)."""
    unmatched, errors, used = 0, [], set()
    for f in old.faces:
        best = max(((box_iou(f.box, r.box), j) for j, r in enumerate(new.faces) if j not in used), default=(0, -1))
        if best[0] <= 0.5:
            unmatched += 1
            continue
        used.add(best[1])
        errors.append(float(np.linalg.norm(f.landmarks - new.faces[best[1]].landmarks, axis=1).max()))
    return unmatched + len(new.faces) - len(used), errors


def chunk_ratios(images: list[Image.Image], old, new, chunk: int, rounds: int) -> list[float]:
    """old / new time of each chunk in each round, each chunk timed old, new, new, old."""
    def timed(group, find):
        t0 = time.perf_counter()
        for im in group:
            find(im)
        return time.perf_counter() - t0

    ratios = []
    for _ in range(rounds):
        for i in range(0, len(images), chunk):
            g = images[i:i + chunk]
            a1, b1, b2, a2 = timed(g, old), timed(g, new), timed(g, new), timed(g, old)
            ratios.append((a1 + a2) / (b1 + b2))
    return ratios


def finders(old_file: str | None):
    """(old, new): find_faces of an older faces.py file vs today's default, or "full" vs "refine"."""
    if not old_file:
        return (lambda im: faces.find_faces(im, method="full")), (lambda im: faces.find_faces(im, method="refine"))
    spec = importlib.util.spec_from_file_location("faces_old", old_file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["faces_old"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    mod.YUNET_PATH = faces.YUNET_PATH  # the file lives outside the package: same ONNX model
    return mod.find_faces, faces.find_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default="manifests/shared-data.toml")
    ap.add_argument("--per-source", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=5, help="images per timed chunk")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sources", nargs="*", help="only these sources (default: all of the manifest)")
    ap.add_argument("--old-file", help="an older realitycheck/intake/faces.py to compare today's default with")
    ap.add_argument("--margin", type=int, default=faces.REFINE_MARGIN, help="faces.REFINE_MARGIN to try")
    ap.add_argument("--margin-fraction", type=float, default=faces.REFINE_MARGIN_FRACTION,
                    help="faces.REFINE_MARGIN_FRACTION to try")
    ap.add_argument("--max-area", type=float, default=faces.REFINE_MAX_AREA, help="faces.REFINE_MAX_AREA to try")
    a = ap.parse_args()
    faces.REFINE_MARGIN, faces.REFINE_MARGIN_FRACTION, faces.REFINE_MAX_AREA = a.margin, a.margin_fraction, a.max_area
    old, new = finders(a.old_file)
    by: dict[str, list] = {}
    for it in collect_sources(load_manifest(a.manifest)):
        if not a.sources or it.source in a.sources:
            by.setdefault(it.source, []).append(it)
    crops, plain = [0], faces._detect_refined

    def counting(*args):
        out = plain(*args)
        crops[0] += out is not None
        return out

    old(Image.new("RGB", (64, 64)))  # load the detectors outside the timings
    new(Image.new("RGB", (64, 64)))
    print("| source | images | size (median) | faces old / new | unmatched | landmark error median / p95 / max (px) "
          "| crop | speed old / new (IQR) |\n|---|---|---|---|---|---|---|---|")
    all_err, all_ratio, totals, crop_err = [], [], np.zeros(4, int), []
    for src in sorted(by):
        chosen = sorted(by[src], key=lambda it: hashlib.sha1(it.path.name.encode()).digest())[: a.per_source]
        images = [Image.open(it.path).convert("RGB") for it in chosen]
        crops[0], counts, errors = 0, np.zeros(4, int), []
        for im in images:
            before = crops[0]
            r_old = old(im)
            faces._detect_refined = counting
            try:
                r_new = new(im)
            finally:
                faces._detect_refined = plain
            u, e = compare(r_old, r_new)
            counts += (1, r_old.count, r_new.count, u)
            errors += e
            crop_err += e if crops[0] > before else []
        ratios = chunk_ratios(images, old, new, a.chunk, a.rounds)
        all_err, all_ratio, totals = all_err + errors, all_ratio + ratios, totals + counts
        size = f"{int(np.median([max(im.size) for im in images]))} px"
        print(row(src, counts, size, errors, f"{crops[0] / len(images):.0%}", ratios))
    print(row("**all**", totals, "", all_err, "", all_ratio))
    if crop_err:
        print(f"\nFaces the new path answered from a crop: {len(crop_err)}; their landmark error median / p95 / max "
              f"{np.median(crop_err):.2f} / {np.percentile(crop_err, 95):.2f} / {max(crop_err):.2f} px")


def row(name, counts, size, errors, crop, ratios) -> str:
    """One Markdown table row; counts: images, faces old, faces new, unmatched."""
    err = f"{np.median(errors):.2f} / {np.percentile(errors, 95):.2f} / {max(errors):.2f}" if errors else "-"
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    n, f_old, f_new, unmatched = counts
    return (f"| {name} | {n} | {size} | {f_old} / {f_new} | {unmatched} | {err} | {crop} "
            f"| {med:.2f}x ({q1:.2f}-{q3:.2f}) |")


if __name__ == "__main__":
    main()
