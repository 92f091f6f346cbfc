"""The example gallery: the shipped sample photos, each with its known class, and the seed examples if present."""

from __future__ import annotations

from pathlib import Path

from realitycheck import REPO_ROOT
from realitycheck.intake.examples import load_examples
from realitycheck.intake.images import is_image_path

SAMPLE_DIR = REPO_ROOT / "sample_images"
SEED_EXAMPLES_DIR = (REPO_ROOT / ".." / "shared" / "data" / "seed-examples").resolve()


def examples() -> list[tuple[Path, str | None]]:
    """Example images: sample_images/ (each file's class from its examples.csv) and the seed examples if present."""
    out: list[tuple[Path, str | None]] = [(e.path, e.label) for e in load_examples(SAMPLE_DIR)]
    for label in ("real", "fake"):
        d = SEED_EXAMPLES_DIR / label
        if d.is_dir():
            out += [(p, label) for p in sorted(d.iterdir()) if is_image_path(p)]
    return out
