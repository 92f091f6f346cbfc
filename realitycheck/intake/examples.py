"""The shipped example gallery (sample_images/) and what to say about a verdict whose truth is known.

`examples.csv` beside the images records each file's true class, source, generator and licence
(written by scripts/make_gallery.py). Since the truth of every example is known, the demo can say
when the model is wrong: a gallery that only showed hits would oversell the detector.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_CSV = "examples.csv"
FIELDS = ["path", "label", "source", "generator", "licence"]
PLAIN = {"real": "a real photo", "fake": "AI-generated"}


@dataclass(frozen=True)
class Example:
    path: Path
    label: str | None  # "real" | "fake" | None (not recorded)
    source: str = ""
    generator: str = ""
    licence: str = ""


def load_examples(folder: str | os.PathLike) -> list[Example]:
    """The images of `folder`, fakes first, with what examples.csv records (label None if it has no row)."""
    from realitycheck.intake.images import is_image_path

    folder = Path(folder)
    if not folder.is_dir():
        return []
    meta: dict[str, dict] = {}
    table = folder / EXAMPLES_CSV
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            meta = {row["path"]: row for row in csv.DictReader(fh)}
    out = []
    for p in sorted(folder.iterdir()):
        if not is_image_path(p):
            continue
        row = meta.get(p.name, {})
        label = row.get("label") if row.get("label") in PLAIN else None
        out.append(Example(p, label, row.get("source", ""), row.get("generator", ""), row.get("licence", "")))
    order = {"fake": 0, "real": 1, None: 2}
    return sorted(out, key=lambda e: (order[e.label], e.path.name))


def outcome(truth: str | None, predicted: str | None) -> str | None:
    """"caught", "missed", "false alarm" or "right" (a real photo called real); None if either is unknown."""
    if truth not in PLAIN or predicted not in PLAIN:
        return None
    if truth == "fake":
        return "caught" if predicted == "fake" else "missed"
    return "right" if predicted == "real" else "false alarm"


def outcome_words(truth: str | None, predicted: str | None) -> str:
    """The verdict in plain words, saying whether it is right when the truth is known."""
    said = f"The model calls this {PLAIN.get(predicted, 'unreadable')}"
    return {
        "caught": f"{said}, and it is: caught.",
        "missed": f"{said}, but it is AI-generated: the model misses this one.",
        "right": f"{said}, and it is.",
        "false alarm": f"{said}, but it is a real photo: a false alarm.",
        None: f"{said}.",
    }[outcome(truth, predicted)]
