"""Copy the shipped example gallery into sample_images/ by a fixed rule (never picked by eye).

Only two shared sources may be redistributed: t2i-faces (MIT) and studio-real-faces (CC BY 4.0).
The rule takes images from the held-out TEST split of manifests/shared-data.toml (so a model trained
on that manifest never trains on an example), first by sorted file name:

* fakes: the first two SDXL images, the first FLUX.1 [schnell] and the first FLUX.1 [dev] image;
* reals: the neutral (`_03`) view of the first four people (a person is one split group).

Fakes are copied byte for byte (they are under 512 px already); studio portraits (1024 px) are
downscaled to 512 px on the longest side and saved as JPEG q90 to keep the repository small.
`sample_images/examples.csv` records each file's class, source, generator and licence; the
dashboard's demo reads it. Rerun with

    python scripts/make_gallery.py            # needs ../shared/data beside the checkout
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from PIL import Image

from realitycheck.intake.data import load_manifest, split_of
from realitycheck.intake.examples import EXAMPLES_CSV, FIELDS

ROOT = Path(__file__).resolve().parent.parent
MAX_SIDE = 512

T2I = ("t2i-faces (SFHQ-T2I sample figures), github.com/SelfishGene/SFHQ-T2I-dataset", "MIT")
STUDIO = ("Face Research Lab London Set (Lisa DeBruine and Benedict Jones), via github.com/debruine/webmorphR.stim",
          "CC BY 4.0")
RULE = [  # (manifest source, how many, generator named, (source, licence), file filter)
    ("sdxl", 2, "SDXL", T2I, None),
    ("flux1_schnell", 1, "FLUX.1 [schnell]", T2I, None),
    ("flux1_dev", 1, "FLUX.1 [dev]", T2I, None),
    ("studio", 4, "", STUDIO, "_03"),
]
ALREADY_SHIPPED = [  # the public-domain photos that shipped before the gallery
    ("astronaut_eileen_collins.jpg", "real", "NASA portrait (scikit-image `skimage.data.astronaut()`)", "",
     "public domain (NASA)"),
    ("grace_hopper.jpg", "real", "US Navy portrait (matplotlib `sample_data/grace_hopper.jpg`)", "",
     "public domain (US Navy)"),
]


def chosen(manifest: Path) -> list[tuple[Path, str, str, str, str]]:
    specs = {s.name: s for s in load_manifest(manifest)}
    out = []
    for name, n, generator, (source, licence), stem_end in RULE:
        items = [it for it in specs[name].items() if split_of(it[0], group=it[3]) == "test"
                 and (stem_end is None or it[0].stem.endswith(stem_end))]
        for it in sorted(items, key=lambda it: it[0].name)[:n]:
            out.append((it[0], it[1], source, generator, licence))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(ROOT / "manifests" / "shared-data.toml"))
    ap.add_argument("--out", default=str(ROOT / "sample_images"))
    args = ap.parse_args()
    out = Path(args.out)
    rows = [dict(zip(FIELDS, r)) for r in ALREADY_SHIPPED]
    for path, label, source, generator, licence in chosen(Path(args.manifest)):
        dest = out / path.name
        with Image.open(path) as im:
            if max(im.size) <= MAX_SIDE:
                shutil.copyfile(path, dest)
            else:
                im = im.convert("RGB")
                im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                im.save(dest, "JPEG", quality=90)
        rows.append(dict(zip(FIELDS, (dest.name, label, source, generator, licence))))
        print(f"{dest.name}\t{label}\t{generator or 'camera'}")
    with open(out / EXAMPLES_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: (r["label"] != "fake", r["path"])))


if __name__ == "__main__":
    main()
