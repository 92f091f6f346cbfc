"""One self-contained HTML evaluation report for people who will not run Python.

The file must open offline, by double-click, years later: plotly.js is embedded inline exactly
once (no CDN), thumbnails are inline base64 JPEGs, styles are inline, and nothing is fetched.
Every string that came from a user or a file (title, model card, paths, labels) is escaped,
because file names are not trustworthy HTML.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from realitycheck.analysis import plots
from realitycheck.analysis.metrics import (
    LABELS,
    _norm_label,
    as_text,
    rethreshold,
    separation,
    valid_rows,
)

__all__ = ["render_html_report", "write_html_report"]

THUMBNAIL_PX = 96

# (key, name shown, what it means for a reader who is not an ML engineer)
METRIC_ROWS = [
    ("accuracy", "Accuracy", "share of all photos given the right verdict"),
    ("balanced_accuracy", "Balanced accuracy", "average of the hit rates on real and on fake photos; not flattered by class imbalance"),
    ("recall_fake", "Fakes caught (recall, fake)", "share of AI-generated photos flagged as fake"),
    ("precision_fake", "Precision (fake)", "share of photos flagged as fake that really are fake"),
    ("f1_fake", "F1 (fake)", "balance of precision and recall on fakes"),
    ("recall_real", "Real photos passed (recall, real)", "share of real photos correctly passed as real"),
    ("precision_real", "Precision (real)", "share of photos passed as real that really are real"),
    ("fpr", "False-alarm rate", "share of real photos wrongly flagged as fake"),
    ("fnr", "Miss rate", "share of fake photos wrongly passed as real"),
    ("roc_auc", "ROC AUC", "chance that a random fake scores higher than a random real photo (threshold-free)"),
    ("average_precision", "Average precision", "area under the precision-recall curve (threshold-free)"),
    ("eer", "Equal error rate", "error rate at the threshold where false alarms equal misses"),
    ("eer_threshold", "EER threshold", "the p(fake) threshold at which that happens"),
    ("brier", "Brier score", "mean squared error of p(fake); 0 is perfect, lower is better"),
    ("ece", "Expected calibration error", "average gap between stated p(fake) and how often such photos are fake; lower is better"),
]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1150px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 4px;font-size:1.8em} h2{margin-top:2em;border-bottom:2px solid #eee;padding-bottom:4px}
.sub{color:#666;margin:0 0 18px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.93em}
th,td{border:1px solid #ddd;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.kv th{width:220px} .muted{color:#777} .note{color:#555;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
.fig{border:1px solid #eee;border-radius:6px;padding:4px;min-height:420px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #e3e3e3;border-radius:8px;padding:10px 16px;min-width:150px}
.card .v{font-size:1.6em;font-weight:600} .card .l{color:#666;font-size:.85em}
.real{color:#1f9d55;font-weight:600} .fake{color:#d64545;font-weight:600}
img.thumb{width:%(px)dpx;height:auto;border-radius:4px;display:block}
code{word-break:break-all}
.warn{background:#fff4e5;border-left:4px solid #d97706;padding:8px 12px}
""" % {"px": THUMBNAIL_PX}


# ---------------------------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------------------------

def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _f(v: Any, digits: int = 3) -> str:
    """Metric value as shown in the report (3 decimals, 'n/a' when undefined)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _pct(num: int, den: int) -> str:
    return f"{num / den:.1%}" if den else "n/a"


def _value_html(v: Any) -> str:
    """Render a model-card/dataset value: nested dicts as nested tables, lists joined, rest escaped."""
    if isinstance(v, Mapping):
        return _kv_table(v)
    if isinstance(v, (list, tuple, set)):
        items = list(v)
        if items and all(isinstance(x, Mapping) for x in items):
            return "".join(_kv_table(x) for x in items)
        return _e(", ".join(str(x) for x in items))
    if isinstance(v, float):
        return _e(f"{v:.4g}") if math.isfinite(v) else "n/a"
    return _e(v)


def _kv_table(d: Mapping[str, Any] | None) -> str:
    if not d:
        return '<p class="muted">not provided</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value_html(v)}</td></tr>" for k, v in d.items())
    return f'<table class="kv">{rows}</table>'


def _fig_html(fig: go.Figure, height: int = 430) -> str:
    """A figure as a <div>; the plotly library itself is embedded once in <head>, not per figure."""
    fig.update_layout(height=height, autosize=True)
    div = fig.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False,
        config={"displaylogo": False, "responsive": True}, default_width="100%",
        default_height=f"{height}px",
    )
    return f'<div class="fig">{div}</div>'


def _thumbnail(path: Any, image_root: str | Path | None = None, px: int = THUMBNAIL_PX) -> str | None:
    """Small inline JPEG (data URI) of an image file, or None if it cannot be read as an image."""
    if path is None or (isinstance(path, float) and math.isnan(path)):
        return None
    try:
        p = Path(str(path))
        if not p.is_absolute() and image_root is not None and not p.is_file():
            p = Path(image_root) / p
        if not p.is_file():
            return None
        from PIL import Image

        with Image.open(p) as im:
            im.draft("RGB", (px * 2, px * 2))  # JPEG: decode at reduced size, cheap for big photos
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=70)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # unreadable, not an image, decompression bomb...: fall back to the path
        return None


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------

def _headline(metrics: Mapping[str, Any]) -> str:
    n = metrics.get("n") or 0
    if not n:
        return '<p class="muted">No scored photos: nothing to summarise.</p>'
    conf = metrics.get("confusion") or {}
    tp, fp, tn, fn = (int(conf.get(k, 0)) for k in ("tp", "fp", "tn", "fn"))
    ci = metrics.get("ci95") or {}

    def card(value: str, label: str, ci_pair: Any = None) -> str:
        ci_txt = f'<div class="l">95% CI {_f(ci_pair[0])} to {_f(ci_pair[1])}</div>' if ci_pair else ""
        return f'<div class="card"><div class="v">{value}</div><div class="l">{label}</div>{ci_txt}</div>'

    cards = "".join([
        card(_f(metrics.get("accuracy")), "accuracy", ci.get("accuracy")),
        card(_f(metrics.get("roc_auc")), "ROC AUC", ci.get("roc_auc")),
        card(_f(metrics.get("fpr")), "false-alarm rate (real flagged)"),
        card(_f(metrics.get("fnr")), "miss rate (fakes passed)"),
        card(_f(metrics.get("threshold"), 2), "decision threshold on p(fake)"),
    ])
    text = (
        f"<p>On <b>{int(n)}</b> photos ({int(metrics.get('n_real') or 0)} <span class=real>real</span>, "
        f"{int(metrics.get('n_fake') or 0)} <span class=fake>fake</span>), with a photo called fake when "
        f"p(fake) &ge; {_f(metrics.get('threshold'), 2)}: "
        f"{tp} of {tp + fn} fakes were caught ({_pct(tp, tp + fn)}), "
        f"and {fp} of {fp + tn} real photos were wrongly flagged as fake ({_pct(fp, fp + tn)}).</p>"
    )
    kind, sentence = separation(metrics)  # the package's rule: at chance no threshold is worth suggesting
    warn = (f'<p class="warn"><b>Warning:</b> {_e(sentence)} No threshold is suggested.</p>'
            if kind in ("chance", "reversed") else "")
    return f'{warn}<div class="cards">{cards}</div>{text}'


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    ci = metrics.get("ci95") or {}
    rows = []
    for key, name, meaning in METRIC_ROWS:
        pair = ci.get(key)
        ci_txt = f"{_f(pair[0])} to {_f(pair[1])}" if pair else ""
        rows.append(
            f'<tr><th>{_e(name)}</th><td class="num">{_f(metrics.get(key))}</td>'
            f'<td class="num">{ci_txt}</td><td class="note">{_e(meaning)}</td></tr>'
        )
    conf = metrics.get("confusion") or {}
    conf_txt = ", ".join(f"{k.upper()} {int(conf.get(k, 0))}" for k in ("tp", "fp", "tn", "fn"))
    return (
        '<table><tr><th>metric</th><th>value</th><th>95% CI (bootstrap)</th><th>what it means</th></tr>'
        + "".join(rows)
        + f'<tr><th>Confusion (fake = positive)</th><td class="num" colspan="2">{_e(conf_txt)}</td>'
        '<td class="note">TP fakes caught, FP real flagged, TN real passed, FN fakes missed</td></tr></table>'
    )


def _worst_errors(table: pd.DataFrame, threshold: float, worst_k: int, image_root: Any) -> str:
    """The most confident wrong verdicts: where the model is most misleading, worth eyeballing."""
    if table is None or len(table) == 0 or "p_fake" not in table or "true_label" not in table or worst_k <= 0:
        return '<p class="muted">No per-image results.</p>'
    t = rethreshold(table, threshold)
    truth = t["true_label"].map(_norm_label)
    wrong = (t["correct"] == False).fillna(False).to_numpy(dtype=bool) & valid_rows(t).to_numpy()  # noqa: E712
    wrong &= truth.isin(LABELS).to_numpy()
    if not wrong.any():
        return '<p class="muted">No wrong verdicts at this threshold.</p>'
    w = t[wrong].copy()
    p = pd.to_numeric(w["p_fake"], errors="coerce")
    w["_p_wrong"] = np.where(truth[wrong] == "real", p, 1.0 - p)  # probability given to the wrong class
    w = w.sort_values("_p_wrong", ascending=False, kind="mergesort").head(int(worst_k))
    rows = []
    for rank, (_, r) in enumerate(w.iterrows(), start=1):
        path = r.get("path", "")
        thumb = _thumbnail(path, image_root)
        img = f'<img class="thumb" src="{thumb}" alt="{_e(path)}">' if thumb else '<span class="muted">no preview</span>'
        true_lab = _norm_label(r.get("true_label"))
        pred = r.get("predicted")
        faces = r.get("faces", "")
        rows.append(
            f'<tr><td class="num">{rank}</td><td>{img}</td><td><code>{_e(path)}</code></td>'
            f'<td class="{_e(true_lab)}">{_e(true_lab)}</td><td class="{_e(pred)}">{_e(pred)}</td>'
            f'<td class="num">{_f(r["p_fake"])}</td><td class="num">{_e("" if _is_nan(faces) else faces)}</td></tr>'
        )
    return (
        f'<p class="note">{int(wrong.sum())} wrong verdicts in total; the {len(w)} most confident are shown '
        "(ranked by the probability the model gave to the wrong class).</p>"
        "<table><tr><th>#</th><th>preview</th><th>path</th><th>true</th><th>predicted</th>"
        "<th>p(fake)</th><th>faces</th></tr>" + "".join(rows) + "</table>"
    )


def _is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _failed(metrics: Mapping[str, Any], limit: int = 50) -> str:
    failed = list(metrics.get("failed") or [])
    unlabelled = list(metrics.get("unlabelled") or [])
    if not failed and not unlabelled:
        return ""
    out = ["<h2>Images left out</h2>"]
    for name, items in (("could not be scored (error)", failed), ("had no real/fake label", unlabelled)):
        if not items:
            continue
        shown = "".join(f"<li><code>{_e(x)}</code></li>" for x in items[:limit])
        more = f'<li class="muted">... and {len(items) - limit} more</li>' if len(items) > limit else ""
        out.append(f"<p>{len(items)} image(s) {name}:</p><ul>{shown}{more}</ul>")
    return "".join(out)


def _provenance(prov: Mapping[str, Any] | None, limit: int = 50) -> str:
    """What the files declare (C2PA, XMP, generator text, EXIF) beside what the model said."""
    if not prov:
        return ""
    kinds = ["ai_generated", "ai_edited", "camera", "other", "none"]
    head = "".join(f"<th>{_e(k.replace('_', ' '))}</th>" for k in kinds)
    rows = "".join(
        f"<tr><th>{_e(group)}</th><td class=num>{int(c.get('files', 0))}</td>"
        f"<td class=num><b>{int(c.get('declared_ai', 0))}</b></td>"
        + "".join(f"<td class=num>{int(c.get(k, 0))}</td>" for k in kinds) + "</tr>"
        for group, c in (prov.get("by_group") or {}).items())
    out = ["<h2>What the files declare (provenance)</h2>",
           "<p class=note>Read from each file's metadata (C2PA Content Credentials, IPTC DigitalSourceType, "
           "generator parameters, camera EXIF). Shown beside the model's verdict, never mixed into p(fake); "
           "unsigned metadata can be forged or stripped, and most shared images carry none.</p>",
           f"<table><tr><th>{_e(prov.get('group_by') or 'group')}</th><th>files</th><th>declare AI</th>{head}</tr>"
           f"{rows}</table>"]
    clashes = prov.get("disagreement_files") or []
    if clashes:
        items = "".join(f"<li><code>{_e(c['path'])}</code>: the file declares <b>{_e(c['provenance'])}</b>, "
                        f"the model says <span class=\"{_e(c['predicted'])}\">{_e(c['predicted'])}</span></li>"
                        for c in clashes[:limit])
        out.append(f'<p style="color:#b00;font-weight:600">{int(prov.get("disagreements", len(clashes)))} file(s) '
                   f"where the model and the file's own declaration disagree:</p><ul>{items}</ul>")
    return "".join(out)


def _robustness(robustness: pd.DataFrame | None) -> str:
    if robustness is None or len(robustness) == 0:
        return ""
    cols = [c for c in robustness.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{_f(v)}</td>' if isinstance(v, (float, np.floating)) else f"<td>{_e(v)}</td>"
            for v in row
        ) + "</tr>"
        for row in robustness.itertuples(index=False)
    )
    return (
        "<h2>Robustness</h2><p class=note>The same test photos after common degradations "
        "(re-compression, blur, resizing): a detector that only works on pristine files will fail in use.</p>"
        + _fig_html(plots.robustness_fig(robustness))
        + f"<table><tr>{head}</tr>{body}</table>"
    )


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def _per_source(table: pd.DataFrame | None, threshold: float) -> str:
    """Rates per source (detection for fakes, false alarms for reals), so no source hides in an average."""
    from realitycheck.analysis.metrics import per_source_from_table

    if table is None or len(table) == 0 or "source" not in table or not as_text(table["source"]).any():
        return ""
    rows = per_source_from_table(table, threshold)
    if rows.empty:
        return ""
    has_unf = "unfamiliar_rate" in rows
    head = "<tr><th>source</th><th>class</th><th>images</th><th>rate</th><th>95% CI</th><th>mean p_fake</th>" \
        + ("<th>unfamiliar</th>" if has_unf else "") + "</tr>"
    body = "".join(
        f"<tr><td>{_e(r.source)}</td><td>{_e(r.label)}</td><td>{r.n}</td><td>{_e(r.rate_name)} {r.rate:.1%}</td>"
        f"<td>{r.ci95_low:.1%}&ndash;{r.ci95_high:.1%}</td><td>{r.mean_p_fake:.3f}</td>"
        + (f"<td>{r.unfamiliar_rate:.1%}</td>" if has_unf else "") + "</tr>"
        for r in rows.itertuples(index=False))
    return ("<h2>Per source</h2><p class=note>Fakes: share detected; reals: share wrongly called fake "
            f"(false alarms), at threshold {threshold:.2f}.</p><table>{head}{body}</table>")


def _attribution(attribution: Mapping[str, Any] | None) -> str:
    """Which family the detected fakes were said to look like: the confusion matrix (rows: truth)."""
    if not attribution:
        return ""
    conf = attribution["confusion"]
    cols = sorted({g for r in conf.values() for g in r})
    head = "<tr><th>true family \\ guess</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"
    body = "".join(f"<tr><td>{_e(t)}</td>" + "".join(f"<td>{r.get(c, 0)}</td>" for c in cols) + "</tr>"
                   for t, r in conf.items())
    return ("<h2>Generator attribution</h2><p class=note>On the fakes the model detected: which generator family "
            f"the attribution head named (never part of p_fake). Top-1 right on "
            f"{attribution['top1_accuracy']:.1%} of {attribution['n_detected']}.</p><table>{head}{body}</table>")


def _groups(rows: pd.DataFrame | None, threshold: float) -> str:
    """Rates per group of people (`groups.group_rates`): a group worse than the overall rate is flagged."""
    if rows is None or len(rows) == 0:
        return ""
    head = ("<tr><th>attribute</th><th>group</th><th>class</th><th>images</th><th>rate</th><th>95% CI</th>"
            "<th>overall</th><th>mean p_fake</th><th>flag</th></tr>")
    body = "".join(
        f"<tr><td>{_e(r.attribute)}</td><td>{_e(r.group)}</td><td>{_e(r.label)}</td><td>{r.n}</td>"
        f"<td>{_e(r.rate_name)} {r.rate:.1%}</td><td>{r.ci95_low:.1%}&ndash;{r.ci95_high:.1%}</td>"
        f"<td>{r.overall_rate:.1%}</td><td>{r.mean_p_fake:.3f}</td>"
        f"<td>{'<b class=fake>' + _e(r.flag) + '</b>' if r.flag else ''}</td></tr>"
        for r in rows.itertuples(index=False))
    return ("<h2>Per group of people</h2><p class=note>Reals: share wrongly called fake (false alarms); fakes: share "
            f"detected, at threshold {threshold:.2f}, with 95% Wilson intervals. Overall: every image of the class "
            "whose attribute is known. A group is flagged when its whole interval lies on the worse side of the "
            f"overall rate.</p><table>{head}{body}</table>")


def render_html_report(
    *,
    title: str,
    model_card: Mapping[str, Any] | None,
    dataset_summary: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    table: pd.DataFrame | None,
    curves: Mapping[str, Any] | None,
    robustness: pd.DataFrame | None = None,
    worst_k: int = 12,
    image_root: str | Path | None = None,
    provenance: Mapping[str, Any] | None = None,
    attribution: Mapping[str, Any] | None = None,
    groups: pd.DataFrame | None = None,
) -> str:
    """The whole evaluation as one HTML string (a few MB, mostly the embedded plotly.js).

    ``metrics`` comes from `metrics.compute_metrics`/`metrics_from_table`, ``curves`` from
    `metrics.curves` (or ``{name: curves}`` to overlay models), ``table`` is the per-image
    results table. Relative image paths in ``table`` are looked up under ``image_root`` for
    thumbnails when they do not resolve from the working directory.
    """
    metrics = dict(metrics or {})
    threshold = float(metrics.get("threshold") if metrics.get("threshold") is not None else 0.5)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")

    figs = [
        plots.confusion_matrix_fig(metrics),
        plots.p_fake_histogram(table, threshold),
        plots.roc_fig(curves),
        plots.pr_fig(curves),
        plots.calibration_fig(curves),
    ]
    grid = "".join(_fig_html(f) for f in figs)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{plotly_js}</script>',
        "</head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">RealityCheck evaluation report, generated {_e(stamp)}. '
        "Positive class: <span class=fake>fake</span> (AI-generated).</p>",
        # results first; the (long) model card and data description close the report
        "<h2>Summary</h2>",
        _headline(metrics),
        _per_source(table, threshold),
        _attribution(attribution),
        _groups(groups, threshold),
        "<h2>Metrics</h2>",
        _metrics_table(metrics),
        "<h2>Plots</h2>",
        f'<div class="grid">{grid}</div>',
        _robustness(robustness),
        _provenance(provenance),
        "<h2>Most confident mistakes</h2>",
        _worst_errors(table, threshold, worst_k, image_root),
        _failed(metrics),
        "<h2>Test data</h2>",
        _kv_table(dataset_summary),
        "<h2>Model</h2>",
        _kv_table(model_card),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_html_report(path: str | Path, **kwargs: Any) -> Path:
    """`render_html_report` written to ``path`` (UTF-8, parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html_report(**kwargs), encoding="utf-8")
    return path
