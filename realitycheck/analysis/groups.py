"""False alarms and detection by group of people (age band, gender, ethnicity), with 95% intervals.

A detector that flags real photos of older people, or of one ethnicity, more often than others
harms the people in them; an average hides it. Attributes come from a CSV of `path,attribute,value`
or from file names whose pattern is documented by their dataset:

* UTKFace `[age]_[gender]_[race]_[date&time].jpg` (optionally `utk_`-prefixed, as in the shared data):
  gender 0 male, 1 female; race 0-4 White, Black, Asian, Indian, Others (UTKFace's own labels).
* All-Age-Faces `%05dA%02d.jpg` (serial number, age; optionally `aaf_`-prefixed): serial numbers
  00000-07380 are female and 07381-13321 male (the dataset's README). It records no ethnicity
  (the set is mostly East Asian).

Ages become bands (AGE_BANDS). Each group's rate is compared with the rate over every image of the
same class whose attribute is known; a group is flagged when its whole 95% Wilson interval lies on
the bad side of that overall rate (above it for false alarms, below it for detection).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from realitycheck.analysis import metrics as M

AGE_BANDS = [(0, 12), (13, 19), (20, 39), (40, 59), (60, None)]
ATTRIBUTE_ORDER = ["age band", "gender", "ethnicity"]
UTK_RACE = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
UTK_GENDER = {"0": "male", "1": "female"}
_UTK = re.compile(r"^(?:utk_)?(\d{1,3})_([01])_([0-4])_\d{8,}", re.IGNORECASE)
_AAF = re.compile(r"^(?:aaf_)?(\d{5})A(\d{2})\.", re.IGNORECASE)
AAF_LAST_FEMALE, AAF_LAST = 7380, 13321
COLUMNS = ["attribute", "group", "label", "n", "called_fake", "rate_name", "rate", "ci95_low", "ci95_high",
           "overall_rate", "flag", "mean_p_fake"]


class GroupError(ValueError):
    """A groups request that cannot be answered (bad CSV, unknown attribute); one clear line."""


def age_band(age: int) -> str:
    for lo, hi in AGE_BANDS:
        if age >= lo and (hi is None or age <= hi):
            return f"{lo}+" if hi is None else f"{lo}-{hi}"
    raise GroupError(f"age {age} is not a valid age")


def from_name(path: str | os.PathLike) -> dict[str, str]:
    """Attributes a known dataset's file name carries ({} for any other name)."""
    name = Path(path).name
    m = _UTK.match(name)
    if m:
        age, gender, race = m.groups()
        return {"age band": age_band(int(age)), "gender": UTK_GENDER[gender], "ethnicity": UTK_RACE[race]}
    m = _AAF.match(name)
    if m:
        serial, age = int(m.group(1)), int(m.group(2))
        out = {"age band": age_band(age)}
        if serial <= AAF_LAST:
            out["gender"] = "female" if serial <= AAF_LAST_FEMALE else "male"
        return out
    return {}


def read_attributes_csv(path: str | os.PathLike) -> dict[Path, dict[str, str]]:
    """`path,attribute,value` rows (one attribute a row) -> {file as written: {attribute: value}}.

    Relative file paths are relative to the CSV (`attributes_for` resolves them). An attribute `age` with a whole number becomes its
    `age band`. A missing column, an empty cell or a file given two values of one attribute is a
    GroupError naming the line."""
    path = Path(path)
    out: dict[Path, dict[str, str]] = {}
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise GroupError(f"{path.name}: cannot read the groups CSV ({exc.strerror or exc})") from None
    with fh:
        reader = csv.DictReader(fh)
        cols = {(c or "").lower().strip(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("path", "attribute", "value") if c not in cols]
        if missing:
            raise GroupError(f"{path.name}: the groups CSV needs columns path,attribute,value; "
                             f"missing {','.join(missing)} (found {','.join(reader.fieldnames or []) or 'nothing'})")
        for i, row in enumerate(reader, start=2):
            cells = {c: (row.get(cols[c]) or "").strip() for c in ("path", "attribute", "value")}
            empty = [c for c, v in cells.items() if not v]
            if empty:
                raise GroupError(f"{path.name}: line {i}: missing {' and '.join(empty)}")
            attr, value = cells["attribute"].lower(), cells["value"]
            if attr == "age" and value.isdigit():
                attr, value = "age band", age_band(int(value))
            have = out.setdefault(Path(cells["path"]), {})
            if attr in have and have[attr] != value:
                raise GroupError(f"{path.name}: line {i}: {cells['path']} has two values of {attr!r} "
                                 f"({have[attr]!r} and {value!r})")
            have[attr] = value
    if not out:
        raise GroupError(f"{path.name}: the groups CSV has no rows")
    return out


def _match(paths: list[str], given: Mapping[Path, dict[str, str]], base: Path) -> dict[str, dict[str, str]]:
    """Table paths -> attributes: the same file (a relative CSV path taken from `base`), else the CSV
    path as the tail of the table path (`fake/x.jpg` or `x.jpg` matches `/data/set/fake/x.jpg`)."""
    exact = {os.path.normcase(os.path.abspath(p if p.is_absolute() else base / p)): a for p, a in given.items()}
    by_name: dict[str, list[tuple[tuple[str, ...], dict]]] = {}
    for p, a in given.items():
        by_name.setdefault(p.name, []).append((Path(os.path.normpath(p)).parts, a))
    out = {}
    for p in paths:
        hit = exact.get(os.path.normcase(os.path.abspath(p)))
        if hit is None:
            parts = Path(os.path.normpath(p)).parts
            tails = [a for q, a in by_name.get(Path(p).name, []) if _is_tail(q, parts)]
            hit = tails[0] if len(tails) == 1 else None
        if hit is not None:
            out[p] = hit
    return out


def _is_tail(q: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    q = tuple(x for x in q if x not in ("", ".", os.sep))
    while q and q[0] == "..":  # a CSV beside the data: its ../ prefix does not name the table's folders
        q = q[1:]
    return len(q) <= len(parts) and parts[len(parts) - len(q):] == q


def attributes_for(paths, csv_path: str | os.PathLike | None = None, names: bool = True) -> dict[str, dict[str, str]]:
    """Each path's attributes: parsed from its name (when `names`), then the CSV's values on top."""
    paths = [str(p) for p in paths]
    out = {p: dict(from_name(p)) for p in paths} if names else {p: {} for p in paths}
    if csv_path is not None:
        given = read_attributes_csv(csv_path)
        matched = _match(paths, given, Path(csv_path).parent)
        if not matched:
            raise GroupError(f"{Path(csv_path).name}: none of its {len(given)} files is among the evaluated images "
                             "(give paths relative to the CSV, or as inside the labelled folder)")
        for p, a in matched.items():
            out[p].update(a)
    return {p: a for p, a in out.items() if a}


def group_rates(table: pd.DataFrame, attributes: Mapping[str, Mapping[str, str]], threshold: float,
                only: list[str] | None = None) -> pd.DataFrame:
    """One row per (attribute, group, class): the detection rate (fakes) or false-alarm rate (reals),
    its 95% Wilson interval, the class's overall rate over images with that attribute known, and a
    flag when the group's interval lies wholly on the bad side of it. Failed images are left out.

    `only`: the attributes to report; one that no image has is a GroupError."""
    known = sorted({a for attrs in attributes.values() for a in attrs}, key=_attr_key)
    if only:
        unknown = [a for a in only if a not in known]
        if unknown:
            raise GroupError(f"unknown attribute {', '.join(repr(a) for a in unknown)}: the evaluated images have "
                             + (", ".join(known) if known else "no attributes (none from file names or a CSV)"))
        known = [a for a in known if a in only]
    t = M.rethreshold(table, threshold)
    t = t.loc[M.valid_rows(t).to_numpy(dtype=bool)]
    rows = []
    for attr in known:
        values = t["path"].astype(str).map(lambda p: (attributes.get(p) or {}).get(attr))
        sub = t.assign(_group=values)[values.notna()]
        for label in ("real", "fake"):
            cls = sub[sub["true_label"] == label]
            if cls.empty:
                continue
            called = cls["predicted"] == "fake"
            p_fake = pd.to_numeric(cls["p_fake"], errors="coerce")
            overall = float(called.mean())
            for group in sorted(cls["_group"].unique(), key=lambda g: _group_key(attr, g)):
                g = called[cls["_group"] == group]
                n, k = len(g), int(g.sum())
                lo, hi = M.wilson_interval(k, n)
                if label == "real":
                    flag = "more false alarms than overall" if lo > overall else ""
                else:
                    flag = "fewer detected than overall" if hi < overall else ""
                rows.append({"attribute": attr, "group": group, "label": label, "n": n, "called_fake": k,
                             "rate_name": "false-alarm rate" if label == "real" else "detection rate",
                             "rate": k / n, "ci95_low": lo, "ci95_high": hi, "overall_rate": overall, "flag": flag,
                             "mean_p_fake": float(p_fake[cls["_group"] == group].mean())})
    return pd.DataFrame(rows, columns=COLUMNS)


def _attr_key(a: str):
    return (ATTRIBUTE_ORDER.index(a) if a in ATTRIBUTE_ORDER else len(ATTRIBUTE_ORDER), a)


def _group_key(attr: str, g: str):
    if attr == "age band":
        m = re.match(r"^(\d+)", str(g))
        return (0, int(m.group(1)), "") if m else (1, 0, str(g))
    return (0, 0, str(g))


def format_table(rows: pd.DataFrame, markdown: bool = False) -> str:
    """The group table as text (the CLI) or as a Markdown table (docs)."""
    if rows.empty:
        return "groups: no image has a known attribute"
    if markdown:
        lines = ["| attribute | group | class | images | rate | 95% CI | overall | mean p_fake | flag |",
                 "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.attribute} | {r.group} | {r.label} | {r.n} | {r.rate_name} {r.rate:.1%} | "
                  f"{r.ci95_low:.1%}-{r.ci95_high:.1%} | {r.overall_rate:.1%} | {r.mean_p_fake:.3f} | {r.flag or '-'} |"
                  for r in rows.itertuples(index=False)]
        return "\n".join(lines)
    lines = ["per group (the rate of the group; overall: every image of the class with that attribute known):"]
    lines += [f"  {r.attribute:<10} {str(r.group):<8} {r.label:<4} n={r.n:<5} {r.rate_name} {r.rate:.1%} "
              f"(95% CI {r.ci95_low:.1%}-{r.ci95_high:.1%}; overall {r.overall_rate:.1%}; mean p_fake {r.mean_p_fake:.3f})"
              + (f"  <- {r.flag.upper()}" if r.flag else "")
              for r in rows.itertuples(index=False)]
    return "\n".join(lines)
