"""The package's import graph: every import (function-level ones too), import cycles, and imports that
go from a lower layer up (the layers and their order: the docstring of `realitycheck/__init__.py`).

    python scripts/import_graph.py            # the graph, then cycles and upward imports; exit 1 if any
    python scripts/import_graph.py --quiet    # only the problems
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

LAYERS = ("intake", "model", "explain", "analysis", "training", "serving")  # lowest first


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    deps: dict[str, set[str]] = defaultdict(set)
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a module also imports its packages
                    t = t.rpartition(".")[0]
                if t and t != name and t != "realitycheck" and not name.startswith(t + "."):
                    deps[name].add(t)
    return deps


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def upward(deps: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in deps.items() for b in targets
                  if layer(a) is not None and layer(b) is not None and layer(b) > layer(a))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "realitycheck"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    mods = modules(Path(args.root))
    deps = imports(mods)
    if not args.quiet:
        for m in sorted(mods):
            print(f"{m} -> {' '.join(sorted(d.removeprefix('realitycheck.') for d in deps.get(m, ())))}")
    cyc, up = cycles(deps), upward(deps)
    for c in cyc:
        print("cycle:", " <-> ".join(c))
    for a, b in up:
        print(f"upward: {a} ({LAYERS[layer(a)]}) imports {b} ({LAYERS[layer(b)]})")
    print(f"{len(mods)} modules, {sum(map(len, deps.values()))} imports, {len(cyc)} cycles, {len(up)} upward imports")
    return 1 if cyc or up else 0


if __name__ == "__main__":
    sys.exit(main())
