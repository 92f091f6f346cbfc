"""Does a code change keep every answer? Score a manifest's split and save, or compare with a saved run.

A refactor must not move a single prediction. This records, for every image of the split, p_fake, each
face's p_fake, the unfamiliarity score and the generator probabilities, on the PyTorch path and
(with --engine) another; `--compare` fails if any differs by more than --tol (default 1e-6) or if an
image's face count, verdict or error changed.

    python scripts/same_answers.py --data manifests/shared-data.toml --split test --out runs/answers-before.json
    # ... change the code ...
    python scripts/same_answers.py --data manifests/shared-data.toml --split test --compare runs/answers-before.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def score(data: str, split: str, weights: str | None, engine: str, limit: int | None) -> dict:
    from realitycheck.intake.data import load_manifest, split_of
    from realitycheck.model.inference import load_classifier

    items = [it for spec in load_manifest(data) for it in spec.items()
             if split == "all" or split_of(it[0], seed=0, group=it[3]) == split]
    items = sorted(items, key=lambda it: str(it[0]))[:limit]
    clf = load_classifier(weights, engine=engine, precision="fp32")
    out = {}
    for it, p in zip(items, clf.predict([str(it[0]) for it in items])):
        out[str(it[0])] = {"p_fake": p.p_fake, "label": p.label, "faces": p.faces, "error": p.error,
                           "face_p_fake": list(p.face_p_fake), "ood_score": p.ood_score,
                           "generator": (p.generator or {}).get("probabilities")}
    return {"weights": str(clf.name), "engine": engine, "split": split, "answers": out}


def differences(before: dict, after: dict, tol: float) -> list[str]:
    problems = []
    a, b = before["answers"], after["answers"]
    if set(a) != set(b):
        problems.append(f"different images: {len(set(a) ^ set(b))} not in both runs")
    for path in sorted(set(a) & set(b)):
        x, y = a[path], b[path]
        for key in ("label", "faces", "error"):
            if x[key] != y[key]:
                problems.append(f"{path}: {key} {x[key]!r} -> {y[key]!r}")
        pairs = [("p_fake", x["p_fake"], y["p_fake"]), ("ood_score", x["ood_score"], y["ood_score"])]
        pairs += [(f"face {i} p_fake", u, v) for i, (u, v) in enumerate(zip(x["face_p_fake"], y["face_p_fake"]))]
        pairs += [(f"generator {k}", (x["generator"] or {}).get(k), v) for k, v in (y["generator"] or {}).items()]
        for what, u, v in pairs:
            if (u is None) != (v is None) or (u is not None and abs(u - v) > tol):
                problems.append(f"{path}: {what} {u} -> {v}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a .toml manifest")
    ap.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ap.add_argument("--weights", default=None, help="default: the shipped default model")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tol", type=float, default=1e-6)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="save this run")
    g.add_argument("--compare", help="a saved run to compare with")
    args = ap.parse_args()
    run = score(args.data, args.split, args.weights, args.engine, args.limit)
    if args.out:
        Path(args.out).write_text(json.dumps(run))
        print(f"saved {len(run['answers'])} answers of {run['weights']} ({args.engine}) to {args.out}")
        return 0
    before = json.loads(Path(args.compare).read_text())
    problems = differences(before, run, args.tol)
    for line in problems[:50]:
        print(line)
    worst = max((abs(before["answers"][k]["p_fake"] - v["p_fake"]) for k, v in run["answers"].items()
                 if k in before["answers"] and v["p_fake"] is not None
                 and before["answers"][k]["p_fake"] is not None), default=0.0)
    print(f"{len(run['answers'])} images; largest p_fake change {worst:.2e}; "
          f"{'SAME' if not problems else f'{len(problems)} DIFFERENCES'} (tolerance {args.tol:g})")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
