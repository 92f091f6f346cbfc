"""realitycheck.analysis.plots and realitycheck.analysis.report: figures never raise, the report is offline and escaped."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from realitycheck.analysis import metrics as M
from realitycheck.analysis import plots as P
from realitycheck.analysis.report import render_html_report, write_html_report


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(5)
    n = 60
    y = np.where(rng.random(n) < 0.5, "fake", "real")
    p = np.round(np.clip(rng.normal(0.3 + 0.4 * (y == "fake"), 0.2), 0, 1), 3)
    table = pd.DataFrame({
        "path": [f"faces/{i:03d}.jpg" for i in range(n)],
        "true_label": y,
        "p_fake": p,
        "faces": 1,
        "seconds": 0.02,
        "error": "",
    })
    table = M.rethreshold(table, 0.5).reindex(columns=M.TABLE_COLUMNS)
    return table, M.metrics_from_table(table, 0.5, n_bootstrap=200), M.curves(y, p)


def _history(n):
    return pd.DataFrame({
        "time": pd.date_range("2025-01-01", periods=n, freq="min"),
        "name": [f"upload_{i}.png" for i in range(n)],
        "label": ["fake" if i % 3 else "real" for i in range(n)],
        "p_fake": np.linspace(0.05, 0.95, n),
    })


def _has_no_data_note(fig):
    return any("no data" in (a.text or "") for a in fig.layout.annotations)


def _figures(results, empty):
    table, metrics, curves = results
    empty_table = pd.DataFrame(columns=M.TABLE_COLUMNS)
    if empty:
        return [
            P.confusion_matrix_fig(M.compute_metrics([], [])),
            P.confusion_matrix_fig(None),
            P.roc_fig({}),
            P.roc_fig({"m": M.curves([], [])}),
            P.pr_fig({}),
            P.pr_fig({"m": M.curves(["real"], [0.3])}),
            P.calibration_fig(M.curves([], [])),
            P.calibration_fig(None),
            P.p_fake_histogram(empty_table, 0.5),
            P.p_fake_histogram(None, 0.5),
            P.confidence_timeline(_history(0)),
            P.confidence_timeline(None),
            P.verdict_counts_fig(_history(0)),
            P.robustness_fig(pd.DataFrame(columns=["perturbation", "metric", "value"])),
            P.robustness_fig(None),
            P.training_curves_fig(pd.DataFrame(columns=["epoch", "train_loss", "val_loss", "val_accuracy", "val_auc"])),
            P.training_curves_fig(None),
        ]
    robust = pd.DataFrame({
        "perturbation": ["clean", "clean", "jpeg q50", "jpeg q50", "blur 2px", "blur 2px"],
        "metric": ["accuracy", "roc_auc"] * 3,
        "value": [0.9, 0.95, 0.8, 0.88, 0.7, 0.8],
    })
    log = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.6, 0.55, 0.56],
                        "val_accuracy": [0.6, 0.7, 0.72], "val_auc": [0.65, 0.78, 0.8]})
    return [
        P.confusion_matrix_fig(metrics),
        P.roc_fig({"resnet50": curves, "efficientnet": curves}),
        P.roc_fig(curves),  # a single curves dict is accepted too
        P.pr_fig({"resnet50": curves}),
        P.calibration_fig(curves),
        P.p_fake_histogram(table, 0.5),
        P.confidence_timeline(_history(10), threshold=0.5),
        P.verdict_counts_fig(_history(10)),
        P.robustness_fig(robust),
        P.training_curves_fig(log),
    ]


@pytest.mark.parametrize("empty", [True, False], ids=["empty", "data"])
def test_every_plot_returns_a_figure(results, empty):
    figs = _figures(results, empty)
    for fig in figs:
        assert isinstance(fig, go.Figure)
        fig.to_json()  # serialisable, i.e. renderable
        assert _has_no_data_note(fig) == empty, fig.layout.title.text


def test_plots_use_the_class_colours(results):
    table, _, _ = results
    hist = P.p_fake_histogram(table, 0.5)
    colours = {tr.name.split()[1]: tr.marker.color for tr in hist.data}
    assert colours == {"real": P.COLORS["real"], "fake": P.COLORS["fake"]}
    bars = P.verdict_counts_fig(_history(6)).data[0]
    assert list(bars.marker.color) == [P.COLORS["real"], P.COLORS["fake"]]
    assert P.roc_fig({}).layout.xaxis.title.text.startswith("false-positive rate")
    assert hist.layout.xaxis.title.text == "p(fake)"


def test_confusion_matrix_counts(results):
    _, metrics, _ = results
    fig = P.confusion_matrix_fig(metrics)
    text = fig.data[0].text
    c = metrics["confusion"]
    assert text[0][0].startswith(f"{c['tn']}<br>") and text[1][1].startswith(f"{c['tp']}<br>")
    assert text[0][1].startswith(f"{c['fp']}<br>") and text[1][0].startswith(f"{c['fn']}<br>")


def _report(results, **over):
    table, metrics, curves = results
    kwargs = dict(
        title='Test <script>alert("x")</script> & co',
        model_card={"architecture": "resnet50", "weights": "<b>w.pt</b>", "training": {"epochs": 3, "lr": 1e-4}},
        dataset_summary={"folder": "data/test", "real": metrics["n_real"], "fake": metrics["n_fake"]},
        metrics=metrics,
        table=table,
        curves=curves,
    )
    kwargs.update(over)
    return render_html_report(**kwargs)


def test_report_is_offline_escaped_and_has_numbers(results):
    _, metrics, _ = results
    html_text = _report(results)
    # no external scripts, styles or fonts
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html_text, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", html_text, re.I)
    # plotly.js embedded exactly once
    assert html_text.count(get_plotlyjs()[:300]) == 1
    # user strings escaped
    assert "Test &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in html_text
    assert '<script>alert("x")' not in html_text
    assert "&lt;b&gt;w.pt&lt;/b&gt;" in html_text
    # metric numbers and CIs as computed
    for key in ("accuracy", "roc_auc", "f1_fake", "ece"):
        assert f"{metrics[key]:.3f}" in html_text
    lo, hi = metrics["ci95"]["accuracy"]
    assert f"{lo:.3f} to {hi:.3f}" in html_text
    assert "Most confident mistakes" in html_text


def test_report_worst_errors_with_thumbnail(results, tmp_path):
    from PIL import Image

    table, _, curves = results
    table = table.copy()
    # make the most confident mistake a real image file on disk, and give it an unsafe name
    wrong = table[table["correct"] == False]  # noqa: E712
    wrong_conf = np.where(wrong["true_label"] == "real", wrong["p_fake"], 1 - wrong["p_fake"])
    worst = wrong.index[int(np.argmax(wrong_conf))]
    img_path = tmp_path / "worst <face>.jpg"
    Image.new("RGB", (300, 200), (200, 100, 50)).save(img_path)
    table.loc[worst, "path"] = str(img_path)
    metrics = M.metrics_from_table(table, 0.5, n_bootstrap=0)

    html_text = _report((table, metrics, curves), worst_k=3)
    section = html_text.split("Most confident mistakes", 1)[1]
    assert section.count("data:image/jpeg;base64,") == 1
    assert "worst &lt;face&gt;.jpg" in section and "worst <face>" not in section
    assert section.count('<td class="num">') >= 3 * 2 and "no preview" in section  # others: path only


def test_report_with_failures_robustness_and_empty_data(results, tmp_path):
    table, _, curves = results
    table = table.copy()
    table.loc[0, "error"] = "cannot identify image file <x>"
    table.loc[0, "p_fake"] = np.nan
    metrics = M.metrics_from_table(table, 0.5, n_bootstrap=0)
    robust = pd.DataFrame({"perturbation": ["clean", "jpeg<50>"], "metric": ["accuracy"] * 2, "value": [0.9, 0.8]})
    out = write_html_report(
        tmp_path / "sub" / "report.html", title="r", model_card={}, dataset_summary={},
        metrics=metrics, table=table, curves={"a": curves, "b": curves}, robustness=robust,
    )
    text = out.read_text(encoding="utf-8")
    assert "Robustness" in text and "jpeg&lt;50&gt;" in text
    assert "Images left out" in text and "faces/000.jpg" in text

    empty = render_html_report(
        title="empty", model_card={}, dataset_summary={}, metrics=M.compute_metrics([], []),
        table=pd.DataFrame(columns=M.TABLE_COLUMNS), curves=M.curves([], []),
    )
    assert "no data" in empty and "<h1>empty</h1>" in empty
