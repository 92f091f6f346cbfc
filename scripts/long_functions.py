"""Functions and methods of the package longer than a limit (default 80 lines), longest first.

    python scripts/long_functions.py            # exit 1 if any
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def long_functions(root: Path, limit: int) -> list[tuple[int, str]]:
    out = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((n, f"{f.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "realitycheck"))
    ap.add_argument("--limit", type=int, default=80)
    args = ap.parse_args()
    found = long_functions(Path(args.root), args.limit)
    for n, where in found:
        print(f"{n:4d} lines  {where}")
    print(f"{len(found)} functions over {args.limit} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
