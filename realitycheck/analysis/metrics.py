"""Scores for a real-vs-fake detector, computed from per-image results and nothing else.

Everything here works over arrays or the per-image results table (`TABLE_COLUMNS`), never over
a model: evaluating once and re-scoring many times (another threshold, a subset, a report) must
not cost a second pass over the images.

Conventions, used by every function:

* labels are the strings ``"real"`` / ``"fake"`` (case and surrounding spaces ignored);
* the positive class is ``"fake"`` (a "positive" is a photo flagged as AI-generated);
* ``p_fake`` is the model's probability of ``"fake"``;
* the prediction is ``"fake"`` iff ``p_fake >= threshold`` (`realitycheck.model.decision.is_fake`).

Metrics come from scikit-learn where it has them; what it lacks (EER, ECE, a vectorised
bootstrap) is written here. Every returned number is a plain Python ``int``/``float`` or
``None`` (undefined, e.g. ROC AUC with one class), so results go straight into JSON.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from realitycheck.model.decision import by_group, is_fake, threshold_for_every_group

__all__ = [
    "TABLE_COLUMNS",
    "LABELS",
    "POSITIVE",
    "DEFAULT_THRESHOLD",
    "compute_metrics",
    "rethreshold",
    "best_threshold_balanced_accuracy",
    "threshold_for_fpr",
    "curves",
    "metrics_from_table",
    "valid_rows",
    "separation",
]

#: Columns of the per-image results table every evaluator writes and every reader expects.
TABLE_COLUMNS = ["path", "true_label", "p_fake", "predicted", "correct", "faces", "seconds", "error", "source",
                 "unfamiliar", "ood_score", "generator"]
#: Columns added after the first release: a results CSV without them still reads (and resumes).
OPTIONAL_COLUMNS = {"source": "", "unfamiliar": None, "ood_score": None, "generator": None}
LABELS = ("real", "fake")
POSITIVE = "fake"
#: The neutral cut (the likelier class) where scores are read without a model's card: `compute_metrics`
#: on bare arrays, a table read back with no threshold of its own. A model's callers pass its card's.
DEFAULT_THRESHOLD = 0.5
N_CALIBRATION_BINS = 10

# Bootstrap resamples are drawn in chunks of at most this many (resample x image) cells, so a
# 1000-resample CI over a large test set does not allocate gigabytes at once.
_BOOTSTRAP_CELLS_PER_CHUNK = 4_000_000


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

def _num(x: Any) -> float | None:
    """A JSON-safe float: numpy scalars become floats, NaN/inf become None (undefined)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _finite_threshold(t: float, scores: np.ndarray) -> float:
    """sklearn's first ROC threshold is +inf ("flag nothing"); JSON cannot hold inf.

    The smallest float above the top score flags nothing just the same and stays finite.
    """
    t = float(t)
    if math.isfinite(t):
        return t
    top = float(np.max(scores)) if scores.size else 1.0
    return float(np.nextafter(max(top, 1.0), np.inf))


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def _norm_label(v: Any) -> str | None:
    """'Fake ' -> 'fake'; missing -> None. Anything else is returned normalised for the caller to judge."""
    if _is_missing(v):
        return None
    return str(v).strip().lower()


def _prepare(y_true: Iterable[Any], p_fake: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert inputs to (is_fake 0/1 int array, float p array).

    Labels must be the strings real/fake: integer labels are refused because the checkpoint's
    class order (index 0 = fake) makes 0/1 ambiguous.
    """
    labels = [_norm_label(v) for v in y_true]
    p = np.asarray(list(p_fake) if not isinstance(p_fake, np.ndarray) else p_fake, dtype=float).ravel()
    if len(labels) != p.size:
        raise ValueError(f"y_true has {len(labels)} items but p_fake has {p.size}")
    bad = sorted({str(v) for v in labels if v not in LABELS})
    if bad:
        raise ValueError(f"labels must be 'real' or 'fake', got {bad[:5]}")
    if p.size and not np.all(np.isfinite(p)):
        raise ValueError("p_fake contains NaN/inf; drop failed images first (metrics_from_table does)")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"p_fake must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    y = np.fromiter((lab == POSITIVE for lab in labels), dtype=np.int64, count=len(labels))
    return y, p


def _to_labels(is_fake: np.ndarray) -> np.ndarray:
    return np.where(is_fake.astype(bool), "fake", "real")


def _calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = N_CALIBRATION_BINS):
    """Equal-width bins over [0, 1], binned as sklearn's ``calibration_curve`` does.

    Returns per-bin (count, sum of p, sum of y) for all bins, empty ones included.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    return edges, count, sum_p, sum_y


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int = N_CALIBRATION_BINS) -> float | None:
    """Expected calibration error: sum over bins of (bin share) * |mean p - fraction fake|."""
    if p.size == 0:
        return None
    _, _, sum_p, sum_y = _calibration_bins(y, p, n_bins)
    return float(np.abs(sum_p - sum_y).sum() / p.size)


def _eer(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """Equal error rate: where the false-alarm rate on real photos equals the miss rate on fakes.

    The rate is interpolated linearly between the two ROC points that straddle the crossing
    (the usual definition); the threshold is that of the nearer ROC point, so it is one a
    deployment can actually use.
    """
    if p.size == 0 or y.min() == y.max():
        return None, None
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # starts at +1 (flag nothing), ends at -1 (flag everything), non-increasing
    i = int(np.argmax(diff <= 0))
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1)
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    j = i if abs(d1) <= abs(d0) else i - 1
    return float(eer), _finite_threshold(thr[j], p)


class _AucKernel:
    """Mann-Whitney AUC for many resamples at once, each given as per-image draw counts.

    Scores are sorted and grouped by tie once; a resample's AUC is then
    sum over score groups of (positives in group) * (negatives below + half the tied negatives),
    over (positives * negatives), which is exactly sklearn's ROC AUC with ties counted as half.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray):
        self.order = np.argsort(p, kind="mergesort")
        p_sorted = p[self.order]
        self.pos_sorted = y[self.order].astype(float)
        self.starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        c_sorted = counts[:, self.order]
        n_pos = np.add.reduceat(c_sorted * self.pos_sorted, self.starts, axis=1)
        n_neg = np.add.reduceat(c_sorted * (1.0 - self.pos_sorted), self.starts, axis=1)
        neg_below = np.cumsum(n_neg, axis=1) - n_neg
        u = (n_pos * (neg_below + 0.5 * n_neg)).sum(axis=1)
        pairs = n_pos.sum(axis=1) * n_neg.sum(axis=1)
        auc = np.full(counts.shape[0], np.nan)
        ok = pairs > 0
        auc[ok] = u[ok] / pairs[ok]
        return auc  # NaN where the resample holds one class only


def _draw_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Resample indices (b, n) -> how often each image was drawn in each resample (b, n)."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def _bootstrap_ci(
    y: np.ndarray, p: np.ndarray, correct: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, list[float] | None]:
    """Percentile bootstrap 95% intervals for accuracy and ROC AUC, vectorised.

    A resample is represented by how many times each image was drawn (a row of counts), so
    accuracy is one matrix product and AUC one pass of `_AucKernel`, for a whole chunk of
    resamples at once. Resamples that contain only one class have no AUC and are skipped for
    that interval.
    """
    n = p.size
    out: dict[str, list[float] | None] = {"accuracy": None, "roc_auc": None}
    if n == 0 or n_bootstrap <= 0:
        return out
    rng = np.random.default_rng(seed)
    kernel = _AucKernel(y, p) if 0 < y.sum() < n else None

    accs: list[np.ndarray] = []
    aucs: list[np.ndarray] = []
    chunk = max(1, _BOOTSTRAP_CELLS_PER_CHUNK // n)
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        done += b
        counts = _draw_counts(rng.integers(0, n, size=(b, n)), n)
        accs.append(counts @ correct.astype(float) / n)
        if kernel is not None:
            auc = kernel(counts)
            aucs.append(auc[np.isfinite(auc)])

    out["accuracy"] = [float(v) for v in np.percentile(np.concatenate(accs), [2.5, 97.5])]
    if aucs and sum(a.size for a in aucs):
        out["roc_auc"] = [float(v) for v in np.percentile(np.concatenate(aucs), [2.5, 97.5])]
    return out


def _empty_metrics(threshold: float) -> dict[str, Any]:
    return {
        "n": 0,
        "n_real": 0,
        "n_fake": 0,
        "threshold": float(threshold),
        "accuracy": None,
        "balanced_accuracy": None,
        "precision_fake": None,
        "recall_fake": None,
        "f1_fake": None,
        "precision_real": None,
        "recall_real": None,
        "roc_auc": None,
        "average_precision": None,
        "eer": None,
        "eer_threshold": None,
        "brier": None,
        "ece": None,
        "confusion": {"tp": 0, "fp": 0, "tn": 0, "fn": 0},
        "fpr": None,
        "fnr": None,
        "ci95": {"accuracy": None, "roc_auc": None},
    }


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def compute_metrics(
    y_true: Sequence[str],
    p_fake: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every headline number for one model on one labelled set, as a JSON-ready dict.

    Threshold-dependent scores (accuracy, precision, recall, F1, confusion, FPR/FNR) use
    ``p_fake >= threshold``; ranking scores (ROC AUC, AP, EER) and calibration scores (Brier,
    ECE) use ``p_fake`` directly. Undefined values are ``None`` instead of an exception or a
    silent 0: an empty set, a set with one class (no AUC), no predicted fakes (no precision).
    ``ci95`` holds percentile-bootstrap intervals (``n_bootstrap`` resamples, reproducible
    via ``seed``; ``n_bootstrap=0`` skips them).
    """
    threshold = float(threshold)
    y, p = _prepare(y_true, p_fake)
    n = int(p.size)
    if n == 0:
        return _empty_metrics(threshold)

    pred = is_fake(p, threshold).astype(np.int64)
    true_lab, pred_lab = _to_labels(y), _to_labels(pred)
    n_fake = int(y.sum())
    n_real = n - n_fake
    two_classes = n_fake > 0 and n_real > 0

    with warnings.catch_warnings():
        # one-class inputs make sklearn warn about ill-defined scores; we report None instead
        warnings.simplefilter("ignore")
        prec, rec, f1, _ = precision_recall_fscore_support(
            true_lab, pred_lab, labels=["fake", "real"], zero_division=np.nan
        )
        acc = accuracy_score(true_lab, pred_lab)
        bal = balanced_accuracy_score(true_lab, pred_lab) if two_classes else None
        auc = roc_auc_score(y, p) if two_classes else None
        ap = average_precision_score(y, p) if two_classes else None
        brier = brier_score_loss(y, p, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(true_lab, pred_lab, labels=["real", "fake"]).ravel())
    eer, eer_thr = _eer(y, p)

    return {
        "n": n,
        "n_real": n_real,
        "n_fake": n_fake,
        "threshold": threshold,
        "accuracy": _num(acc),
        "balanced_accuracy": _num(bal),
        "precision_fake": _num(prec[0]),
        "recall_fake": _num(rec[0]),
        "f1_fake": _num(f1[0]),
        "precision_real": _num(prec[1]),
        "recall_real": _num(rec[1]),
        "roc_auc": _num(auc),
        "average_precision": _num(ap),
        "eer": _num(eer),
        "eer_threshold": _num(eer_thr),
        "brier": _num(brier),
        "ece": _num(_ece(y, p)),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "fpr": _num(fp / (fp + tn)) if (fp + tn) else None,
        "fnr": _num(fn / (fn + tp)) if (fn + tp) else None,
        "ci95": _bootstrap_ci(y, p, pred == y, int(n_bootstrap), int(seed)),
    }


def as_text(column: pd.Series) -> pd.Series:
    """A column of strings with "" for missing values, whatever dtype pandas read it as (an all-empty
    column of a CSV is float64, where `fillna("")` is deprecated)."""
    return column.astype(object).where(column.notna(), "").astype(str)


def valid_rows(table: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows that produced a score: empty ``error`` and a finite ``p_fake``.

    An image that failed (unreadable file, no face where one is required) must not be counted
    as a real or fake verdict, so every table reader uses this one rule.
    """
    if len(table) == 0:
        return pd.Series([], dtype=bool, index=table.index)
    p = pd.to_numeric(table["p_fake"], errors="coerce") if "p_fake" in table else pd.Series(np.nan, index=table.index)
    ok = np.isfinite(p.to_numpy(dtype=float, na_value=np.nan))
    if "error" in table:
        has_error = table["error"].map(lambda v: not _is_missing(v) and str(v).strip() != "")
        ok &= ~has_error.to_numpy(dtype=bool)
    return pd.Series(ok, index=table.index)


def scored_pairs(table: pd.DataFrame) -> tuple[list[str], list[float]]:
    """(true_label, p_fake) of the rows that produced a score (`valid_rows`), for curves and thresholds."""
    if len(table) == 0:
        return [], []
    ok = valid_rows(table)
    return table.loc[ok, "true_label"].tolist(), table.loc[ok, "p_fake"].astype(float).tolist()


def curves_from_table(table: pd.DataFrame, n_bins: int = N_CALIBRATION_BINS) -> dict[str, Any]:
    """`curves` over a per-image results table (failed rows left out)."""
    return curves(*scored_pairs(table), n_bins=n_bins)


def rethreshold(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A copy of the per-image table with ``predicted``/``correct`` redone for a new threshold.

    Only ``p_fake`` is read, so moving the operating point costs no model run. Failed rows keep
    a missing prediction; rows without a usable true label get a missing ``correct``.
    """
    threshold = float(threshold)
    if "p_fake" not in table.columns:
        raise ValueError(f"results table lacks a p_fake column; expected {TABLE_COLUMNS}")
    out = table.copy()
    ok = valid_rows(out).to_numpy()
    p = pd.to_numeric(out["p_fake"], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if len(out) else np.array([])
    pred = np.where(is_fake(p, threshold), "fake", "real").astype(object)
    pred[~ok] = None
    out["predicted"] = pd.Series(pred, index=out.index, dtype=object)
    if "true_label" in out:
        truth = out["true_label"].map(_norm_label).to_numpy(dtype=object)
    else:
        truth = np.full(len(out), None, dtype=object)
    labelled = np.array([t in LABELS for t in truth], dtype=bool)
    correct = pd.array(np.zeros(len(out), dtype=bool), dtype="boolean")
    if len(out):
        correct = pd.array(pred == truth, dtype="boolean")
        correct[~(ok & labelled)] = pd.NA
    out["correct"] = pd.Series(correct, index=out.index)
    out.attrs["threshold"] = threshold
    return out


def best_threshold_balanced_accuracy(
    y_true: Sequence[str], p_fake: Sequence[float]
) -> tuple[float | None, float | None]:
    """The threshold that maximises balanced accuracy, and that balanced accuracy.

    Balanced accuracy weighs both classes equally, so the choice is not driven by whichever
    class the validation set happens to hold more of. The threshold is one of the observed
    scores (the highest among ties), so applying it reproduces the returned value exactly.
    ``(None, None)`` when the set lacks a class.
    """
    y, p = _prepare(y_true, p_fake)
    if p.size == 0 or y.min() == y.max():
        return None, None
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    bal = (tpr + 1.0 - fpr) / 2.0
    i = int(np.argmax(bal))
    return _finite_threshold(thr[i], p), float(bal[i])


def threshold_for_fpr(
    y_true: Sequence[str], p_fake: Sequence[float], target_fpr: float = 0.05
) -> tuple[float | None, float | None, float | None]:
    """Operating point that catches the most fakes while flagging at most ``target_fpr`` of real photos.

    Returns ``(threshold, achieved_fpr, tpr)``. Among thresholds with FPR <= target the one with
    the highest recall on fakes wins, and among equal recalls the lowest FPR. Flagging nothing
    always qualifies, so a threshold is always found when both classes are present;
    ``(None, None, None)`` otherwise.
    """
    y, p = _prepare(y_true, p_fake)
    if p.size == 0 or y.min() == y.max():
        return None, None, None
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    ok = fpr <= float(target_fpr) + 1e-12
    best = tpr[ok].max()
    i = int(np.flatnonzero(ok & (tpr == best))[0])
    return _finite_threshold(thr[i], p), float(fpr[i]), float(tpr[i])


def curves(y_true: Sequence[str], p_fake: Sequence[float], n_bins: int = N_CALIBRATION_BINS) -> dict[str, Any]:
    """ROC, precision-recall and calibration data as plain lists, ready for plotting or JSON.

    ROC and PR need both classes and are empty lists otherwise; calibration bins (equal width,
    empty bins left out) only need scores. ``prevalence`` (share of fakes) is the PR baseline.
    """
    y, p = _prepare(y_true, p_fake)
    n = int(p.size)
    two_classes = n > 0 and 0 < y.sum() < n
    out: dict[str, Any] = {
        "n": n,
        "prevalence": float(y.mean()) if n else None,
        "roc": {"fpr": [], "tpr": [], "thresholds": [], "auc": None},
        "pr": {"precision": [], "recall": [], "thresholds": [], "average_precision": None},
        "calibration": {"mean_predicted": [], "fraction_positive": [], "count": [], "bin_edges": []},
    }
    if two_classes:
        fpr, tpr, thr = roc_curve(y, p)
        out["roc"] = {
            "fpr": [float(v) for v in fpr],
            "tpr": [float(v) for v in tpr],
            "thresholds": [_finite_threshold(t, p) for t in thr],
            "auc": float(roc_auc_score(y, p)),
        }
        prec, rec, pthr = precision_recall_curve(y, p)
        out["pr"] = {
            "precision": [float(v) for v in prec],
            "recall": [float(v) for v in rec],
            "thresholds": [float(v) for v in pthr],
            "average_precision": float(average_precision_score(y, p)),
        }
    if n:
        edges, count, sum_p, sum_y = _calibration_bins(y, p, n_bins)
        nz = count > 0
        out["calibration"] = {
            "mean_predicted": [float(v) for v in sum_p[nz] / count[nz]],
            "fraction_positive": [float(v) for v in sum_y[nz] / count[nz]],
            "count": [int(v) for v in count[nz]],
            "bin_edges": [float(v) for v in edges],
        }
    return out


def metrics_from_table(
    table: pd.DataFrame,
    threshold: float | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`compute_metrics` over a per-image results table (e.g. a results CSV read back).

    Failed rows (non-empty ``error`` or missing ``p_fake``) are left out and their paths listed
    under ``failed``; rows whose ``true_label`` is not real/fake are left out and listed under
    ``unlabelled``, so nothing is silently scored as a verdict. The stored ``predicted`` column
    is ignored: predictions are redone from ``p_fake`` at ``threshold`` (default: the table's
    ``attrs["threshold"]`` if set by `rethreshold`, else 0.5).
    """
    if threshold is None:
        threshold = float(getattr(table, "attrs", {}).get("threshold", DEFAULT_THRESHOLD))
    missing = [c for c in ("true_label", "p_fake") if c not in table.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; expected {TABLE_COLUMNS}")
    paths = table["path"] if "path" in table else pd.Series(table.index.astype(str), index=table.index)
    ok = valid_rows(table).to_numpy()
    labels = table["true_label"].map(_norm_label)
    labelled = labels.isin(LABELS).to_numpy()
    use = ok & labelled
    result = compute_metrics(
        labels[use].tolist(),
        pd.to_numeric(table["p_fake"][use], errors="coerce").to_numpy(dtype=float),
        threshold,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    result["failed"] = [str(v) for v in paths[~ok]]
    result["n_failed"] = int((~ok).sum())
    result["unlabelled"] = [str(v) for v in paths[ok & ~labelled]]
    return result


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a rate k/n (sound for rates near 0 or 1 and small n)."""
    if n <= 0:
        return (None, None)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def per_source(sources: Sequence[str], y_true: Sequence[str], p_fake: Sequence[float], threshold: float,
               unfamiliar: Sequence[bool] | None = None) -> pd.DataFrame:
    """One row per source: its images' class, count, and the rate that matters for that class.

    For fakes the detection rate (share called fake), for reals the false-alarm rate (share
    called fake), each with a 95% Wilson interval; mean p_fake; and, when given, the share flagged
    unfamiliar. A source holding both classes gets one row per class.
    """
    df = pd.DataFrame({"source": list(sources), "label": [_norm_label(v) for v in y_true],
                       "p_fake": pd.to_numeric(pd.Series(list(p_fake)), errors="coerce")})
    if unfamiliar is not None:
        df["unfamiliar"] = list(unfamiliar)
    df = df[df["label"].notna() & df["p_fake"].notna()]
    rows = []
    for (src, label), g in df.groupby(["source", "label"], sort=True):
        n = len(g)
        k = int(is_fake(g["p_fake"], threshold).sum())
        lo, hi = wilson_interval(k, n)
        row = {"source": src, "label": label, "n": n,
               "rate_name": "detection rate" if label == "fake" else "false-alarm rate",
               "rate": k / n, "ci95_low": lo, "ci95_high": hi, "called_fake": k,
               "mean_p_fake": float(g["p_fake"].mean())}
        if unfamiliar is not None:
            row["unfamiliar_rate"] = float(pd.Series(g["unfamiliar"]).astype(bool).mean())
        rows.append(row)
    cols = ["source", "label", "n", "rate_name", "rate", "ci95_low", "ci95_high", "called_fake", "mean_p_fake"]
    return pd.DataFrame(rows, columns=cols + (["unfamiliar_rate"] if unfamiliar is not None else []))


def per_source_from_table(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """`per_source` over a per-image results table (failed rows left out)."""
    ok = valid_rows(table) if len(table) else pd.Series([], dtype=bool)
    t = table.loc[ok]
    src = as_text(t["source"]) if "source" in t else pd.Series([""] * len(t), index=t.index)
    src = src.where(src != "", "(unnamed)")
    unf = None
    if "unfamiliar" in t and t["unfamiliar"].notna().any():
        unf = t["unfamiliar"].map(lambda v: str(v).lower() in ("true", "1", "1.0")).tolist()
    return per_source(src.tolist(), t["true_label"].tolist(), t["p_fake"].tolist(), threshold, unf)


def threshold_for_every_source(table: pd.DataFrame, max_false_alarm: float = 0.05) -> float | None:
    """The lowest threshold at which every real source's false-alarm rate is at most `max_false_alarm`.

    Lowest, so that as many fakes as possible are still caught; every source, so that no kind of
    real photo pays for the others (`decision.threshold_for_every_group`, the unfamiliar check's rule too).
    None when the table has no real images; 0.5, the neutral cut, when no source holds the rate back.
    """
    ok = valid_rows(table)
    t = table.loc[ok]
    reals = t[t["true_label"].map(_norm_label) == "real"]
    if reals.empty:
        return None
    src = as_text(reals["source"]) if "source" in reals else pd.Series([""] * len(reals), index=reals.index)
    need = threshold_for_every_group(by_group(pd.to_numeric(reals["p_fake"]), src), max_false_alarm)
    return DEFAULT_THRESHOLD if need is None else min(need, 1.0 - 1e-9)


def separation(m: dict[str, Any]) -> tuple[str, str]:
    """Can the model tell the classes apart on this data? (`kind`, one plain sentence) from metrics.

    kinds: "unknown" (one class or no AUC), "chance" (the ROC-AUC's 95% CI includes 0.5: no better
    than guessing here, and no threshold can fix that), "reversed" (the whole CI below 0.5: it
    scores these classes the wrong way round), "separates" (the whole CI above 0.5).
    Without a CI (n_bootstrap=0) the point estimate is judged alone.
    """
    auc = m.get("roc_auc")
    if auc is None:
        return "unknown", "Needs both real and fake images to say whether the model can tell them apart."
    ci = (m.get("ci95") or {}).get("roc_auc")
    lo, hi = (float(ci[0]), float(ci[1])) if ci and None not in ci else (float(auc), float(auc))
    span = f"ROC-AUC {auc:.3f}" + (f", 95% interval {lo:.2f} to {hi:.2f}" if ci and None not in ci else "")
    if lo <= 0.5 <= hi:
        return "chance", (f"The model cannot tell real from AI-generated photos on this data ({span}; 0.5 is "
                          "guessing). No threshold fixes that: the verdicts here are no better than a coin toss.")
    if hi < 0.5:
        return "reversed", (f"The model scores these photos the wrong way round ({span}): on this data it "
                            "rates real photos as more likely fake than the AI-generated ones.")
    return "separates", f"The model separates the two classes on this data ({span})."


#: Below this many images of either class, a threshold chosen on the data is said to be a rough guide.
ADVICE_MIN_PER_CLASS = 100


def threshold_advice(y_true: Sequence[str], p_fake: Sequence[float], kind: str,
                     decimals: int = 4) -> dict[str, Any] | None:
    """The threshold to suggest for these results, or None where none should be (the one rule for the
    CLI, JSON, report and dashboard).

    None unless the model separates the classes here (`separation` kind "separates"): at chance or
    reversed, no threshold makes the verdicts reliable. The suggestion maximises balanced accuracy and
    is rounded to `decimals` places, and every number given with it is measured *at that rounded value*,
    so "use it" sets exactly what was shown. Its false-alarm and miss rates come with 95% Wilson
    intervals and the class counts, and `caveat` says that it was chosen on these same images (so it
    flatters them), louder when either class has fewer than ADVICE_MIN_PER_CLASS images.
    """
    if kind != "separates":
        return None
    t_best, _ = best_threshold_balanced_accuracy(y_true, p_fake)
    if t_best is None:
        return None
    y, p = _prepare(y_true, p_fake)
    t = round(float(t_best), decimals)
    if t > t_best:  # rounding up would pass the very score the best threshold was set at
        t = math.floor(float(t_best) * 10 ** decimals) / 10 ** decimals
    t = min(1.0, max(0.0, t))
    pred = is_fake(p, t)
    n_fake, n_real = int(y.sum()), int((1 - y).sum())
    fp, fn = int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    fpr, fnr = fp / n_real, fn / n_fake
    small = min(n_real, n_fake) < ADVICE_MIN_PER_CLASS
    caveat = (f"Chosen on these {n_real + n_fake} images ({n_real} real, {n_fake} fake), so it flatters them"
              + (f"; with under {ADVICE_MIN_PER_CLASS} of a class it is a rough guide only" if small else "")
              + ": confirm it on other labelled photos before relying on it.")
    return {"threshold": t, "balanced_accuracy": float(1 - (fpr + fnr) / 2),
            "fpr": fpr, "fpr_ci95": list(wilson_interval(fp, n_real)),
            "fnr": fnr, "fnr_ci95": list(wilson_interval(fn, n_fake)),
            "n_real": n_real, "n_fake": n_fake, "small_sample": small, "caveat": caveat}
