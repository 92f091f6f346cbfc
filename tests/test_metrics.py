"""realitycheck.analysis.metrics: numbers agree with scikit-learn, edge cases do not raise, no model is run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from realitycheck.analysis import metrics as M


def _synthetic(n=400, seed=3, prevalence=0.4, shift=0.3):
    """Labels and overlapping scores: a plausible imperfect detector."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < prevalence, "fake", "real")
    p = np.clip(rng.normal(0.35 + shift * (y == "fake"), 0.2), 0, 1)
    return y, np.round(p, 4)


def _table(y, p, threshold=0.5):
    pred = np.where(p >= threshold, "fake", "real")
    return pd.DataFrame({
        "path": [f"img/{i:04d}.jpg" for i in range(len(y))],
        "true_label": y,
        "p_fake": p,
        "predicted": pred,
        "correct": pred == y,
        "faces": 1,
        "seconds": 0.01,
        "error": "",
    }).reindex(columns=M.TABLE_COLUMNS)


def test_table_columns_constant():
    assert M.TABLE_COLUMNS[:8] == ["path", "true_label", "p_fake", "predicted", "correct", "faces", "seconds", "error"]
    assert set(M.OPTIONAL_COLUMNS) == set(M.TABLE_COLUMNS[8:])  # later columns: old CSVs still read


@pytest.mark.parametrize("threshold", [0.5, 0.37])
def test_metrics_from_csv_match_sklearn(tmp_path, threshold):
    y, p = _synthetic()
    csv = tmp_path / "results.csv"
    _table(y, p).to_csv(csv, index=False)
    table = pd.read_csv(csv)  # the error column comes back as NaN: must count as "no error"

    m = M.metrics_from_table(table, threshold=threshold, n_bootstrap=200)

    # independent scikit-learn computation from the CSV as read back
    yt = table["true_label"].to_numpy()
    pt = table["p_fake"].to_numpy()
    yp = np.where(pt >= threshold, "fake", "real")
    assert m["n"] == len(table) and m["failed"] == []
    assert m["accuracy"] == pytest.approx(accuracy_score(yt, yp))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yt, yp))
    assert m["precision_fake"] == pytest.approx(precision_score(yt, yp, pos_label="fake"))
    assert m["recall_fake"] == pytest.approx(recall_score(yt, yp, pos_label="fake"))
    assert m["f1_fake"] == pytest.approx(f1_score(yt, yp, pos_label="fake"))
    assert m["precision_real"] == pytest.approx(precision_score(yt, yp, pos_label="real"))
    assert m["recall_real"] == pytest.approx(recall_score(yt, yp, pos_label="real"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(yt == "fake", pt))
    assert m["brier"] == pytest.approx(brier_score_loss(yt == "fake", pt))
    tn, fp, fn, tp = confusion_matrix(yt, yp, labels=["real", "fake"]).ravel()
    assert m["confusion"] == {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert m["fnr"] == pytest.approx(fn / (fn + tp))
    assert (m["n_real"], m["n_fake"]) == (int((yt == "real").sum()), int((yt == "fake").sum()))


def test_result_is_plain_json():
    y, p = _synthetic(n=120)
    m = M.compute_metrics(y, p, n_bootstrap=100)
    json.dumps(m, allow_nan=False)  # no numpy scalars, no NaN/inf
    assert isinstance(m["n"], int) and isinstance(m["accuracy"], float)
    assert all(isinstance(v, int) for v in m["confusion"].values())
    expected = {
        "n", "threshold", "accuracy", "balanced_accuracy", "precision_fake", "recall_fake", "f1_fake",
        "precision_real", "recall_real", "roc_auc", "average_precision", "eer", "eer_threshold", "brier",
        "ece", "confusion", "fpr", "fnr", "ci95", "n_real", "n_fake",
    }
    assert expected <= set(m)


def test_failed_and_unlabelled_rows_are_excluded_and_listed():
    t = _table(np.array(["real", "fake", "fake", "real", "real"]), np.array([0.1, 0.9, 0.8, 0.2, 0.7]))
    t.loc[2, "error"] = "cannot identify image file"
    t.loc[3, "p_fake"] = np.nan
    t.loc[4, "true_label"] = None
    m = M.metrics_from_table(t, n_bootstrap=0)
    assert m["n"] == 2 and m["accuracy"] == 1.0
    assert m["failed"] == ["img/0002.jpg", "img/0003.jpg"] and m["n_failed"] == 2
    assert m["unlabelled"] == ["img/0004.jpg"]


def test_rethreshold_consistent_and_model_free(monkeypatch):
    # any attempt to build or run a model during re-thresholding fails the test
    import torch

    def boom(*a, **k):
        raise AssertionError("re-thresholding must not run a model")

    monkeypatch.setattr(torch.nn.Module, "__call__", boom)

    y, p = _synthetic(n=200)
    t = _table(y, p, threshold=0.5)
    t.loc[5, "error"] = "boom"
    t.loc[5, "p_fake"] = np.nan
    for thr in (0.2, 0.5, 0.8):
        r = M.rethreshold(t, thr)
        ok = r.index != 5
        expected = np.where(t.loc[ok, "p_fake"] >= thr, "fake", "real")
        assert (r.loc[ok, "predicted"].to_numpy() == expected).all()
        assert (r.loc[ok, "correct"].to_numpy(dtype=bool) == (expected == t.loc[ok, "true_label"].to_numpy())).all()
        assert r.loc[5, "predicted"] is None and pd.isna(r.loc[5, "correct"])
        assert r.attrs["threshold"] == thr
        # metrics from the re-thresholded table agree with its predicted column
        assert M.metrics_from_table(r, n_bootstrap=0)["accuracy"] == pytest.approx(r.loc[ok, "correct"].mean())
    # a higher threshold never flags more photos
    n_flagged = [(M.rethreshold(t, thr)["predicted"] == "fake").sum() for thr in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(n_flagged, n_flagged[1:]))
    assert t["predicted"].tolist() == _table(y, p)["predicted"].tolist()  # input left untouched


def test_best_threshold_balanced_accuracy_known_answer():
    y = ["real"] * 4 + ["fake"] * 4
    p = [0.05, 0.10, 0.20, 0.65, 0.40, 0.70, 0.80, 0.90]
    # >= 0.70 passes every real and misses the 0.40 fake: (4/4 + 3/4) / 2 = 0.875;
    # >= 0.40 catches every fake and flags the 0.65 real: also 0.875; the higher one is returned
    thr, bal = M.best_threshold_balanced_accuracy(y, p)
    assert bal == pytest.approx(0.875)
    assert thr == 0.70
    assert balanced_accuracy_score(y, np.where(np.array(p) >= thr, "fake", "real")) == pytest.approx(bal)

    # perfectly separable: the threshold sits at the lowest fake score and is perfect
    thr, bal = M.best_threshold_balanced_accuracy(["real", "real", "fake", "fake"], [0.1, 0.3, 0.6, 0.9])
    assert (thr, bal) == (0.6, 1.0)


def test_threshold_for_fpr_known_answer():
    real = [i / 100 for i in range(1, 21)]  # 20 real photos at 0.01 .. 0.20
    fake = [0.15, 0.195, 0.5, 0.6, 0.7]
    y = ["real"] * 20 + ["fake"] * 5
    p = real + fake
    # 5% of 20 = 1 real photo may be flagged: >= 0.195 flags only the 0.20 real and catches 4 fakes
    thr, fpr, tpr = M.threshold_for_fpr(y, p, target_fpr=0.05)
    assert (thr, fpr, tpr) == (0.195, pytest.approx(0.05), pytest.approx(4 / 5))
    # no false alarm allowed: the threshold must stay above every real score
    thr, fpr, tpr = M.threshold_for_fpr(y, p, target_fpr=0.0)
    assert (thr, fpr, tpr) == (0.5, 0.0, pytest.approx(3 / 5))
    # 15% allows 0.18 too, but that catches no extra fake: the lower-FPR point is kept
    assert M.threshold_for_fpr(y, p, target_fpr=0.15)[0] == 0.195
    # 30% reaches the 0.15 fake (0.15 .. 0.20 real flagged = 6/20)
    thr, fpr, tpr = M.threshold_for_fpr(y, p, target_fpr=0.30)
    assert (thr, fpr, tpr) == (0.15, pytest.approx(0.30), 1.0)
    # the achieved rates are those you get by applying the threshold
    pred = np.array(p) >= thr
    assert pred[:20].mean() == pytest.approx(fpr) and pred[20:].mean() == pytest.approx(tpr)


def test_ece_zero_when_calibrated_and_large_when_confidently_wrong():
    # bin [0.2, 0.3): 5 photos at 0.2, 1 fake; bin [0.8, 0.9): 5 photos at 0.8, 4 fake
    y = ["fake"] + ["real"] * 4 + ["fake"] * 4 + ["real"]
    p = [0.2] * 5 + [0.8] * 5
    assert M.compute_metrics(y, p, n_bootstrap=0)["ece"] == pytest.approx(0.0, abs=1e-12)

    y = ["real"] * 5 + ["fake"] * 5
    p = [0.99] * 5 + [0.01] * 5
    m = M.compute_metrics(y, p, n_bootstrap=0)
    assert m["ece"] == pytest.approx(0.99)
    assert m["accuracy"] == 0.0 and m["brier"] == pytest.approx(0.99**2)


def test_eer_on_constructed_examples():
    m = M.compute_metrics(["real", "real", "fake", "fake"], [0.1, 0.3, 0.6, 0.9], n_bootstrap=0)
    assert m["eer"] == 0.0
    assert 0.3 < m["eer_threshold"] <= 0.6
    # symmetric overlap: one real above one fake out of 4 each -> FPR = FNR = 1/4 at 0.5
    y = ["real"] * 4 + ["fake"] * 4
    p = [0.1, 0.2, 0.3, 0.55, 0.45, 0.7, 0.8, 0.9]
    m = M.compute_metrics(y, p, n_bootstrap=0)
    assert m["eer"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "y,p",
    [
        ([], []),
        (["real"] * 5, [0.1, 0.2, 0.3, 0.9, 0.5]),
        (["fake"] * 3, [0.9, 0.8, 0.2]),
        (["real", "fake", "real", "fake"], [0.5, 0.5, 0.5, 0.5]),
        (["fake"], [1.0]),
    ],
)
def test_edge_cases_do_not_raise(y, p):
    m = M.compute_metrics(y, p, n_bootstrap=50)
    json.dumps(m, allow_nan=False)
    assert m["n"] == len(y)
    c = M.curves(y, p)
    json.dumps(c, allow_nan=False)
    M.best_threshold_balanced_accuracy(y, p)
    M.threshold_for_fpr(y, p)
    if not y:
        assert m["accuracy"] is None and m["roc_auc"] is None and m["ci95"]["accuracy"] is None
    if len(set(y)) == 1:
        assert m["roc_auc"] is None and m["average_precision"] is None and m["eer"] is None
        assert m["ci95"]["roc_auc"] is None
        assert M.best_threshold_balanced_accuracy(y, p) == (None, None)
        assert c["roc"]["fpr"] == []
    if len(set(p)) == 1 and len(set(y)) == 2:
        assert m["roc_auc"] == 0.5 and m["eer"] == pytest.approx(0.5)


def test_empty_table_does_not_raise():
    m = M.metrics_from_table(pd.DataFrame(columns=M.TABLE_COLUMNS))
    assert m["n"] == 0 and m["accuracy"] is None and m["failed"] == []
    r = M.rethreshold(pd.DataFrame(columns=M.TABLE_COLUMNS), 0.3)
    assert len(r) == 0 and list(r.columns) == M.TABLE_COLUMNS


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="real"):
        M.compute_metrics([0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        M.compute_metrics(["real", "fake"], [0.2, float("nan")])
    with pytest.raises(ValueError, match="items"):
        M.compute_metrics(["real"], [0.2, 0.3])
    assert M.compute_metrics([" Fake", "REAL"], [0.9, 0.1], n_bootstrap=0)["accuracy"] == 1.0


def test_bootstrap_ci_contains_point_estimate_and_is_reproducible():
    y, p = _synthetic(n=300)
    m = M.compute_metrics(y, p, n_bootstrap=500, seed=7)
    for key in ("accuracy", "roc_auc"):
        lo, hi = m["ci95"][key]
        assert lo <= m[key] <= hi and hi - lo < 0.2
    assert M.compute_metrics(y, p, n_bootstrap=500, seed=7)["ci95"] == m["ci95"]
    assert M.compute_metrics(y, p, n_bootstrap=500, seed=8)["ci95"] != m["ci95"]


def test_vectorised_bootstrap_auc_matches_sklearn_per_resample():
    y, p = _synthetic(n=80)
    p = np.round(p, 1)  # plenty of ties
    yi = (y == "fake").astype(np.int64)
    idx = np.random.default_rng(0).integers(0, len(y), size=(20, len(y)))
    got = M._AucKernel(yi, p)(M._draw_counts(idx, len(y)))
    want = [roc_auc_score(yi[i], p[i]) if 0 < yi[i].sum() < len(i) else np.nan for i in idx]
    np.testing.assert_allclose(got, want)


def test_curves_shapes():
    y, p = _synthetic(n=150)
    c = M.curves(y, p)
    roc, pr, cal = c["roc"], c["pr"], c["calibration"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) and roc["fpr"][0] == 0.0
    assert all(math.isfinite(t) for t in roc["thresholds"])
    assert roc["auc"] == pytest.approx(roc_auc_score(y == "fake", p))
    assert len(pr["precision"]) == len(pr["recall"])
    assert sum(cal["count"]) == 150 and len(cal["bin_edges"]) == 11
    assert c["prevalence"] == pytest.approx((y == "fake").mean())
