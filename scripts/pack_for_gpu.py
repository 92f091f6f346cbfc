"""Copy the train + validation shares of the shared sources into a folder small enough to send to a
lent GPU machine (which has no ../shared), split into parts of at most --part-mb each.

Only files that `realitycheck train` would use for training or validation with the same
--max-per-source / --seed are copied (test files never leave this machine). Images whose longer side
exceeds --max-side are shrunk (box filter) and saved as JPEG q90, exactly what `--max-side` does when
training on the originals; all others are copied byte for byte. A manifest with the same source names
is written beside the data, so the GPU run is the card's command with `--data` pointing at it.

    python scripts/pack_for_gpu.py manifests/shared-data.toml --out .gpu --max-per-source 1000 --max-side 512
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from realitycheck.intake.data import load_manifest
from realitycheck.training.train import TrainConfig, build_data, shrink_to


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--out", default=".gpu")
    ap.add_argument("--max-per-source", type=int, default=None)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part-mb", type=float, default=40)
    a = ap.parse_args()
    out = Path(a.out)
    specs = load_manifest(a.manifest)
    data = build_data(TrainConfig(data=[a.manifest], max_per_source=a.max_per_source, seed=a.seed))
    part, size, n = 0, 0, 0
    by_source = {s.name: s for s in specs}
    for split in ("train", "val"):
        for it in data.splits[split]:
            src = Path(it[0])
            if size > a.part_mb * 1e6:
                part, size = part + 1, 0
            dest = out / f"part{part}" / it[2] / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            img = Image.open(src)
            if max(img.size) > a.max_side:
                shrink_to(img.convert("RGB"), a.max_side).save(dest.with_suffix(".jpg"), "JPEG", quality=90)
                dest = dest.with_suffix(".jpg")
            else:
                shutil.copyfile(src, dest)
            size += dest.stat().st_size
            n += 1
    lines = ["# written by scripts/pack_for_gpu.py: train + validation shares only", ""]
    for name, spec in by_source.items():
        for p in range(part + 1):
            if (out / f"part{p}" / name).is_dir():
                lines += ["[[source]]", f'name = "{name}"', f'path = "part{p}/{name}"', f'label = "{spec.label}"']
                if spec.group:
                    lines.append(f"group = '{spec.group}'")
                lines.append("")
    (out / "shared-data.toml").write_text("\n".join(lines))
    print(f"{n} files in {part + 1} parts under {out}")


if __name__ == "__main__":
    main()
