"""Labelled data: discovering (path, label) pairs and named sources, reproducible splits, sampling weights.

Layouts understood by `discover`:
  * FOLDER/{real,fake}/...   (case-insensitive; `ai`, `generated`, `synthetic` also mean fake)
  * the Kaggle 140k layout   FOLDER/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}
    (or any FOLDER/{train,valid,test}/{real,fake}); pick one with `split=`
  * a CSV file with columns path,label (relative paths are relative to the CSV)
Files are found lazily (os.scandir), so a 100k-image folder is never listed into memory twice
nor decoded up front.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from realitycheck.intake.images import is_image_path

LABEL_ALIASES = {
    "real": "real", "fake": "fake", "ai": "fake", "generated": "fake", "synthetic": "fake",
}
SPLIT_NAMES = ("train", "valid", "val", "validation", "test")


class DataError(ValueError):
    """A folder or CSV that holds no usable labelled data; the message says what was expected."""


@dataclass
class LabelledSource:
    """Where labelled images come from and how folder names were mapped to labels."""

    root: Path
    class_dirs: dict[str, list[Path]] = field(default_factory=dict)  # label -> folders
    csv_rows: list[tuple[Path, str]] | None = None
    mapping: dict[str, str] = field(default_factory=dict)  # folder name -> label, shown to the user
    split: str | None = None

    def describe(self) -> str:
        if self.csv_rows is not None:
            return f"CSV {self.root} ({len(self.csv_rows)} rows)"
        m = ", ".join(f"{k} -> {v}" for k, v in sorted(self.mapping.items()))
        return f"{self.root}{f' [split {self.split}]' if self.split else ''}: {m}"

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        if self.csv_rows is not None:
            yield from self.csv_rows
            return
        for label in ("real", "fake"):
            for d in self.class_dirs.get(label, []):
                yield from ((p, label) for p in walk_images(d))


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, sorted per directory, following no directory symlink loops."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                yield from walk_images(Path(e.path))
            elif is_image_path(e.name):
                yield Path(e.path)
        except OSError:
            continue


def _class_subdirs(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return found
    for child in children:
        label = LABEL_ALIASES.get(child.name.lower())
        if label:
            found.setdefault(label, []).append(child)
    return found


def discover(source: str | os.PathLike, split: str | None = None) -> LabelledSource:
    """Find labelled images under a folder or in a CSV; raise `DataError` if there are none."""
    root = Path(source)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root}: expected a folder with real/ and fake/ subfolders, or a CSV of path,label")
        return _from_csv(root)
    # Kaggle layout: descend through real_vs_fake/real-vs-fake if present
    base = root
    for name in ("real_vs_fake", "real-vs-fake"):
        if (base / name).is_dir():
            base = base / name
    splits = {p.name.lower(): p for p in base.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES} if base.is_dir() else {}
    if splits and not _class_subdirs(base):
        if split is None:
            split = "test" if "test" in splits else sorted(splits)[0]
        key = split.lower()
        if key == "val":
            key = "valid" if "valid" in splits else key
        if key not in splits:
            raise DataError(f"{root}: split {split!r} not found; available: {sorted(splits)}")
        base = splits[key]
    dirs = _class_subdirs(base)
    if not dirs:
        raise DataError(
            f"{root}: found no class folders; expected subfolders named real and fake "
            "(fake may also be called ai, generated or synthetic), the Kaggle 140k layout, or a CSV of path,label"
        )
    mapping = {d.name: label for label, ds in dirs.items() for d in ds}
    return LabelledSource(root=root, class_dirs=dirs, mapping=mapping, split=split if splits else None)


def _from_csv(path: Path) -> LabelledSource:
    rows: list[tuple[Path, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.lower().strip(): c for c in (reader.fieldnames or [])}
        if "path" not in cols or "label" not in cols:
            raise DataError(f"{path}: CSV needs columns path,label; found {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            raw = (row[cols["label"]] or "").strip().lower()
            label = LABEL_ALIASES.get(raw)
            if label is None:
                raise DataError(f"{path}: line {i}: label {raw!r} is not real or fake")
            p = Path(row[cols["path"]].strip())
            rows.append((p if p.is_absolute() else path.parent / p, label))
    if not rows:
        raise DataError(f"{path}: CSV has no rows")
    return LabelledSource(root=path, csv_rows=rows, mapping={"csv": "label column"})


# ---------------------------------------------------------------------------------------------
# Several named sources in one run
# ---------------------------------------------------------------------------------------------

class Item(tuple):
    """(path, label, source, group): one labelled image and where it came from.

    A tuple, so code that only wants (path, label) can keep indexing [0] and [1].
    """

    __slots__ = ()

    def __new__(cls, path, label, source="", group=None):
        return super().__new__(cls, (Path(path), label, source, group))

    path = property(lambda self: self[0])
    label = property(lambda self: self[1])
    source = property(lambda self: self[2])
    group = property(lambda self: self[3])


@dataclass
class SourceSpec:
    """One labelled source: a folder (with real/ and fake/, or of one `label`), a CSV, and how to use it.

    `group`: a regular expression on the file stem whose first group names the split group
    (e.g. `^(.+)_\\d+$` for diffusion prompt groups). `group_scope`: sources with the same scope
    share group names (default: each source its own), so one image number used by two generators of
    one dataset lands on one side of the split. `include`: a regular expression on the file
    name that picks this source's files from a mixed folder. `weight`: sampling weight relative to
    the other sources of the same class (1 = in proportion to its size). `family`: the generator
    family a fake source belongs to (what the attribution head learns to name; default: its name).
    """

    name: str
    path: str
    label: str | None = None
    group: str | None = None
    include: str | None = None
    weight: float = 1.0
    group_scope: str | None = None
    family: str | None = None

    def items(self) -> list[Item]:
        root = Path(self.path)
        if self.label is None and root.is_dir() and not _class_subdirs(root) and root.name.lower() in LABEL_ALIASES:
            self.label = LABEL_ALIASES[root.name.lower()]  # a class folder itself: NAME=.../fake
        if self.label is not None:
            if self.label not in ("real", "fake"):
                raise DataError(f"source {self.name}: label must be real or fake, not {self.label!r}")
            if not root.is_dir():
                raise DataError(f"source {self.name}: {root}: no such folder")
            pairs = [(p, self.label) for p in walk_images(root)]
        else:
            pairs = list(discover(root))
        inc = re.compile(self.include) if self.include else None
        grp = re.compile(self.group) if self.group else None
        labels = {lab for _, lab in pairs}
        out = []
        for p, lab in pairs:
            if inc and not inc.search(p.name):
                continue
            g = None
            if grp:
                m = grp.match(p.stem)
                g = f"{self.group_scope or self.name}:{m.group(1) if m and m.groups() else p.stem}"
            out.append(Item(p, lab, self.name if len(labels) == 1 else f"{self.name}/{lab}", g))
        if not out:
            raise DataError(f"source {self.name}: no images found under {root}"
                            f"{' matching ' + self.include if self.include else ''}")
        return out


def parse_data_arg(text: str) -> list[SourceSpec]:
    """`--data` values: PATH, NAME=PATH, or a manifest file (.toml) naming several sources."""
    name, sep, path = text.partition("=")
    if not sep or os.sep in name or not name:
        name, path = "", text
    if path.lower().endswith(".toml"):
        return load_manifest(path)
    p = Path(path)
    return [SourceSpec(name=name or p.name or str(p), path=path)]


def load_manifest(path: str | os.PathLike) -> list[SourceSpec]:
    """Sources from a TOML manifest: `[[source]]` tables with name, path, label, group, include, weight.

    Relative paths are relative to the manifest, so a manifest travels with its data.
    """
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid TOML manifest ({exc})") from None
    specs = []
    known = set(SourceSpec.__dataclass_fields__)
    for i, entry in enumerate(doc.get("source", []), start=1):
        if not isinstance(entry, dict) or "path" not in entry or "name" not in entry:
            raise DataError(f"{path}: source #{i} needs at least name and path")
        unknown = set(entry) - known
        if unknown:
            raise DataError(f"{path}: source {entry['name']}: unknown field(s) {sorted(unknown)}")
        entry = dict(entry)
        p = Path(entry["path"])
        entry["path"] = str(p if p.is_absolute() else (path.parent / p))
        specs.append(SourceSpec(**entry))
    if not specs:
        raise DataError(f"{path}: the manifest names no [[source]]")
    return specs


def collect_sources(specs: list[SourceSpec]) -> list[Item]:
    """Every item of every source; a file listed by two sources is an error (it would leak)."""
    items, seen = [], {}
    for spec in specs:
        for it in spec.items():
            key = str(it.path.resolve())
            if key in seen:
                raise DataError(f"{it.path} is in two sources ({seen[key]} and {it.source})")
            seen[key] = it.source
            items.append(it)
    return items


def sample_weights(items: list[Item], source_weights: dict[str, float] | None = None) -> list[float]:
    """Per-item sampling weights: the two classes equally often, sources within a class by weight.

    Within a class each source's share is weight x size / sum(weight x size) (weight 1 = in
    proportion to its size); each class gets half of all draws, whatever its count.
    """
    source_weights = source_weights or {}
    mass: dict[str, float] = {}
    for it in items:
        mass[it[1]] = mass.get(it[1], 0.0) + source_weights.get(it[2], 1.0)
    return [0.5 * source_weights.get(it[2], 1.0) / mass[it[1]] for it in items]


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

def split_of(path: str | os.PathLike, fractions=(0.70, 0.15, 0.15), seed: int = 0, group: str | None = None) -> str:
    """'train', 'val' or 'test' from a hash of the file name: stable when files are added or moved.

    With `group` (e.g. a diffusion prompt group) the hash is of the group, so near-duplicates
    made from one prompt always land on the same side.
    """
    name = group if group else Path(path).name
    h = int.from_bytes(hashlib.sha1(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    if h < fractions[0] + fractions[1]:
        return "val"
    return "test"


def split_items(items: list, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> dict[str, list]:
    """Items (pairs or `Item`s) by split; an `Item`'s group, when it has one, decides its side."""
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for it in items:
        out[split_of(it[0], fractions, seed, getattr(it, "group", None))].append(it)
    return out


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

def collate_skip_errors(batch):
    """Stack good samples; hand back the errors (index, message) separately."""
    import torch

    good = [(x, y, i) for x, y, i in batch if not isinstance(x, str)]
    bad = [(i, x) for x, y, i in batch if isinstance(x, str)]
    if not good:
        return None, None, torch.empty(0, dtype=torch.long), bad
    xs, ys, idx = zip(*good)
    return torch.stack(xs), torch.tensor(ys), torch.tensor(idx), bad
