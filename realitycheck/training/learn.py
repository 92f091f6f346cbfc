"""Learning from analysts' corrections: fine-tune a candidate, gate its release, version it.

`learn` fine-tunes a *candidate* from the current model on the reviewed cases (the case database)
plus a replay of the model's own training data (so it does not forget), through `train.fit`: the
same preprocessing, augmentation and options as the model was trained with (its card's settings).
Reviewed cases are split by file hash (`cases.is_holdout`): the holdout share is never written into
the training data. The candidate's decision threshold follows the rule the shipped default's came
from: the lowest at which every real source has at most 5% false alarms on validation.

`gate` then scores both models, each at its own threshold, on the held-out test share of every
replayed source and on the cases' holdout. The candidate is promoted only if no source gets worse
beyond the current model's 95% interval (fakes: detection below its lower bound; reals: false
alarms above its upper bound) and the holdout accuracy improves; otherwise it is kept as a rejected
version with the report. Every version lands in the registry (`registry`), from which the CLI and
the dashboard switch or roll back in one step.
"""

from __future__ import annotations

import csv
import os
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from realitycheck import REPO_ROOT
from realitycheck.analysis.cases import CaseStore
from realitycheck.model import registry

# settings of the current model's training that a fine-tune must not copy
NOT_INHERITED = {"data", "out", "resume", "test_only", "init_weights", "epochs", "max_steps", "lr", "teacher",
                 "limit", "extra_real", "workers", "device", "batch_size", "patience"}


class LearnError(ValueError):
    """Learning cannot start (no reviewed cases, no replay data, ...); one clear line."""


@dataclass
class LearnOptions:
    epochs: int = 2
    max_steps: int | None = None  # per epoch (quick tries, tests)
    lr: float = 1e-4  # a fine-tune: a tenth of train's default head rate
    batch_size: int = 32
    cases_share: float = 0.3  # share of each class's draws given to the cases (the rest: replay)
    replay: list = field(default_factory=list)  # default: the current model's own training data (its card)
    max_false_alarm: float = 0.05  # the threshold rule (see the module docstring)
    workers: int = 0
    seed: int = 0
    precision: str = "auto"
    half: bool = True
    promote: bool = True  # False: gate and record, but never activate


# ---------------------------------------------------------------------------------------------
# The data: cases split by hash, replay of the model's own training data
# ---------------------------------------------------------------------------------------------

def case_split(store: CaseStore) -> tuple[list[dict], list[dict], int]:
    """(training share, holdout share, reviewed cases without a stored image) of the reviewed cases."""
    items = store.reviewed_items()
    usable = [it for it in items if it["path"]]
    return ([it for it in usable if not it["holdout"]], [it for it in usable if it["holdout"]],
            len(items) - len(usable))


def write_case_csv(items: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "sha256"])
        for it in items:
            w.writerow([it["path"], it["label"], it["sha256"]])
    return path


def _resolve_data_arg(arg: str) -> str | None:
    """A recorded data argument (PATH, NAME=PATH, manifest) that exists here, or None."""
    name, sep, path = str(arg).partition("=")
    if not sep or os.sep in name or not name:
        name, path = "", str(arg)
    for base in (Path.cwd(), REPO_ROOT):
        p = Path(path) if Path(path).is_absolute() else base / path
        if p.exists():
            return f"{name}={p}" if name else str(p)
    return None


def replay_data(card, given: list[str]) -> list[str]:
    """The data to replay: as given, else the current model's training data (card) as found here."""
    wanted = list(given) or list((card.training or {}).get("data") or [])
    if isinstance(wanted, str):
        wanted = [wanted]
    if not wanted:
        raise LearnError("the current model's card records no training data: give --replay DATA "
                         "(a folder, NAME=FOLDER or a manifest) so the fine-tune does not forget")
    found = [_resolve_data_arg(a) for a in wanted]
    missing = [a for a, f in zip(wanted, found) if f is None]
    if missing:
        raise LearnError(f"replay data not found here: {', '.join(map(str, missing))}; give --replay DATA")
    return found


def inherited_config(card, **overrides):
    """A TrainConfig with the current model's training settings (preprocessing, augmentation ...) + overrides."""
    from realitycheck.training.train_config import TrainConfig

    settings = dict((card.training or {}).get("settings") or {})
    known = {f.name for f in fields(TrainConfig)}
    kept = {k: v for k, v in settings.items() if k in known and k not in NOT_INHERITED}
    kept.setdefault("arch", card.arch)
    pre = card.preprocessing
    kept.setdefault("align", pre.align)
    kept.setdefault("crop", pre.crop)
    if pre.resize:
        kept.setdefault("resize", pre.resize)
    kept["arch"] = card.arch  # the weights decide the architecture
    return TrainConfig(**{**kept, **overrides})


def _class_counts(cfg) -> dict[str, int]:
    from realitycheck.training.train import build_data

    data = build_data(replace(cfg, source_weight=[]))
    counts: dict[str, int] = {}
    for it in data.splits["train"]:
        if not str(it[2]).startswith("cases"):
            counts[it[1]] = counts.get(it[1], 0) + 1
    return counts


def case_weights(cfg, train_cases: list[dict], share: float) -> list[str]:
    """--source-weight values that give the cases `share` of each class's draws (the rest: replay)."""
    labels = sorted({it["label"] for it in train_cases})
    other = _class_counts(cfg)
    out = []
    for lab in labels:
        n_cases = sum(it["label"] == lab for it in train_cases)
        n_other = other.get(lab, 0)
        if n_other == 0 or n_cases == 0:
            continue
        w = share * n_other / ((1 - share) * n_cases)
        out.append(f"{'cases' if len(labels) == 1 else 'cases/' + lab}={w:.6g}")
    return out


# ---------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------

def decide(sources: list[dict], holdout: dict) -> tuple[bool, list[str]]:
    """Promote iff no source is worse beyond the current model's 95% interval and the holdout improves.

    `sources`: rows with label, current (rate, ci95_low, ci95_high) and candidate rate.
    `holdout`: current/candidate accuracy and n. Returns (promote, reasons in words)."""
    reasons = []
    for s in sources:
        cur, cand = s["current"], s["candidate"]
        if cand is None or cur is None:
            continue
        if s["label"] == "fake" and cand["rate"] < cur["ci95_low"]:
            reasons.append(f"{s['source']}: detection fell to {cand['rate']:.1%}, below the current model's 95% "
                           f"interval ({cur['ci95_low']:.1%}-{cur['ci95_high']:.1%})")
        if s["label"] == "real" and cand["rate"] > cur["ci95_high"]:
            reasons.append(f"{s['source']}: false alarms rose to {cand['rate']:.1%}, above the current model's 95% "
                           f"interval ({cur['ci95_low']:.1%}-{cur['ci95_high']:.1%})")
    if not holdout.get("n"):
        reasons.append("no reviewed cases in the holdout share: nothing shows the candidate is better on them")
    elif not holdout["candidate_accuracy"] > holdout["current_accuracy"]:
        reasons.append(f"cases' holdout accuracy did not improve ({holdout['current_accuracy']:.1%} -> "
                       f"{holdout['candidate_accuracy']:.1%} on {holdout['n']})")
    return not reasons, reasons


def _per_source(clf, data: list[str], workers: int) -> list[dict]:
    from realitycheck.analysis import evaluate
    from realitycheck.analysis.metrics import per_source_from_table

    result = evaluate.evaluate_sources(clf, data, only_split="test", workers=workers)
    return per_source_from_table(result.table, threshold=clf.threshold).to_dict("records")


def _holdout(clf, items: list[dict], workers: int) -> dict:
    from realitycheck.analysis import evaluate
    from realitycheck.analysis.metrics import valid_rows
    from realitycheck.intake.data import Item

    if not items:
        return {"n": 0, "correct": 0, "accuracy": None}
    result = evaluate.evaluate_items(clf, [Item(it["path"], it["label"], "cases-holdout") for it in items],
                                     workers=workers)
    t = result.table.loc[valid_rows(result.table)]
    correct = int((t["predicted"] == t["true_label"]).sum())
    return {"n": len(t), "correct": correct, "accuracy": correct / len(t) if len(t) else None}


def gate(current_path: Path, candidate_path: Path, replay: list[str], holdout_items: list[dict], *,
         workers: int = 0, log: Callable[[str], None] = lambda m: None) -> dict:
    """Score both models (each at its own threshold, PyTorch fp32) and decide; the report as a dict."""
    from realitycheck.model.inference import load_classifier

    report: dict = {"rule": "promote only if no replayed source's test share gets worse beyond the current model's "
                            "95% Wilson interval and the cases' holdout accuracy improves"}
    rows: dict[str, dict] = {}
    scored = {}
    for role, path in (("current", current_path), ("candidate", candidate_path)):
        clf = load_classifier(path, engine="torch", precision="fp32")
        log(f"gate: scoring the {role} model ({clf.name}, threshold {clf.threshold:.4g})")
        for r in _per_source(clf, replay, workers):
            key = f"{r['source']}|{r['label']}"
            rows.setdefault(key, {"source": r["source"], "label": r["label"], "current": None, "candidate": None})
            rows[key][role] = {k: r[k] for k in ("n", "rate", "ci95_low", "ci95_high", "called_fake")}
        scored[role] = _holdout(clf, holdout_items, workers)
        report[f"{role}_threshold"] = clf.threshold
    holdout = {"n": scored["current"]["n"], "current_accuracy": scored["current"]["accuracy"],
               "candidate_accuracy": scored["candidate"]["accuracy"],
               "current_correct": scored["current"]["correct"], "candidate_correct": scored["candidate"]["correct"],
               "sha256": [it["sha256"] for it in holdout_items]}
    report["sources"] = list(rows.values())
    report["holdout"] = holdout
    report["promote"], report["reasons"] = decide(report["sources"], holdout)
    changes = [(s["candidate"]["rate"] - s["current"]["rate"]) * (1 if s["label"] == "real" else -1)
               for s in report["sources"] if s["current"] and s["candidate"]]
    report["worst_change"] = max(changes) if changes else None  # in rate points, "worse" positive
    return report


def gate_markdown(report: dict) -> str:
    lines = ["| source | class | images | current | 95% interval | candidate |", "|---|---|---|---|---|---|"]
    for s in report["sources"]:
        cur, cand = s["current"] or {}, s["candidate"] or {}
        word = "detected" if s["label"] == "fake" else "false alarms"
        lines.append(f"| {s['source']} | {s['label']} | {cur.get('n', '')} | {cur.get('rate', float('nan')):.1%} {word} | "
                     f"{cur.get('ci95_low', float('nan')):.1%}-{cur.get('ci95_high', float('nan')):.1%} | "
                     f"{cand.get('rate', float('nan')):.1%} |")
    h = report["holdout"]
    if h["n"]:
        lines.append(f"\nCases' holdout ({h['n']}): accuracy {h['current_accuracy']:.1%} -> {h['candidate_accuracy']:.1%}")
    else:
        lines.append("\nCases' holdout: empty")
    lines.append(f"\nDecision: {'PROMOTED' if report['promote'] else 'REJECTED'}"
                 + ("" if report["promote"] else ": " + "; ".join(report["reasons"])))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def _finish_candidate(path: Path, data: list[str], opts: LearnOptions, lineage: dict, log) -> float | None:
    """Set the candidate's threshold by the every-source rule on its validation share (as the default's was)
    and record in its card where it came from."""
    from realitycheck.analysis import evaluate
    from realitycheck.analysis.thresholds import release_threshold
    from realitycheck.model import checkpoints
    from realitycheck.model.inference import load_classifier

    clf = load_classifier(path, engine="torch", precision="fp32")
    table = evaluate.evaluate_sources(clf, data, only_split="val", workers=opts.workers).table
    t = release_threshold(table, opts.max_false_alarm)
    model, card, extras = checkpoints.load_checkpoint_extras(path)
    if t is not None:
        card.threshold = t
        card.notes.append(f"Threshold {card.threshold:.4g}: the lowest at which every real source has at most "
                          f"{opts.max_false_alarm:.0%} false alarms on validation (learn).")
        log(f"threshold {card.threshold:.4g} (every real source <= {opts.max_false_alarm:.0%} false alarms on validation)")
    card.training["learned"] = lineage
    card.notes.append(f"Fine-tuned by `realitycheck learn` from {lineage['parent']} ({lineage['parent_file']}) on "
                      f"{lineage['cases_trained']} reviewed cases plus replay of {', '.join(lineage['replay'])}; "
                      f"{lineage['cases_held_out']} reviewed cases held out for the release gate.")
    checkpoints.save_checkpoint(path, model, card, half=opts.half, extras=extras)
    return card.threshold if t is not None else None


def learn(store: CaseStore, weights: str | os.PathLike | None = None, opts: LearnOptions | None = None, *,
          log: Callable[[str], None] = print, command: str = "") -> dict:
    """Fine-tune a candidate on the reviewed cases + replay, gate it, record it in the registry.

    Returns the version record (with "gate": the report and "promoted"). Raises LearnError.
    """
    from realitycheck.model import checkpoints
    from realitycheck.model.inference import default_weights_path
    from realitycheck.training.train import fit

    opts = opts or LearnOptions()
    current = Path(weights) if weights else default_weights_path()
    if not current.is_file():
        raise LearnError(f"{current.name}: no such model to learn from")
    card = checkpoints.read_card(current)
    train_cases, holdout_cases, no_image = case_split(store)
    if no_image:
        log(f"note: {no_image} reviewed cases have no stored image (not kept on this deployment) and are left out")
    if not train_cases:
        raise LearnError("no reviewed cases to learn from in the training share (label cases first: "
                         "`realitycheck cases label`; about 20% of them, chosen by file hash, are held out)")
    replay = replay_data(card, opts.replay)
    root = registry.registry_dir()
    parent = registry.find_by_weights(current, root) or registry.register_base(current, root)
    vid, vdir = registry.new_version_dir(root)
    train_csv = write_case_csv(train_cases, vdir / "cases-train.csv")
    write_case_csv(holdout_cases, vdir / "cases-holdout.csv")  # kept for the record; never given to training
    data = [*replay, f"cases={train_csv}"]
    cfg = inherited_config(card, data=data, out=str(vdir / "model"), init_weights=str(current), epochs=opts.epochs,
                           max_steps=opts.max_steps, lr=opts.lr, batch_size=opts.batch_size, workers=opts.workers,
                           seed=opts.seed, precision=opts.precision, half=opts.half, patience=max(opts.epochs, 1))
    # the real-only folders it trained with are replayed too (their train share, as train takes them)
    cfg.extra_real = [f for f in (_resolve_data_arg(e) for e in (card.training or {}).get("extra_real") or []) if f]
    cfg.source_weight = [*cfg.source_weight, *case_weights(cfg, train_cases, opts.cases_share)]
    log(f"learn {vid}: {len(train_cases)} reviewed cases train, {len(holdout_cases)} held out; replay: {', '.join(replay)}")
    try:
        candidate = fit(cfg, log=log)
        candidate.with_suffix(".train-state.pt").unlink(missing_ok=True)  # resume state: not needed once finished
        threshold = _finish_candidate(candidate, data, opts, {
            "parent": parent["id"], "parent_file": current.name, "cases_trained": len(train_cases),
            "cases_held_out": len(holdout_cases), "replay": replay, "version": vid}, log)
        report = gate(current, candidate, replay, holdout_cases, workers=opts.workers, log=log)
    except BaseException as exc:  # the attempt stays on record (never promoted), then the error goes on up
        registry.save_version(vdir, {"id": vid, "parent": parent["id"], "status": "failed",
                                     "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                                     "weights": "model.pt", "data": replay, "command": command})
        raise
    status = "promoted" if report["promote"] and opts.promote else ("rejected" if not report["promote"] else "candidate")
    meta = registry.save_version(vdir, {
        "id": vid, "parent": parent["id"], "status": status, "weights": "model.pt",
        "weights_hash": registry.file_hash(candidate), "card": "model.md", "threshold": threshold,
        "data": replay, "cases_used": [it["sha256"] for it in train_cases],
        "holdout": [it["sha256"] for it in holdout_cases], "train_csv": train_csv.name,
        "settings": {k: v for k, v in vars(opts).items()}, "gate": report, "command": command})
    (vdir / "gate.md").write_text(f"# Release gate of {vid} (parent {parent['id']})\n\n{gate_markdown(report)}\n")
    if status == "promoted":
        registry.use(vid, root, base_path=current)
        log(f"{vid} promoted: it is now the active model (roll back with `realitycheck models rollback`)")
    else:
        log(f"{vid} {status}: kept in {vdir.name} with its report; the active model is unchanged")
    meta["promoted"] = status == "promoted"
    return meta


def command_line(argv: list[str]) -> str:
    return "realitycheck " + " ".join(shlex.quote(a) for a in argv)


__all__ = ["LearnOptions", "LearnError", "learn", "gate", "decide", "gate_markdown", "case_split", "replay_data"]
