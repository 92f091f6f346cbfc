"""The continual-learning experiment of docs/continual.md: does `learn` fix a missed generator family, and
at what cost to every other source?

A simulated analyst corrects N images of a family the model misses (N = 25, 50, 100, 200): each is
judged (recorded as a case), labelled fake with its generator, and `realitycheck learn` fine-tunes a
candidate on them plus replay of the model's training data, then gates it. Reported per N: the
family's detection on its *unseen rest* (the family's hash-split test share: prompt groups no
correction came from), before and after, with 95% intervals; the gate's per-source rates on the
replayed test shares; the worst change on any other source; and the gate's decision.

    python scripts/without_source.py manifests/shared-data.toml sdxl flux1_schnell flux1_dev studio \\
        --out runs/default-sources.toml        # the sources the default was trained on
    python scripts/continual_experiment.py --weights weights/realitycheck-lite2-aligned.pt \\
        --manifest manifests/shared-data.toml --family sdxl --replay runs/default-sources.toml \\
        --sizes 25 50 100 200 --epochs 2 --out runs/continual-sdxl

Every N starts from the same model, with its own case database and registry under --out (nothing
is promoted: the active model is never changed). A size already learned under --out (or a --collect
folder) is read back from its registry record, so a stopped experiment resumes where it was. Results: OUT/continual.csv, OUT/continual.json and
a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import pandas as pd


def family_items(manifest: str, family: str, seed: int) -> tuple[list, list]:
    """(correction pool, unseen rest) of one manifest source, split by the manifest's own group rule:
    the pool is its train+val share, the unseen rest its test share (no prompt group on both sides)."""
    from realitycheck.intake.data import load_manifest, split_of

    specs = [s for s in load_manifest(manifest) if s.name == family]
    if not specs:
        raise SystemExit(f"no source named {family} in {manifest}")
    items = specs[0].items()
    pool = [it for it in items if split_of(it[0], seed=seed, group=it[3]) != "test"]
    rest = [it for it in items if split_of(it[0], seed=seed, group=it[3]) == "test"]
    order = lambda it: hashlib.sha1(f"continual:{seed}:{Path(it[0]).name}".encode()).digest()  # noqa: E731
    return sorted(pool, key=order), rest


def detection(weights, items: list) -> dict:
    from realitycheck.analysis import evaluate
    from realitycheck.analysis.metrics import per_source_from_table
    from realitycheck.model.inference import load_classifier

    clf = load_classifier(weights, engine="torch", precision="fp32")
    table = evaluate.evaluate_items(clf, items, workers=None).table
    row = per_source_from_table(table, threshold=clf.threshold).to_dict("records")[0]
    return {"rate": row["rate"], "ci95_low": row["ci95_low"], "ci95_high": row["ci95_high"], "n": row["n"],
            "threshold": clf.threshold}


def run_one(n: int, args, pool: list, rest: list) -> dict:
    from realitycheck.analysis.cases import CaseStore, Recorder
    from realitycheck.model.inference import load_classifier
    from realitycheck.training import learn

    work = Path(args.out) / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["REALITYCHECK_REGISTRY"] = str(work / "registry")  # this run's versions only
    store = CaseStore(f"sqlite:///{(work / 'cases.db').resolve()}", images_dir=work / "images")
    clf = load_classifier(args.weights, engine="torch", precision="fp32")
    rec = Recorder(clf, source="experiment:analyst", session=f"n={n}", store=store)
    chosen = pool[:n]
    for it, pred in zip(chosen, clf.predict([str(it[0]) for it in chosen])):
        sha = rec.add(pred, path=it[0])
        if sha:
            store.label(sha, "fake", generator=args.family, note="simulated analyst correction")
    opts = learn.LearnOptions(epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
                              cases_share=args.cases_share, replay=list(args.replay or []), workers=args.workers,
                              seed=args.seed, promote=False)
    meta = learn.learn(store, args.weights, opts, log=lambda m: print(f"[n={n}] {m}", flush=True),
                       command=f"scripts/continual_experiment.py n={n}")
    return row_of(n, meta, rest)


def row_of(n: int, meta: dict, rest: list) -> dict:
    """One table row from a learned version's record: the family on its unseen rest, the gate's numbers."""
    from realitycheck.model import registry

    cand = detection(registry.weights_of(meta), rest)
    gate = meta["gate"]
    worst = max(((s["candidate"]["rate"] - s["current"]["rate"]) * (1 if s["label"] == "real" else -1), s["source"])
                for s in gate["sources"] if s["current"] and s["candidate"])
    return {"corrections": n, "cases_trained": len(meta["cases_used"]), "cases_holdout": len(meta["holdout"]),
            "family_detected": cand["rate"], "family_ci95": f"{cand['ci95_low']:.3f}-{cand['ci95_high']:.3f}",
            "family_n": cand["n"], "candidate_threshold": cand["threshold"],
            "worst_other_change": worst[0], "worst_other_source": worst[1],
            "gate": "pass" if gate["promote"] else "fail: " + "; ".join(gate["reasons"]),
            "sources": gate["sources"], "version": meta["id"]}


def finished(folder: Path) -> dict[int, dict]:
    """{N: the learned version's record} of the runs already done under `folder` (out/nN/registry/...)."""
    from realitycheck.model import registry

    done = {}
    for d in sorted(folder.glob("n*/registry")):
        learned = [v for v in registry.versions(d) if v.get("gate")]
        if learned and d.parent.name[1:].isdigit():
            done[int(d.parent.name[1:])] = learned[-1]
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="the model that misses the family")
    ap.add_argument("--manifest", required=True, help="a manifest naming the family as a source")
    ap.add_argument("--family", required=True, help="the source name of the missed family in --manifest")
    ap.add_argument("--replay", action="append", help="the model's training data (default: its card's)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cases-share", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/continual")
    ap.add_argument("--collect", nargs="+", help="more --out folders whose finished runs count (not re-run)")
    args = ap.parse_args()
    pool, rest = family_items(args.manifest, args.family, args.seed)
    if len(pool) < max(args.sizes):
        raise SystemExit(f"{args.family}: only {len(pool)} images outside its test share; largest size {max(args.sizes)}")
    print(f"{args.family}: {len(pool)} images to correct from, {len(rest)} unseen (test share)", flush=True)
    base = detection(args.weights, rest)
    # a run already finished under --out (or under --collect folders, e.g. of a parallel process) is
    # read from its record, not learned again: an interrupted experiment loses nothing
    done = {}
    for folder in [args.out, *(args.collect or [])]:
        done.update(finished(Path(folder)))
    rows = [row_of(n, done[n], rest) if n in done else run_one(n, args, pool, rest) for n in args.sizes]
    out = Path(args.out)
    (out / "continual.json").write_text(json.dumps({"base": base, "runs": rows, "args": vars(args)}, indent=2,
                                                   default=str))
    flat = pd.DataFrame([{k: v for k, v in r.items() if k != "sources"} for r in rows])
    flat.to_csv(out / "continual.csv", index=False)
    print(f"\nbase model: {args.family} detected {base['rate']:.1%} ({base['ci95_low']:.1%}-{base['ci95_high']:.1%}) "
          f"of {base['n']} unseen, threshold {base['threshold']:.4g}\n")
    print("| corrections | trained / held out | family detected (95% CI) | worst change elsewhere | gate |")
    print("|---|---|---|---|---|")
    for r in rows:
        lo, hi = (float(x) for x in r["family_ci95"].split("-"))
        print(f"| {r['corrections']} | {r['cases_trained']} / {r['cases_holdout']} | {r['family_detected']:.1%} "
              f"({lo:.1%}-{hi:.1%}) | {r['worst_other_change'] * 100:+.1f} pts ({r['worst_other_source']}) | {r['gate']} |")


if __name__ == "__main__":
    main()
