"""Evaluating a classifier on labelled images: a per-image table, then metrics from the table.

The model runs once per image; everything threshold-dependent is recomputed from the table
(`metrics.rethreshold`), so moving the threshold never re-runs the model. With `csv_path` each
finished batch is appended to the CSV at once: an interrupted run leaves a partial CSV, and
`resume=True` skips the images already in it.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from realitycheck.analysis import metrics as M
from realitycheck.intake.data import LabelledSource, discover
from realitycheck.intake.images import ImageError, load_image
from realitycheck.intake.provenance import PROVENANCE_COLUMN, kind_of, table_summary
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import Classifier, Prediction

TABLE_COLUMNS = M.TABLE_COLUMNS
# Columns written beside TABLE_COLUMNS: what each file declares (provenance.kind_of). Not part of
# the scores, and optional when resuming from an older CSV (filled in afterwards).
EXTRA_COLUMNS = [PROVENANCE_COLUMN]


@dataclass
class EvaluationResult:
    table: pd.DataFrame
    source: str = ""
    mapping: dict = field(default_factory=dict)
    model: str = ""
    seconds: float = 0.0
    interrupted: bool = False
    families: dict = field(default_factory=dict)  # source -> generator family (attribution's true labels)

    def metrics(self, threshold: float, n_bootstrap: int = 1000) -> dict:
        return M.metrics_from_table(self.table, threshold, n_bootstrap=n_bootstrap)

    def summary(self, threshold: float) -> dict:
        """Metrics plus what a reader needs to trust them (data, model, failures, speed)."""
        m = self.metrics(threshold)
        y, p = M.scored_pairs(self.table)
        kind, sentence = M.separation(m)
        # at chance or reversed no threshold is suggested anywhere (CLI, JSON, report, dashboard)
        extra = {"separation": {"kind": kind, "sentence": sentence},
                 "threshold_advice": M.threshold_advice(y, p, kind)}
        if len(set(y)) == 2 and kind not in ("chance", "reversed"):
            t_bal, bal = M.best_threshold_balanced_accuracy(y, p)
            t_fpr, fpr, tpr = M.threshold_for_fpr(y, p, 0.05)
            extra.update({"best_threshold_balanced_accuracy": {"threshold": t_bal, "balanced_accuracy": bal},
                          "threshold_for_fpr_5pct": {"threshold": t_fpr, "fpr": fpr, "recall_fake": tpr}})
        if len(self.table):
            extra["per_source"] = M.per_source_from_table(self.table, threshold).to_dict(orient="records")
            attributed = attribution_summary(self.table, threshold, self.families)
            if attributed:
                extra["attribution"] = attributed
        failed = self.table.loc[~M.valid_rows(self.table).to_numpy(dtype=bool)] if len(self.table) else self.table
        extra["failed_reasons"] = {str(path): str(err) for path, err in zip(failed["path"], failed["error"])}
        n_scored = len(p)
        declared = table_summary(M.rethreshold(self.table, threshold)) if len(self.table) else None
        if declared is not None:
            extra["provenance"] = declared
        return {**m, **extra, "model": self.model, "data": self.source, "label_mapping": self.mapping,
                "seconds": round(self.seconds, 2),
                "images_per_second": round(n_scored / self.seconds, 2) if self.seconds > 0 else None}


def prediction_row(pred: Prediction, true_label: str, source: str = "") -> dict:
    return {
        "path": pred.name, "true_label": true_label,
        "p_fake": pred.p_fake, "predicted": pred.label,
        "correct": None if pred.label is None else pred.label == true_label,
        "faces": pred.faces, "seconds": round(pred.seconds, 4), "error": pred.error or "",
        "source": source, "unfamiliar": pred.unfamiliar, "ood_score": pred.ood_score,
        "generator": pred.generator["name"] if pred.generator else None,
    }


class ResumeError(ValueError):
    """A results CSV that cannot be resumed from; the message says why."""


def _read_partial(csv_path: Path) -> pd.DataFrame:
    """Finished rows of an earlier run. A torn last line (a kill mid-write) is dropped, so redone."""
    try:
        df = pd.read_csv(csv_path, dtype={"error": str, "path": str}, keep_default_na=True, on_bad_lines="skip",
                         engine="python")
    except (pd.errors.EmptyDataError, FileNotFoundError):
        return pd.DataFrame(columns=TABLE_COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ResumeError(f"{csv_path}: cannot resume from this CSV ({str(exc).splitlines()[0]}); "
                          "delete it or choose another --csv") from None
    for col, default in M.OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ResumeError(f"{csv_path}: not a RealityCheck results CSV (missing columns {missing}); "
                          "delete it or choose another --csv")
    df = df[TABLE_COLUMNS]
    df["error"] = M.as_text(df["error"])
    p = pd.to_numeric(df["p_fake"], errors="coerce")
    finished = (df["error"] != "") | (p.notna() & df["predicted"].isin(["real", "fake"]))
    return df[finished].drop_duplicates("path", keep="last").reset_index(drop=True)


def _table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS + EXTRA_COLUMNS)
    df["error"] = M.as_text(df["error"])
    return df


def _open_csv(csv_file: Path, done: pd.DataFrame):
    """(writer, file) appending to `csv_file` after the rows kept from an earlier run.

    What is kept is rewritten atomically (dropping a torn last line), then appended to: the CSV stays
    well-formed and an interrupt at any moment loses no finished row."""
    csv_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_file.with_name(csv_file.name + ".tmp")
    with open(tmp, "w", newline="") as out:
        w = csv.DictWriter(out, fieldnames=TABLE_COLUMNS + EXTRA_COLUMNS)
        w.writeheader()
        w.writerows(done.to_dict("records"))
    os.replace(tmp, csv_file)
    fh = open(csv_file, "a", newline="")
    return csv.DictWriter(fh, fieldnames=TABLE_COLUMNS + EXTRA_COLUMNS), fh


def _progress_bar(progress: bool | Callable[[int, int], None], total: int):
    """(a tqdm bar or None, the callback the stream reports to): progress=True draws a bar."""
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluate", unit="img", file=sys.stderr, mininterval=0.5, disable=None)
        return bar, lambda d, t: bar.update(d - bar.n)
    return None, progress if callable(progress) else None


def evaluate_items(clf: Classifier, items: list[tuple[Path, str]], *, csv_path: str | os.PathLike | None = None,
                   resume: bool = False, progress: bool | Callable[[int, int], None] = False,
                   workers: int | None = None, log: Callable[[str], None] = lambda m: None,
                   source: str = "", mapping: dict | None = None,
                   predict_stream: Callable[..., Iterable[Prediction]] | None = None) -> EvaluationResult:
    """Run `clf` over (path, label) items, streaming; returns the per-image table.

    `predict_stream(paths, progress=...)` replaces `clf.iter_predict` (e.g. a Ray pipeline, see
    `distributed`); the CSV, resume and interrupt handling stay this one.
    """
    done = pd.DataFrame(columns=TABLE_COLUMNS)
    csv_file = Path(csv_path) if csv_path else None
    if csv_file and resume and csv_file.exists():
        done = _read_partial(csv_file)
        finished = set(done["path"].astype(str))
        before = len(items)
        items = [it for it in items if str(it[0]) not in finished]
        log(f"resuming: {before - len(items)} images already in {csv_file}, {len(items)} to go")
    labels = {str(it[0]): it[1] for it in items}
    sources = {str(it[0]): (it[2] if len(it) > 2 else "") for it in items}
    rows: list[dict] = []
    writer, fh = _open_csv(csv_file, done) if csv_file else (None, None)
    bar, progress_cb = _progress_bar(progress, len(items))
    t0 = time.perf_counter()
    interrupted = False
    try:
        pending: list[dict] = []
        stream = predict_stream or (lambda paths, progress: clf.iter_predict(paths, workers=workers, progress=progress))
        for i, pred in enumerate(stream([str(it[0]) for it in items], progress=progress_cb)):
            row = prediction_row(pred, labels.get(pred.name, ""), sources.get(pred.name, ""))
            # beside the verdict, never in p_fake; read where the file was read when that stage did (Ray)
            row[PROVENANCE_COLUMN] = pred.provenance.kind if pred.provenance is not None else kind_of(items[i][0])
            rows.append(row)
            pending.append(row)
            if writer and len(pending) >= clf.batch_size:
                batch, pending = pending, []  # cleared first: an interrupt mid-write never writes twice
                writer.writerows(batch); fh.flush()
        if writer and pending:
            batch, pending = pending, []
            writer.writerows(batch); fh.flush()
    except KeyboardInterrupt:
        interrupted = True
        if writer and pending:
            batch, pending = pending, []
            writer.writerows(batch); fh.flush()
    finally:
        if fh:
            fh.close()
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    table = _table(rows)
    if len(done):
        done = done.assign(**{PROVENANCE_COLUMN: [kind_of(p) for p in done["path"]]})  # rows of the earlier run
        table = pd.concat([done.astype(table.dtypes.to_dict(), errors="ignore"), table], ignore_index=True)
        table["error"] = M.as_text(table["error"])
    failed = int((table["error"] != "").sum())
    if failed:
        log(f"{failed} files could not be read; they are listed under 'failed' and excluded from the metrics")
    families = dict((clf.card.attribution or {}).get("source_families") or {})
    return EvaluationResult(table=table, source=source, mapping=mapping or {}, model=clf.name, seconds=seconds,
                            interrupted=interrupted, families=families)


def evaluate_folder(clf: Classifier, folder: str | os.PathLike, *, split: str | None = None, **kwargs) -> EvaluationResult:
    """Discover labelled images under `folder` (or a CSV) and evaluate them; a `LabelledSource`
    (e.g. one `access.checked_labelled_source` has vetted) is used as it is."""
    src: LabelledSource = folder if isinstance(folder, LabelledSource) else discover(folder, split=split)
    log = kwargs.get("log") or (lambda m: None)
    log(f"labels: {src.describe()}")
    items = with_sources(src)  # paths only (never pixels); decoding is streamed
    return evaluate_items(clf, items, source=src.describe(), mapping=src.mapping, **kwargs)


def with_sources(src: LabelledSource) -> list:
    """(path, label, source) for a labelled folder: a subfolder inside a class folder names the source
    (fake/sd21/x.jpg -> "sd21"); files directly in it take the class folder's name (e.g. "real")."""
    from realitycheck.intake.data import Item

    dirs = [(d, lab) for lab, ds in src.class_dirs.items() for d in ds]
    out = []
    for p, label in src:
        source = ""
        for d, lab in dirs:
            try:
                rel = Path(p).relative_to(d)
            except ValueError:
                continue
            source = rel.parts[0] if len(rel.parts) > 1 else d.name
            break
        out.append(Item(p, label, source))
    return out


def evaluate_sources(clf: Classifier, data: list[str], *, only_split: str | None = None, seed: int = 0,
                     **kwargs) -> EvaluationResult:
    """Evaluate several labelled sources (folders, NAME=FOLDER, manifests) in one table with a source column.

    `only_split` keeps the images whose hash split (the one `train` uses) is train, val or test:
    e.g. the held-out test share of every source.
    """
    from realitycheck.intake.data import collect_sources, parse_data_arg, split_of

    specs = [s for d in data for s in parse_data_arg(d)]
    items = collect_sources(specs)
    if only_split:
        items = [it for it in items if split_of(it[0], seed=seed, group=it[3]) == only_split]
    log = kwargs.get("log") or (lambda m: None)
    desc = "; ".join(f"{s.name}: {s.path}" for s in specs) + (f" [{only_split} split]" if only_split else "")
    log(f"sources: {desc} ({len(items)} images)")
    result = evaluate_items(clf, items, source=desc, mapping={s.name: s.label or "real/ and fake/" for s in specs},
                            **kwargs)
    result.families.update({s.name: s.family for s in specs if s.family})  # the manifest's word wins
    return result


def compare_models(classifiers: dict[str, Classifier], folder: str | os.PathLike, *, threshold: float | None = None,
                   progress: Callable[[str, int, int], None] | None = None, **kwargs) -> dict:
    """Several models on the same labelled images: one summary and one set of curves per model.

    Each model is scored at its own threshold (`Classifier.threshold`: its card's, chosen on its own
    validation data), since a threshold tuned for one model means nothing for another; `threshold`
    scores them all at that one common value instead, only when asked for.
    Returns {"rows": [summary + "model" + "seconds"], "curves": {name: metrics curves}, "folder",
    "threshold" (the common one, or None), "thresholds" ({name: the threshold its row used})};
    progress(name, done, total) is called as each model runs. Raises DataError like `evaluate_folder`.
    """
    from realitycheck.model.inference import check_threshold

    common = None if threshold is None else check_threshold(threshold)
    rows, curves, used = [], {}, {}
    for name, clf in classifiers.items():
        tick = (lambda d, t, name=name: progress(name, d, t)) if progress else False
        result = evaluate_folder(clf, folder, progress=tick, **kwargs)
        used[name] = float(clf.threshold if common is None else common)
        s = result.summary(used[name])
        rows.append({**s, "model": name, "images": s.get("n"), "failed": s.get("n_failed"),
                     "seconds": round(result.seconds, 1)})
        curves[name] = M.curves_from_table(result.table)
    return {"rows": rows, "curves": curves, "folder": str(folder), "threshold": common, "thresholds": used}


# ---------------------------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------------------------

def _jpeg(q):
    def f(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    return f


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "original": lambda im: im,
    "jpeg q90": _jpeg(90),
    "jpeg q70": _jpeg(70),
    "jpeg q50": _jpeg(50),
    "downscale x0.5": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.BILINEAR),
    "blur sigma 1": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
}


def robustness_sweep(clf: Classifier, folder, *, split: str | None = None, threshold: float,
                     limit: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Accuracy and ROC-AUC under each perturbation; rows (perturbation, metric, value)."""
    items = list(discover(folder, split=split))
    if limit:
        rng = np.random.default_rng(0)
        items = [items[i] for i in sorted(rng.choice(len(items), size=min(limit, len(items)), replace=False))]
    scores = {name: ([], []) for name in PERTURBATIONS}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="robustness", unit="img", file=sys.stderr)
    for start in range(0, len(items), clf.batch_size):
        chunk = items[start:start + clf.batch_size]
        loaded, labels = [], []
        for p, lab in chunk:
            try:
                loaded.append(load_image(p).image)
                labels.append(lab)
            except ImageError:
                continue
        for name, f in PERTURBATIONS.items():
            preds = clf.predict([f(im) for im in loaded])
            for pr, lab in zip(preds, labels):
                if pr.ok:
                    scores[name][0].append(lab)
                    scores[name][1].append(pr.p_fake)
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    rows = []
    for name, (y, p) in scores.items():
        m = M.compute_metrics(y, p, threshold, n_bootstrap=0)
        rows += [{"perturbation": name, "metric": "accuracy", "value": m["accuracy"]},
                 {"perturbation": name, "metric": "roc_auc", "value": m["roc_auc"]}]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def card_summary(card) -> dict:
    d = asdict(card)
    d.get("training", {}).pop("test_files", None)
    return d


def write_report(path, clf: Classifier, result: EvaluationResult, *, threshold: float, robustness=None,
                 image_root=None, groups: pd.DataFrame | None = None) -> Path:
    from realitycheck.analysis.report import write_html_report

    table = M.rethreshold(result.table, threshold)
    ok = M.valid_rows(table)
    curves = M.curves_from_table(table)
    counts = table.loc[ok, "true_label"].value_counts().to_dict()
    dataset = {"source": result.source, "label mapping": result.mapping, "images": len(table),
               "scored": int(ok.sum()), "real": counts.get("real", 0), "fake": counts.get("fake", 0),
               "failed": int((~ok).sum())}
    rob = pd.DataFrame(robustness) if robustness is not None else None
    return write_html_report(path, title=f"RealityCheck evaluation: {clf.name}", model_card=card_summary(clf.card),
                             dataset_summary=dataset, metrics=result.metrics(threshold), table=table,
                             curves=curves, robustness=rob, provenance=table_summary(table), image_root=image_root,
                             attribution=attribution_summary(table, threshold, result.families),
                             groups=groups)


def attribution_summary(table: pd.DataFrame, threshold: float, families: dict) -> dict | None:
    """The attribution head on the detected fakes: top-1 accuracy and the confusion matrix.

    A fake's true family is its source's (`families`, from the manifest or the model's card; a source
    it does not name stands for itself, e.g. a generator the model never saw). None: no guesses.
    """
    from realitycheck.model.attribution import confusion

    if "generator" not in table or not table["generator"].notna().any():
        return None
    ok = M.valid_rows(table).to_numpy(dtype=bool)
    p = pd.to_numeric(table["p_fake"], errors="coerce").to_numpy(dtype=float)
    rows = table[ok & (table["true_label"].map(M._norm_label) == "fake").to_numpy() & is_fake(p, threshold)
                 & table["generator"].notna().to_numpy()]
    if not len(rows):
        return None
    true = [families.get(str(s), str(s) or "fake") for s in rows["source"]]
    guess = rows["generator"].astype(str).tolist()
    matrix = confusion(true, guess)
    return {"n_detected": len(rows), "top1_accuracy": float(np.mean([t == g for t, g in zip(true, guess)])),
            "confusion": {t: {g: int(n) for g, n in r.items()} for t, r in matrix.iterrows()}}


def threshold_advice_words(a: dict) -> str:
    """`metrics.threshold_advice`'s rates with their intervals, the data size and the caveat, in words
    (the same on the CLI and the dashboard; each front end says how to apply it)."""
    fpr_lo, fpr_hi = a["fpr_ci95"]
    fnr_lo, fnr_hi = a["fnr_ci95"]
    return (f"at it {a['fpr']:.1%} of real photos are flagged as fake (false alarms, 95% CI {fpr_lo:.1%}-{fpr_hi:.1%}) and "
            f"{a['fnr']:.1%} of fakes are missed (95% CI {fnr_lo:.1%}-{fnr_hi:.1%}). {a['caveat']}")


def format_summary(s: dict) -> str:
    def f(v, pct=False):
        if v is None:
            return "n/a"
        return f"{v:.1%}" if pct else f"{v:.4f}"

    ci = s.get("ci95") or {}
    c = s.get("confusion") or {}
    lines = [
        f"model: {s.get('model')}   data: {s.get('data')}",
        f"images scored: {s.get('n')} (real {s.get('n_real')}, fake {s.get('n_fake')}); failed: {s.get('n_failed', 0)}",
        f"threshold (p_fake >= t means fake): {s.get('threshold')}",
        f"accuracy {f(s.get('accuracy'), True)}"
        + (f" (95% CI {f(ci['accuracy'][0], True)}-{f(ci['accuracy'][1], True)})" if ci.get("accuracy") else ""),
        f"ROC-AUC {f(s.get('roc_auc'))}" + (f" (95% CI {f(ci['roc_auc'][0])}-{f(ci['roc_auc'][1])})" if ci.get("roc_auc") else ""),
        f"fake: precision {f(s.get('precision_fake'))} recall {f(s.get('recall_fake'))} F1 {f(s.get('f1_fake'))}",
        f"balanced accuracy {f(s.get('balanced_accuracy'))}  AP {f(s.get('average_precision'))}  EER {f(s.get('eer'))}",
        f"Brier {f(s.get('brier'))}  ECE {f(s.get('ece'))}  false alarms on real {f(s.get('fpr'), True)}",
        f"confusion (fake positive): tp={c.get('tp')} fp={c.get('fp')} tn={c.get('tn')} fn={c.get('fn')}",
    ]
    sep = s.get("separation") or {}
    if sep.get("kind") in ("chance", "reversed"):
        lines.append(f"WARNING: {sep['sentence']} No threshold is suggested.")
    advice = s.get("threshold_advice")
    if advice:
        lines.append(f"threshold maximising balanced accuracy: {advice['threshold']:g} (balanced accuracy "
                     f"{advice['balanced_accuracy']:.1%}): {threshold_advice_words(advice)} It applies only where "
                     "you set it (--threshold); the model's own threshold is unchanged.")
    if s.get("per_source"):
        lines.append("per source (threshold %s):" % s.get("threshold"))
        for r in s["per_source"]:
            unf = f"  unfamiliar {r['unfamiliar_rate']:.1%}" if r.get("unfamiliar_rate") is not None else ""
            lines.append(f"  {r['source']:<16} {r['label']:<4} n={r['n']:<5} {r['rate_name']} {r['rate']:.1%} "
                         f"(95% CI {r['ci95_low']:.1%}-{r['ci95_high']:.1%}){unf}")
    if s.get("attribution"):
        a = s["attribution"]
        cols = sorted({g for r in a["confusion"].values() for g in r})
        lines.append(f"generator named (top-1) on detected fakes: {a['top1_accuracy']:.1%} of {a['n_detected']}; "
                     "rows = true family, columns = guess:")
        lines.append("  " + " " * 22 + " ".join(f"{c[:14]:>14}" for c in cols))
        lines += ["  " + f"{t[:22]:<22}" + " ".join(f"{r.get(c, 0):>14}" for c in cols) for t, r in a["confusion"].items()]
    declared = s.get("provenance")
    if declared:
        per = ", ".join(f"{g}: {c['declared_ai']} of {c['files']}" for g, c in declared["by_group"].items())
        lines.append(f"provenance: {declared['declared_ai']} files declare AI ({per}); "
                     f"{declared['disagreements']} disagree with the verdict")
        lines += [f"  {d['path']}: declares {d['provenance']}, model says {d['predicted']}"
                  for d in declared["disagreement_files"][:10]]
    if s.get("failed"):
        lines.append("failed files:")
        reasons = s.get("failed_reasons") or {}
        # a reason often starts with the path already ("PATH: file is truncated"): name it once
        lines += [f"  {p}: {str(reasons.get(p, '')).removeprefix(f'{p}: ')}" for p in s["failed"]]
    return "\n".join(lines)
