"""Write a copy of a data manifest without some of its sources: the training data of a
leave-one-source-out run (docs/generalization.md, sections 5 and 12).

    python scripts/without_source.py manifests/shared-data.toml sd21 --out runs/no-sd21.toml

Each [[source]] block is kept as written, except that its relative `path` is rewritten to point
from the new file's folder, so the copy can live anywhere.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path


def _name(block: str) -> str | None:
    m = re.search(r'^name\s*=\s*"([^"]+)"', block, re.M)
    return m.group(1) if m else None


def without_sources(text: str, names: set[str], src_dir: Path, out_dir: Path) -> str:
    head, *blocks = text.split("[[source]]")
    missing = names - {_name(b) for b in blocks}
    if missing:
        raise SystemExit(f"no source named {', '.join(sorted(missing))} in the manifest")

    def repath(block: str) -> str:
        def sub(m: re.Match) -> str:
            p = Path(m.group(2))
            if not p.is_absolute():
                p = Path(os.path.relpath((src_dir / p).resolve(), out_dir.resolve()))
            return f'{m.group(1)}"{p.as_posix()}"'
        return re.sub(r'^(path\s*=\s*)"([^"]*)"', sub, block, flags=re.M)

    kept = [b for b in blocks if _name(b) not in names]
    return head + "".join("[[source]]" + repath(b) for b in kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("leave_out", nargs="+", help="source name(s) to leave out")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(without_sources(a.manifest.read_text(encoding="utf-8"), set(a.leave_out),
                                     a.manifest.parent, a.out.parent), encoding="utf-8")
    print(f"wrote {a.out} without {', '.join(a.leave_out)}")


if __name__ == "__main__":
    main()
