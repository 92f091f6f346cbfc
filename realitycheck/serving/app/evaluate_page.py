"""Evaluate page: run the active model once over labelled images, then explore the results.

The model runs once (`evaluate.evaluate_folder`); the per-image table is kept in the session and
every threshold-dependent number, chart and list is recomputed from it (`metrics.rethreshold`,
`EvaluationResult.summary`), so moving the threshold slider never re-runs the model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from realitycheck.analysis import evaluate, plots
from realitycheck.analysis import groups as G
from realitycheck.analysis import metrics as M
from realitycheck.analysis.evaluate import threshold_advice_words
from realitycheck.intake import uploads
from realitycheck.intake.data import DataError
from realitycheck.intake.images import ImageError, load_image
from realitycheck.serving import access
from realitycheck.serving.app import provenance_panel, public, state
from realitycheck.serving.app.case_log import case_stream
from realitycheck.serving.app.display import plural, verdict_html
from realitycheck.serving.app.errors import run_page, show_error
from realitycheck.serving.app.explanations import explanation, faithfulness_words
from realitycheck.serving.app.inputs import (
    IMAGE_TYPES,
    LABELLED_PLACEHOLDER,
    accept_upload,
    unpack_zip_upload,
)
from realitycheck.serving.app.model_cache import (
    active_model_path,
    classifier_key,
    current_classifier,
    get_classifier,
    model_key,
)

SOURCES = ["Folder or CSV on the server", "Zip file upload", "Image files upload"]
LAYOUT_HELP = (
    "Accepted layouts: a folder with `real/` and `fake/` subfolders (`fake` may also be named `ai`, "
    "`generated` or `synthetic`), the Kaggle 140k layout (`train/valid/test` splits; `test` is used), "
    "or a CSV file with columns `path,label`."
)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def _evaluate(clf, folder: str | Path, label: str, tmp=None, skipped=(), root: str | None = None) -> None:
    bar = st.progress(0.0, text="Finding labelled images…")

    def tick(done: int, total: int | None) -> None:
        frac = done / total if total else 0.0
        bar.progress(min(1.0, frac), text=f"Classified {done} of {total} images")

    try:
        # workers=0: decode in this process; forking DataLoader workers from the threaded
        # Streamlit server is unsafe, and dashboard-sized sets do not need them.
        stream, recorder = case_stream(clf, "dashboard:evaluate", workers=0)  # each verdict becomes a case
        result = evaluate.evaluate_folder(clf, folder, progress=tick, workers=0, predict_stream=stream)
    except DataError as exc:
        bar.empty()
        state.drop_temp_dir(tmp)
        show_error(str(exc), details=LAYOUT_HELP)
        return
    bar.empty()
    if recorder is not None and recorder.error is not None:
        show_error(f"Not recorded in the case database: {recorder.error}")
    previous = state.get(state.EVALUATION)
    if previous and previous.get("tmp") is not None and previous.get("tmp") is not tmp:
        state.drop_temp_dir(previous["tmp"])
    state.put(state.EVALUATION, {
        "id": uuid.uuid4().hex, "result": result, "label": label, "curves": M.curves_from_table(result.table),
        "model_name": clf.name, "model_path": str(clf.path) if clf.path else None,
        "model_key": classifier_key(clf),
        "tmp": tmp, "skipped": list(skipped), "memo": {},
        # uploads: where the user's own names start (the zip's top, the upload folder); server folders: None
        "root": root or (getattr(tmp, "name", None) if tmp is not None else None),
    })
    state.put(state.EVAL_THRESHOLD, float(state.get(state.THRESHOLD)))
    s = _summary(state.get(state.EVALUATION), float(state.get(state.THRESHOLD)))  # memoised: the page reuses it
    state.get(state.EVAL_LOG).append({  # the Session history page lists evaluations too
        "time": _dt.datetime.now(), "data": label, "model": clf.name, "images": int(s.get("n") or 0),
        "failed": int(s.get("n_failed") or 0), "threshold": float(s["threshold"]), "accuracy": s.get("accuracy"),
        "roc_auc": s.get("roc_auc"), "separation": s["separation"]["kind"]})
    st.toast(f"Evaluated {len(result.table)} images in {result.seconds:.1f} s")


def _source_folder(clf) -> None:
    if public.is_public():  # never reached from the menu in public mode; refuse if it ever is
        show_error("Server paths are turned off on this public deployment: upload files instead.")
        return
    with st.form("eval_folder_form", border=False):
        path = st.text_input("Folder or CSV path on the server", key="eval_path",
                             placeholder=LABELLED_PLACEHOLDER, help=LAYOUT_HELP)
        go = st.form_submit_button("Evaluate", type="primary")
    if go:
        if not path.strip():
            st.warning("Enter a folder or CSV path first.")
            return
        try:  # only under the allowed roots; every file a CSV lists is checked too
            source = access.checked_labelled_source(path.strip(), public.settings())
        except (access.PathRefused, DataError) as exc:
            show_error(str(exc), details=LAYOUT_HELP)
            return
        _evaluate(clf, source, label=path.strip())


def _source_zip(clf) -> None:
    with st.form("eval_zip_form", border=False):
        up = st.file_uploader("A zip holding real/ and fake/ folders", type=["zip"], key="eval_zip")
        go = st.form_submit_button("Evaluate", type="primary")
    if not go:
        return
    if up is None:
        st.warning("Choose a zip file first.")
        return
    unpacked = unpack_zip_upload(up, "realitycheck-eval-", details=LAYOUT_HELP)
    if unpacked is None:
        return
    folder, skipped, tmp = unpacked
    # files are named by their path inside the zip: relative to the folder it was unpacked into
    top = Path(tmp.name) / Path(folder).resolve().relative_to(Path(tmp.name).resolve()).parts[0]
    _evaluate(clf, folder, label=up.name, tmp=tmp, skipped=skipped, root=str(top))


def _source_files(clf) -> None:
    st.caption("Put each batch in the box for its true class; both classes are needed for ROC-AUC.")
    with st.form("eval_files_form", border=False):
        c1, c2 = st.columns(2)
        real = c1.file_uploader("Real photos (true class: real)", type=IMAGE_TYPES,
                                accept_multiple_files=True, key="eval_files_real")
        fake = c2.file_uploader("AI-generated photos (true class: fake)", type=IMAGE_TYPES,
                                accept_multiple_files=True, key="eval_files_fake")
        go = st.form_submit_button("Evaluate", type="primary")
    if not go:
        return
    if not real and not fake:
        st.warning("Add images to at least one of the two boxes first.")
        return
    by_label = {"real": [], "fake": []}
    for label, files in (("real", real or []), ("fake", fake or [])):
        for f in files:
            data = f.getvalue()
            over = accept_upload(data, f.name)
            if over:
                show_error(over)
                return
            by_label[label].append((f.name, data))
    tmp = state.session_temp_dir("realitycheck-eval-")
    root = uploads.write_labelled_folder(by_label, tmp.name)
    n = len(real or []) + len(fake or [])
    _evaluate(clf, root, label=f"{n} uploaded files ({len(real or [])} real, {len(fake or [])} fake)", tmp=tmp)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _fmt_num(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _summary(ev: dict, threshold: float) -> dict:
    key = round(threshold, 4)
    memo = ev["memo"]
    if key not in memo:
        memo[key] = ev["result"].summary(threshold)
        while len(memo) > 32:
            memo.pop(next(iter(memo)))
    return memo[key]


def _use_best(value: float) -> None:
    st.session_state[state.EVAL_THRESHOLD] = float(value)  # exactly the value shown (4 decimals, the slider's)


def _cards(s: dict, separation: str) -> None:
    c = st.columns(4)
    ci = (s.get("ci95") or {}).get("accuracy")
    c[0].metric("Accuracy", _fmt_pct(s.get("accuracy")),
                help="Share of photos given the right verdict." + (
                    f" 95% CI {ci[0]:.1%} to {ci[1]:.1%}." if ci else ""))
    auc_ci = (s.get("ci95") or {}).get("roc_auc")
    flag = {"chance": "no better than guessing", "reversed": "the wrong way round"}.get(separation)
    c[1].metric("ROC-AUC", _fmt_num(s.get("roc_auc")), delta=flag, delta_color="inverse" if flag else "normal",
                delta_arrow="off",
                help="Chance that a random fake scores higher than a random real photo (0.5 = guessing)." + (
                    f" 95% CI {auc_ci[0]:.3f} to {auc_ci[1]:.3f}." if auc_ci and None not in auc_ci else ""))
    c[2].metric("Balanced accuracy", _fmt_pct(s.get("balanced_accuracy")),
                help="Average of the hit rates on real and fake photos.")
    c[3].metric("Images scored", f"{s.get('n', 0)} images",
                help=f"{s.get('n_real', 0)} real, {s.get('n_fake', 0)} fake")
    c = st.columns(4)
    c[0].metric("Precision (fake)", _fmt_pct(s.get("precision_fake")),
                help="Share of photos flagged as fake that really are fake.")
    c[1].metric("Recall (fake)", _fmt_pct(s.get("recall_fake")), help="Share of fakes caught.")
    c[2].metric("F1 (fake)", _fmt_pct(s.get("f1_fake")), help="Balance of precision and recall on fakes.")
    c[3].metric("False-alarm rate (real)", _fmt_pct(s.get("fpr")),
                help="Share of real photos wrongly flagged as fake.")
    failed = int(s.get("n_failed") or 0)
    speed = s.get("images_per_second")
    st.caption(f"{s.get('n_real', 0)} real + {s.get('n_fake', 0)} fake images scored · {failed} failed · "
               f"{s.get('seconds', 0):.1f} s" + (f" ({speed:.1f} images/s)" if speed else ""))


def _charts(ev: dict, s: dict, threshold: float) -> None:
    table = ev["result"].table
    curves = ev["curves"]
    name = ev["model_name"]
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.confusion_matrix_fig(s), key="eval_confusion")
    c2.plotly_chart(plots.p_fake_histogram(table, threshold), key="eval_hist")
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.roc_fig({name: curves}), key="eval_roc")
    c2.plotly_chart(plots.pr_fig({name: curves}), key="eval_pr")
    c1, _ = st.columns(2)
    c1.plotly_chart(plots.calibration_fig({name: curves}), key="eval_calibration")


def _root(ev: dict) -> str | None:
    """The folder an upload's names are relative to (None: a server folder, whose paths are the user's own)."""
    return ev.get("root") or getattr(ev.get("tmp"), "name", None)


def _shown(ev: dict, path) -> str:
    """A result's file as the user knows it: its path inside the uploaded zip (or the upload folder);
    a server folder's path as typed (public mode: no server folder at all)."""
    root, p = _root(ev), str(path)
    if root:
        a, r = os.path.abspath(p), os.path.abspath(root)
        if a.startswith(r + os.sep):
            return Path(os.path.relpath(a, r)).as_posix()
    return public.shown_path(p)


def _shown_text(ev: dict, text: str) -> str:
    """A message with the upload's server folder taken out (and, in public mode, every server path)."""
    root = _root(ev)
    text = str(text)
    if root:
        for r in {root, os.path.abspath(root), str(Path(root).resolve())}:
            text = text.replace(r + os.sep, "").replace(r, "the upload")
    return public.safe(text)


def _shown_result(ev: dict):
    """The EvaluationResult as downloads show it: files by `_shown`, messages by `_shown_text`, and for an
    upload the upload's name as its source (the table keeps the real paths for the heatmaps)."""
    result = ev["result"]
    if not _root(ev):
        return public.shown_result(result)
    table = result.table.assign(path=[_shown(ev, p) for p in result.table["path"]],
                                error=[_shown_text(ev, e) for e in result.table["error"]])
    return dataclasses.replace(result, table=table, source=str(ev.get("label") or "upload"))


def _failed(ev: dict, s: dict) -> None:
    reasons = {_shown(ev, p): _shown_text(ev, r) for p, r in (s.get("failed_reasons") or {}).items()}
    skipped = ev.get("skipped") or []
    if reasons:
        n = len(reasons)
        with st.expander(f"{n} file{'s' if n != 1 else ''} could not be scored (left out of the metrics)"):
            st.dataframe(pd.DataFrame({"file": list(reasons), "reason": list(reasons.values())}),
                         hide_index=True, width="stretch")
    if skipped:
        with st.expander(f"{len(skipped)} zip members were skipped"):
            for msg in skipped:
                st.text(str(msg))


def _error_browser(ev: dict, threshold: float) -> None:
    t = M.rethreshold(ev["result"].table, threshold)
    wrong = t[t["correct"].eq(False).fillna(False).astype(bool)]
    st.subheader("Mistakes at this threshold")
    if wrong.empty:
        st.success("No misclassified images at this threshold.")
        return
    st.caption(f"{plural(len(wrong), 'misclassified image')}. Pick one to see it with its Grad-CAM heatmap.")
    view = wrong[["path", "true_label", "predicted", "p_fake", "faces"]].drop_duplicates("path").copy()
    view["p_fake"] = pd.to_numeric(view["p_fake"], errors="coerce")
    shown = view.assign(path=[_shown(ev, p) for p in view["path"]])  # names as the user knows them
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"p_fake": st.column_config.NumberColumn("p(fake)", format="%.3f")})
    paths = view["path"].astype(str).tolist()
    # Keyed by the run: a second evaluation gets a fresh picker instead of the old run's choice.
    choice = st.selectbox("Show", paths, format_func=lambda p: _shown(ev, p), key=f"eval_error_pick_{ev['id']}")
    if choice not in paths:
        return
    row = view[view["path"].astype(str) == choice].iloc[0]
    try:
        img = load_image(choice).image
    except ImageError as exc:
        show_error(str(exc))
        return
    clf = _eval_classifier(ev)
    st.markdown(f"**{_shown(ev, choice)}**: true class **{row['true_label']}**, "
                + verdict_html(str(row["predicted"]), float(row["p_fake"])), unsafe_allow_html=True)
    if clf is None:
        st.image(img, width=320, caption=f"true {row['true_label']}, predicted {row['predicted']}")
        st.info("The model that produced these results is no longer available, so no heatmap.")
        return
    with st.spinner("Computing the Grad-CAM heatmap…"):
        exp = explanation(clf, ("eval", choice), img, "gradcam", target_class=str(row["predicted"]))
    # One picture: the panel's left half is the image itself, so it is not shown a second time.
    st.image(exp.panel(), width="stretch",
             caption=f"Left: the {exp.region} the model saw. Right: Grad-CAM evidence for "
                     f"'{exp.target_class}' (red = strong, blue = weak).")
    st.markdown(f"**Where:** {exp.where(img)}")
    if exp.faithfulness is not None:
        st.caption(faithfulness_words(exp.faithfulness))


def _eval_classifier(ev: dict):
    path = ev.get("model_path")
    if not path or not Path(path).is_file():
        return None
    try:
        return get_classifier(Path(path))
    except Exception:  # noqa: BLE001 - a heatmap is optional here
        return None


def results_csv(ev: dict, threshold: float) -> bytes:
    """The per-image CSV download: files named as the user knows them, never a server folder."""
    t = M.rethreshold(_shown_result(ev).table, threshold)
    return t.reindex(columns=M.TABLE_COLUMNS + ["provenance"]).to_csv(index=False).encode("utf-8")


def report_html(ev: dict, clf, threshold: float) -> bytes:
    """The HTML report download, from the same shown result as the CSV (thumbnails found under the upload)."""
    with tempfile.TemporaryDirectory(prefix="realitycheck-report-") as d:
        out = evaluate.write_report(Path(d) / "report.html", clf, _shown_result(ev), threshold=threshold,
                                    image_root=_root(ev), groups=_group_rows(ev, threshold))
        return out.read_bytes()


def _downloads(ev: dict, threshold: float) -> None:
    c1, c2 = st.columns(2)
    c1.download_button("Download results (CSV)", data=results_csv(ev, threshold), file_name="realitycheck-results.csv",
                       mime="text/csv", key="eval_dl_csv", on_click="ignore")
    clf = _eval_classifier(ev)
    if clf is None:
        c2.caption("HTML report: needs the model that produced these results.")
        return
    c2.download_button("Download report (HTML)", data=lambda: report_html(ev, clf, threshold),
                       file_name="realitycheck-report.html",
                       mime="text/html", key="eval_dl_html",
                       on_click="ignore",  # a rerun would drop the deferred file a second click still asks for
                       help="One self-contained file (opens offline) with every chart and metric.")


def _per_source(s: dict) -> None:
    """Each source's rate (detection for fakes, false alarms for reals), so no source hides in an average."""
    rows = s.get("per_source") or []
    named = [r for r in rows if r["source"] != "(unnamed)"]
    if not named and len(rows) < 2:
        return
    st.subheader("Per source")
    table = [{"source": r["source"], "class": r["label"], "images": r["n"], "measures": r["rate_name"],
              "rate": r["rate"], "95% CI": f"{r['ci95_low']:.1%} - {r['ci95_high']:.1%}",
              "mean p(fake)": r["mean_p_fake"],
              **({"unfamiliar": r["unfamiliar_rate"]} if r.get("unfamiliar_rate") is not None else {})}
             for r in rows]
    st.dataframe(table, hide_index=True, width="stretch", key="eval_per_source",
                 column_config={"rate": st.column_config.NumberColumn(format="percent"),
                                "unfamiliar": st.column_config.NumberColumn(format="percent"),
                                "mean p(fake)": st.column_config.NumberColumn(format="%.3f")})


def _group_rows(ev: dict, threshold: float):
    """Rates per group of people (`groups.group_rates`) at this threshold; None when no image has an
    attribute. Attributes come from known file names and, when uploaded, a path,attribute,value CSV."""
    attrs = ev.get("group_attributes")
    if attrs is None:
        attrs = ev["group_attributes"] = G.attributes_for(ev["result"].table["path"])
    if not attrs:
        return None
    return G.group_rates(ev["result"].table, attrs, threshold)


def _groups_csv(ev: dict) -> None:
    """An optional CSV of path,attribute,value (paths as inside the zip or folder, or bare file names)."""
    up = st.file_uploader("Attributes CSV (path,attribute,value), optional", type=["csv"],
                          key=f"eval_groups_csv_{ev['id']}",
                          help="One row per file and attribute, e.g. `real/x.jpg,age,34` or `x.jpg,skin tone,V`. "
                               "UTKFace and All-Age-Faces file names are read without one.")
    if up is None or ev.get("group_csv") == up.file_id:
        return
    tmp = tempfile.TemporaryDirectory(prefix="realitycheck-groups-")
    try:
        path = Path(tmp.name) / "groups.csv"
        path.write_bytes(up.getvalue())
        ev["group_attributes"] = G.attributes_for(ev["result"].table["path"], csv_path=path)
        ev["group_csv"] = up.file_id
    except G.GroupError as exc:
        show_error(str(exc).replace("groups.csv", up.name))
    finally:
        tmp.cleanup()


def _groups(ev: dict, threshold: float) -> None:
    """False alarms and detection per age band, gender, ethnicity: no group of people hides in an average."""
    with st.expander("Per group of people (age, gender, ethnicity)", expanded=False):
        _groups_csv(ev)
        rows = _group_rows(ev, threshold)
        if rows is None or rows.empty:
            st.caption("No image has a known attribute: upload a CSV of path,attribute,value, or evaluate "
                       "UTKFace / All-Age-Faces files under their original names.")
            return
        flagged = rows[rows["flag"] != ""]
        for r in flagged.itertuples(index=False):
            st.warning(f"{r.attribute} {r.group} ({r.label} photos): {r.flag} ({r.rate_name} {r.rate:.1%}, "
                       f"95% CI {r.ci95_low:.1%}-{r.ci95_high:.1%}; overall {r.overall_rate:.1%}).",
                       icon=":material/groups:")
        table = [{"attribute": r.attribute, "group": r.group, "class": r.label, "images": r.n,
                  "measures": r.rate_name, "rate": r.rate, "95% CI": f"{r.ci95_low:.1%} - {r.ci95_high:.1%}",
                  "overall": r.overall_rate, "mean p(fake)": r.mean_p_fake, "flag": r.flag}
                 for r in rows.itertuples(index=False)]
        st.dataframe(table, hide_index=True, width="stretch", key="eval_groups",
                     column_config={"rate": st.column_config.NumberColumn(format="percent"),
                                    "overall": st.column_config.NumberColumn(format="percent"),
                                    "mean p(fake)": st.column_config.NumberColumn(format="%.3f")})
        st.caption("Real photos: share wrongly called fake; fakes: share detected; 95% Wilson intervals. Overall: "
                   "every photo of the class whose attribute is known. A group is flagged when its whole interval "
                   "lies on the worse side of the overall rate. Small groups have wide intervals: no flag is not "
                   "proof of no difference.")


def _results(ev: dict) -> None:
    result = ev["result"]
    st.subheader("Results")
    st.caption(f"Model **{ev['model_name']}** on {ev['label']} · {len(result.table)} images · "
               f"{result.seconds:.1f} s")
    active = active_model_path()
    if active is not None and model_key(active) != ev["model_key"]:
        st.info("These results are from another model than the active one; press Evaluate again to "
                "measure the active model.")
    left, right = st.columns([3, 2])
    threshold = left.slider("Threshold for these results: p(fake) at or above this is FAKE",
                            min_value=0.0, max_value=1.0, step=state.THRESHOLD_STEP, format="%.4f",
                            key=state.EVAL_THRESHOLD,
                            help="Re-scores the stored results; the model is not run again.")
    s = _summary(ev, threshold)
    kind, sentence = s["separation"]["kind"], s["separation"]["sentence"]  # the package's rule
    advice = s.get("threshold_advice")
    if kind in ("chance", "reversed"):
        right.caption("No threshold is suggested: moving it cannot make these verdicts reliable.")
    elif advice:
        right.markdown(f"Best threshold for balanced accuracy: **{advice['threshold']:g}** "
                       f"({_fmt_pct(advice['balanced_accuracy'])}): {threshold_advice_words(advice)}")
        if 0.01 <= advice["threshold"] <= 0.99:  # the slider's range
            right.button(f"Use {advice['threshold']:g} here", on_click=_use_best, args=(advice["threshold"],),
                         key="eval_use_best",
                         help="Sets the threshold of these evaluation results only; the sidebar threshold "
                              f"that Classify uses stays {float(state.get(state.THRESHOLD)):g}.")
            right.caption(f"Applies to these results only; Classify keeps the sidebar's "
                          f"{float(state.get(state.THRESHOLD)):g}.")
        else:
            right.caption("It lies outside the slider's 0.01 to 0.99.")
    else:
        right.caption("Best threshold: needs both real and fake images.")
    if kind in ("chance", "reversed"):
        st.warning(sentence, icon=":material/block:")
    _cards(s, kind)
    _per_source(s)
    run_page(lambda: _groups(ev, threshold), "the per-group table")
    _charts(ev, s, threshold)
    _failed(ev, s)
    declared = s.get("provenance")
    if declared and declared.get("disagreement_files"):  # named as the user knows them
        declared = {**declared, "disagreement_files": [{**c, "path": _shown(ev, c["path"])}
                                                      for c in declared["disagreement_files"]]}
    provenance_panel.render_counts(declared)
    _downloads(ev, threshold)
    _error_browser(ev, threshold)


def render() -> None:
    st.title("Evaluate on labelled images")
    st.caption("Measure the active model on photos whose true class you know. The model runs once; "
               "the threshold slider then re-scores the stored results instantly.")
    clf = current_classifier()
    if clf is not None:
        sources = SOURCES if not public.is_public() else SOURCES[1:]  # public: uploads only
        if st.session_state.get("eval_source") not in sources:
            st.session_state.pop("eval_source", None)
        source = st.radio("Labelled images from", sources, horizontal=True, key="eval_source")
        if source == SOURCES[0]:
            _source_folder(clf)
        elif source == SOURCES[1]:
            _source_zip(clf)
        else:
            _source_files(clf)
    ev = state.get(state.EVALUATION)
    if ev is None:
        st.info("No evaluation yet. " + LAYOUT_HELP, icon=":material/folder_open:")
        return
    st.divider()
    _results(ev)


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Evaluate page")
