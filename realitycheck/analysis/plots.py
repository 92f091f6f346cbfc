"""Plotly figures over the analytics dicts and tables of `realitycheck.analysis.metrics`.

Shared by the app, the CLI report and notebooks, so every chart speaks the same visual
language: real is always green and fake always red (`COLORS`), probabilities are always
"p(fake)" on a 0-1 axis, and rates say in words what they count. Every function accepts empty
or missing data and then returns a figure with a "no data" note instead of raising, because a
dashboard with one empty panel is better than a dashboard that crashes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from realitycheck.analysis.metrics import _norm_label

__all__ = [
    "COLORS",
    "confusion_matrix_fig",
    "roc_fig",
    "pr_fig",
    "calibration_fig",
    "p_fake_histogram",
    "confidence_timeline",
    "verdict_counts_fig",
    "robustness_fig",
    "training_curves_fig",
]

COLORS = {"real": "#1f9d55", "fake": "#d64545"}
NEUTRAL = "#7f7f7f"
# For series that are not a class (several models, several metrics): colour-blind-safe, and
# free of the real/fake green and red so a model line is never mistaken for a class.
SERIES_PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"]

P_FAKE_AXIS = "p(fake)"
FPR_AXIS = "false-positive rate (real photos flagged as fake)"
TPR_AXIS = "true-positive rate (fakes caught)"
RECALL_AXIS = "recall (share of fakes caught)"
PRECISION_AXIS = "precision (share of flagged photos that are fake)"

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=55))


def _base(title: str, **layout: Any) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, **_LAYOUT)
    if layout:
        fig.update_layout(**layout)
    return fig


def _legend_below(fig: go.Figure) -> go.Figure:
    """Legend under the x-axis title, items side by side: long model names then take no width
    from the plot and cannot cover a right-hand axis."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0),
                      margin=dict(_LAYOUT["margin"], b=130), height=480)
    return fig


def _count_step(largest: float, max_ticks: int = 6) -> int:
    """A whole tick step (1, 2, 5, 10, 20, 50, ...) giving at most `max_ticks` ticks up to `largest`."""
    step = 1
    while largest / step > max_ticks:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def _no_data(fig: go.Figure, message: str = "no data") -> go.Figure:
    """Mark a figure as empty with a centred note, keeping its title and axis titles."""
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
        font=dict(size=16, color=NEUTRAL),
    )
    return fig


def _empty_df(df: Any, columns: list[str]) -> bool:
    return not isinstance(df, pd.DataFrame) or len(df) == 0 or any(c not in df.columns for c in columns)


def _by_name(curves_by_name: Any) -> dict[str, Mapping[str, Any]]:
    """Accept either {name: curves} or one `metrics.curves` dict (then named "model")."""
    if not curves_by_name:
        return {}
    if isinstance(curves_by_name, Mapping) and ("roc" in curves_by_name or "calibration" in curves_by_name):
        return {"model": curves_by_name}
    return {str(k): v for k, v in dict(curves_by_name).items() if isinstance(v, Mapping)}


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _label(v: Any) -> str:
    norm = _norm_label(v)
    return "unlabelled" if norm in (None, "") else norm


# ---------------------------------------------------------------------------------------------
# evaluation figures
# ---------------------------------------------------------------------------------------------

def confusion_matrix_fig(metrics: Mapping[str, Any] | None) -> go.Figure:
    """2x2 counts (rows: true class, columns: verdict) with the share of each true class.

    Shading follows the row share rather than raw counts, so an imbalanced set does not hide
    a weak minority class.
    """
    thr = (metrics or {}).get("threshold")
    title = "Confusion matrix" + (f" at threshold {thr:.2f}" if isinstance(thr, (int, float)) else "")
    fig = _base(title, xaxis=dict(title="predicted verdict"), yaxis=dict(title="true class"))
    conf = (metrics or {}).get("confusion") or {}
    counts = np.array(
        [[conf.get("tn", 0), conf.get("fp", 0)], [conf.get("fn", 0), conf.get("tp", 0)]], dtype=float
    )
    if not metrics or not metrics.get("n") or counts.sum() == 0:
        return _no_data(fig)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    text = [[f"{int(counts[i, j])}<br>{share[i, j]:.1%} of {['real', 'fake'][i]}" for j in range(2)] for i in range(2)]
    fig.add_trace(
        go.Heatmap(
            z=share, x=["real", "fake"], y=["real", "fake"], text=text, texttemplate="%{text}",
            colorscale=[[0, "#f7f7f7"], [1, "#4a6fa5"]], zmin=0, zmax=1, showscale=False,
            hovertemplate="true %{y}, predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="bottom")
    return fig


def roc_fig(curves_by_name: Mapping[str, Any] | None) -> go.Figure:
    """ROC curves of one or more models overlaid, with the chance diagonal for reference."""
    fig = _base(
        "ROC curve",
        xaxis=dict(title=FPR_AXIS, range=[0, 1]),
        yaxis=dict(title=TPR_AXIS, range=[0, 1.02]),
    )
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(color=NEUTRAL, dash="dash"), hoverinfo="skip"))
    drawn = 0
    for i, (name, c) in enumerate(_by_name(curves_by_name).items()):
        roc = c.get("roc") or {}
        if not roc.get("fpr"):
            continue
        drawn += 1
        fig.add_trace(go.Scatter(
            x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"{name} (AUC {_fmt(roc.get('auc'))})",
            line=dict(color=SERIES_PALETTE[i % len(SERIES_PALETTE)], width=2),
            customdata=roc.get("thresholds"),
            hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<br>threshold %{customdata:.3f}<extra>" + name + "</extra>",
        ))
    if not drawn:
        _no_data(fig, "no data (needs both real and fake photos)")
    return _legend_below(fig)


def pr_fig(curves_by_name: Mapping[str, Any] | None) -> go.Figure:
    """Precision-recall curves overlaid, with the no-skill line at the share of fakes."""
    fig = _base(
        "Precision-recall curve",
        xaxis=dict(title=RECALL_AXIS, range=[0, 1]),
        yaxis=dict(title=PRECISION_AXIS, range=[0, 1.02]),
    )
    drawn = 0
    for i, (name, c) in enumerate(_by_name(curves_by_name).items()):
        pr = c.get("pr") or {}
        if not pr.get("recall"):
            continue
        color = SERIES_PALETTE[i % len(SERIES_PALETTE)]
        drawn += 1
        fig.add_trace(go.Scatter(
            x=pr["recall"], y=pr["precision"], mode="lines", name=f"{name} (AP {_fmt(pr.get('average_precision'))})",
            line=dict(color=color, width=2, shape="hv"),
            hovertemplate="recall %{x:.3f}, precision %{y:.3f}<extra>" + name + "</extra>",
        ))
        prev = c.get("prevalence")
        if prev is not None:
            fig.add_trace(go.Scatter(x=[0, 1], y=[prev, prev], mode="lines", name=f"{name}: no skill ({prev:.2f})",
                                     line=dict(color=color, dash="dot", width=1), hoverinfo="skip"))
    if not drawn:
        _no_data(fig, "no data (needs both real and fake photos)")
    return _legend_below(fig)


def calibration_fig(curves: Mapping[str, Any] | None) -> go.Figure:
    """Reliability diagram: mean p(fake) per bin against the share of those photos that are fake.

    Points on the diagonal mean the probabilities can be read at face value; bars show how many
    photos each bin holds, so a wild point backed by three photos is not over-read.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.update_layout(title="Calibration (reliability diagram)", **_LAYOUT)
    fig.update_xaxes(title_text="mean predicted p(fake) in bin", range=[0, 1])
    fig.update_yaxes(title_text="fraction of photos that are fake", range=[0, 1.02], secondary_y=False)
    fig.update_yaxes(title_text="photos per bin (count)", secondary_y=True, showgrid=False, rangemode="tozero")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color=NEUTRAL, dash="dash"), hoverinfo="skip"), secondary_y=False)
    drawn = 0
    for i, (name, c) in enumerate(_by_name(curves).items()):
        cal = c.get("calibration") or {}
        if not cal.get("mean_predicted"):
            continue
        color = SERIES_PALETTE[i % len(SERIES_PALETTE)]
        drawn += 1
        edges = cal.get("bin_edges") or []
        if drawn == 1:
            # one set of count bars (for the first model) keeps the chart readable
            width = (edges[1] - edges[0]) if len(edges) > 1 else 0.1
            fig.add_trace(go.Bar(x=cal["mean_predicted"], y=cal["count"], name=f"{name}: photos per bin",
                                 marker_color=color, opacity=0.18, width=width * 0.8,
                                 hovertemplate="%{y} photos<extra></extra>"), secondary_y=True)
            # whole photos at evenly spaced ticks (left alone, the count axis copied the left axis's
            # five intervals: ticks at 7.02, 14.04, ...)
            fig.update_yaxes(tickmode="linear", tick0=0, dtick=_count_step(max(cal["count"], default=0)),
                             tickformat="d", secondary_y=True)
        fig.add_trace(go.Scatter(
            x=cal["mean_predicted"], y=cal["fraction_positive"], mode="lines+markers", name=name,
            line=dict(color=color, width=2), customdata=cal["count"],
            hovertemplate="mean p(fake) %{x:.3f}<br>fraction fake %{y:.3f}<br>%{customdata} photos<extra></extra>",
        ), secondary_y=False)
    if not drawn:
        _no_data(fig)
    return _legend_below(fig)


def p_fake_histogram(table: pd.DataFrame | None, threshold: float | None) -> go.Figure:
    """Distribution of p(fake) for each true class, with the decision threshold marked.

    Shows at a glance how much the two classes overlap and what moving the threshold would do.
    `threshold`: the one the verdicts were read at (None: no line).
    """
    fig = _base("p(fake) by true class", xaxis=dict(title=P_FAKE_AXIS, range=[0, 1]),
                yaxis=dict(title="photos (count)"), barmode="overlay")
    if threshold is not None:
        fig.add_vline(x=float(threshold), line=dict(color="#333333", dash="dash"),
                      annotation_text=f"threshold {float(threshold):.2f}", annotation_position="top")
    if _empty_df(table, ["p_fake"]):
        return _no_data(fig)
    p = pd.to_numeric(table["p_fake"], errors="coerce")
    labels = table["true_label"].map(_label) if "true_label" in table else pd.Series("unlabelled", index=table.index)
    ok = p.notna()
    if not ok.any():
        return _no_data(fig)
    for cls in ["real", "fake"] + sorted(set(labels[ok]) - {"real", "fake"}):
        sel = ok & (labels == cls)
        if not sel.any():
            continue
        fig.add_trace(go.Histogram(
            x=p[sel], name=f"true {cls} ({int(sel.sum())})", marker_color=COLORS.get(cls, NEUTRAL),
            opacity=0.6, xbins=dict(start=0, end=1.0 + 1e-9, size=0.05),
            hovertemplate="p(fake) %{x}<br>%{y} photos<extra>" + cls + "</extra>",
        ))
    return fig


def verdict_histogram(history_df: pd.DataFrame | None, threshold: float | None = None) -> go.Figure:
    """p(fake) of checked photos (no true class known), coloured by their verdict: real green, fake red."""
    fig = _base("p(fake) of the checked photos", xaxis=dict(title=P_FAKE_AXIS, range=[0, 1]),
                yaxis=dict(title="photos (count)"), barmode="stack")
    if threshold is not None:
        fig.add_vline(x=float(threshold), line=dict(color="#333333", dash="dash"),
                      annotation_text=f"threshold {float(threshold):.2f}", annotation_position="top")
    if _empty_df(history_df, ["p_fake", "label"]):
        return _no_data(fig)
    p = pd.to_numeric(history_df["p_fake"], errors="coerce")
    for cls in ("real", "fake"):
        sel = p.notna() & (history_df["label"] == cls)
        if sel.any():
            fig.add_trace(go.Histogram(
                x=p[sel], name=f"verdict {cls} ({int(sel.sum())})", marker_color=COLORS[cls],
                xbins=dict(start=0, end=1.0 + 1e-9, size=0.05),
                hovertemplate="p(fake) %{x}<br>%{y} photos<extra>" + cls + "</extra>"))
    return fig


# ---------------------------------------------------------------------------------------------
# app history figures
# ---------------------------------------------------------------------------------------------

def confidence_timeline(history_df: pd.DataFrame | None, threshold: float | None = None) -> go.Figure:
    """p(fake) of each checked photo over time, coloured by verdict (hover shows the file name)."""
    fig = _base("Checked photos over time", xaxis=dict(title="time"),
                yaxis=dict(title=P_FAKE_AXIS, range=[-0.02, 1.02]))
    if threshold is not None:
        fig.add_hline(y=float(threshold), line=dict(color="#333333", dash="dash"),
                      annotation_text=f"threshold {float(threshold):.2f}")
    if _empty_df(history_df, ["time", "p_fake"]):
        return _no_data(fig)
    df = history_df.copy()
    df["p_fake"] = pd.to_numeric(df["p_fake"], errors="coerce")
    df = df[df["p_fake"].notna()]
    if df.empty:
        return _no_data(fig)
    df["_label"] = df["label"].map(_label) if "label" in df else "unlabelled"
    names = df["name"].astype(str) if "name" in df else pd.Series("", index=df.index)
    for cls in ["real", "fake"] + sorted(set(df["_label"]) - {"real", "fake"}):
        sel = df["_label"] == cls
        if not sel.any():
            continue
        fig.add_trace(go.Scatter(
            x=df.loc[sel, "time"], y=df.loc[sel, "p_fake"], mode="markers", name=cls,
            marker=dict(color=COLORS.get(cls, NEUTRAL), size=9, line=dict(width=0.5, color="white")),
            text=names[sel], hovertemplate="%{text}<br>%{x}<br>p(fake) %{y:.3f}<extra>" + cls + "</extra>",
        ))
    return fig


def verdict_counts_fig(history_df: pd.DataFrame | None) -> go.Figure:
    """How many checked photos got each verdict."""
    fig = _base("Verdicts", xaxis=dict(title="verdict"), yaxis=dict(title="photos (count)"), showlegend=False)
    if _empty_df(history_df, ["label"]):
        return _no_data(fig)
    counts = history_df["label"].map(_label).value_counts()
    order = [c for c in ["real", "fake"] if c in counts.index] + sorted(set(counts.index) - {"real", "fake"})
    fig.add_trace(go.Bar(
        x=order, y=[int(counts[c]) for c in order], text=[int(counts[c]) for c in order], textposition="auto",
        marker_color=[COLORS.get(c, NEUTRAL) for c in order], hovertemplate="%{x}: %{y} photos<extra></extra>",
    ))
    fig.update_xaxes(type="category")
    return fig


# ---------------------------------------------------------------------------------------------
# robustness and training
# ---------------------------------------------------------------------------------------------

def robustness_fig(df: pd.DataFrame | None) -> go.Figure:
    """Metric values under each perturbation (JPEG, blur, resize...), one bar group per perturbation.

    Perturbations keep their row order (usually clean first, then increasing strength).
    """
    fig = _base("Robustness to image perturbations", xaxis=dict(title="perturbation"),
                yaxis=dict(title="metric value (0 to 1)"), barmode="group")
    if _empty_df(df, ["perturbation", "metric", "value"]):
        return _no_data(fig)
    d = df.copy()
    d["value"] = pd.to_numeric(d["value"], errors="coerce")
    d = d[d["value"].notna()]
    if d.empty:
        return _no_data(fig)
    d["perturbation"] = d["perturbation"].astype(str)
    order = list(dict.fromkeys(d["perturbation"]))
    for i, metric in enumerate(dict.fromkeys(d["metric"].astype(str))):
        sel = d[d["metric"].astype(str) == metric]
        fig.add_trace(go.Bar(
            x=sel["perturbation"], y=sel["value"], name=metric,
            marker_color=SERIES_PALETTE[i % len(SERIES_PALETTE)],
            hovertemplate="%{x}<br>" + metric + " %{y:.3f}<extra></extra>",
        ))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    vmax = float(d["value"].max())
    if vmax <= 1.0:
        fig.update_yaxes(range=[0, 1.02])
    return fig


def training_curves_fig(log_df: pd.DataFrame | None) -> go.Figure:
    """Loss (left) and validation accuracy/AUC (right) per epoch, to spot over-fitting."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation scores"))
    fig.update_layout(title="Training curves", **_LAYOUT)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(title_text="cross-entropy loss", row=1, col=1)
    fig.update_yaxes(title_text="score (0 to 1)", row=1, col=2)
    if _empty_df(log_df, ["epoch"]):
        return _no_data(fig)
    series = [
        ("train_loss", "train loss", 1, SERIES_PALETTE[0], "solid"),
        ("val_loss", "validation loss", 1, SERIES_PALETTE[1], "solid"),
        ("val_accuracy", "validation accuracy", 2, SERIES_PALETTE[2], "solid"),
        ("val_auc", "validation ROC AUC", 2, SERIES_PALETTE[3], "dash"),
    ]
    drawn = 0
    for col, name, panel, color, dash in series:
        if col not in log_df:
            continue
        y = pd.to_numeric(log_df[col], errors="coerce")
        if y.notna().sum() == 0:
            continue
        drawn += 1
        fig.add_trace(go.Scatter(x=log_df["epoch"], y=y, mode="lines+markers", name=name,
                                 line=dict(color=color, dash=dash)), row=1, col=panel)
    if not drawn:
        _no_data(fig)
    return fig
