"""Share of images in which each face detector finds at least one face, per source: YuNet (what
RealityCheck uses) vs OpenCV's Haar cascade (what it used before). Prints a Markdown table.

    python scripts/face_detector_rates.py manifests/shared-data.toml --per-source 300

Images per source: the first N by a hash of the file name (the same subset on every machine).
Haar needs opencv-python-headless < 5 (its cascades are not shipped in 5.x); it runs as the old
`faces.find_faces` did (longest side <= 480 px, histogram-equalised grey, faces >= 8% of the side).
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
from PIL import Image

from realitycheck.intake.data import collect_sources, parse_data_arg
from realitycheck.intake.faces import find_faces


def haar_count(img: Image.Image, cascade) -> int:
    import cv2

    w, h = img.size
    scale = min(1.0, 480 / max(w, h))
    small = img if scale == 1.0 else img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    gray = cv2.equalizeHist(np.asarray(small.convert("L")))
    side = max(20, int(0.08 * min(gray.shape)))
    return len(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side)))


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="+")
    ap.add_argument("--per-source", type=int, default=300)
    a = ap.parse_args()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    items = collect_sources([s for d in a.data for s in parse_data_arg(d)])
    by: dict[str, list] = {}
    for it in items:
        by.setdefault(it.source, []).append(it)
    print("| source | images | YuNet: face found | Haar: face found | YuNet ms/image | Haar ms/image |")
    print("|---|---|---|---|---|---|")
    for src in sorted(by):
        chosen = sorted(by[src], key=lambda it: hashlib.sha1(it.path.name.encode()).digest())[: a.per_source]
        yn = hr = 0
        ty = th = 0.0
        for it in chosen:
            img = Image.open(it.path).convert("RGB")
            t0 = time.perf_counter(); yn += find_faces(img).count > 0; ty += time.perf_counter() - t0
            t0 = time.perf_counter(); hr += haar_count(img, cascade) > 0; th += time.perf_counter() - t0
        n = len(chosen)
        print(f"| {src} | {n} | {yn / n:.1%} ({yn}) | {hr / n:.1%} ({hr}) | {1000 * ty / n:.0f} | {1000 * th / n:.0f} |")


if __name__ == "__main__":
    main()
