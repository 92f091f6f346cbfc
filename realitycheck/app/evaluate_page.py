"""Evaluate page: run the active model once over labelled images, then explore the results.

The model runs once (`evaluate.evaluate_folder`); the per-image table is kept in the session and
every threshold-dependent number, chart and list is recomputed from it (`metrics.rethreshold`,
`EvaluationResult.summary`), so moving the threshold slider never re-runs the model.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from realitycheck import metrics as M
from realitycheck import plots
from realitycheck.app import common, state

SOURCES = ["Folder or CSV on the server", "Zip file upload", "Image files upload"]
LAYOUT_HELP = (
    "Accepted layouts: a folder with `real/` and `fake/` subfolders (`fake` may also be named `ai`, "
    "`generated` or `synthetic`), the Kaggle 140k layout (`train/valid/test` splits; `test` is used), "
    "or a CSV file with columns `path,label`."
)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def _evaluate(clf, folder: str | Path, label: str, tmp=None, skipped=()) -> None:
    from realitycheck import evaluate
    from realitycheck.data import DataError

    bar = st.progress(0.0, text="Finding labelled images…")

    def tick(done: int, total: int | None) -> None:
        frac = done / total if total else 0.0
        bar.progress(min(1.0, frac), text=f"Classified {done} of {total} images")

    try:
        # workers=0: decode in this process; forking DataLoader workers from the threaded
        # Streamlit server is unsafe, and dashboard-sized sets do not need them.
        stream, recorder = common.case_stream(clf, "dashboard:evaluate", workers=0)  # each verdict becomes a case
        result = evaluate.evaluate_folder(clf, folder, progress=tick, workers=0, predict_stream=stream)
    except DataError as exc:
        bar.empty()
        state.drop_temp_dir(tmp)
        common.show_error(str(exc), details=LAYOUT_HELP)
        return
    bar.empty()
    if recorder is not None and recorder.error is not None:
        common.show_error(f"Not recorded in the case database: {recorder.error}")
    previous = state.get(state.EVALUATION)
    if previous and previous.get("tmp") is not None and previous.get("tmp") is not tmp:
        state.drop_temp_dir(previous["tmp"])
    state.put(state.EVALUATION, {
        "id": uuid.uuid4().hex, "result": result, "label": label, "curves": M.curves_from_table(result.table),
        "model_name": clf.name, "model_path": str(clf.path) if clf.path else None,
        "model_key": common.classifier_key(clf),
        "tmp": tmp, "skipped": list(skipped), "memo": {},
    })
    state.put(state.EVAL_THRESHOLD, float(state.get(state.THRESHOLD)))
    st.toast(f"Evaluated {len(result.table)} images in {result.seconds:.1f} s")


def _source_folder(clf) -> None:
    from realitycheck import access
    from realitycheck.app import public
    from realitycheck.data import DataError

    if public.is_public():  # never reached from the menu in public mode; refuse if it ever is
        common.show_error("Server paths are turned off on this public deployment: upload files instead.")
        return
    with st.form("eval_folder_form", border=False):
        path = st.text_input("Folder or CSV path on the server", key="eval_path",
                             placeholder=common.LABELLED_PLACEHOLDER, help=LAYOUT_HELP)
        go = st.form_submit_button("Evaluate", type="primary")
    if go:
        if not path.strip():
            st.warning("Enter a folder or CSV path first.")
            return
        try:  # only under the allowed roots; every file a CSV lists is checked too
            source = access.checked_labelled_source(path.strip(), public.settings())
        except (access.PathRefused, DataError) as exc:
            common.show_error(str(exc), details=LAYOUT_HELP)
            return
        _evaluate(clf, source, label=path.strip())


def _source_zip(clf) -> None:
    try:
        from realitycheck import uploads
    except ImportError:
        st.info("Zip upload is not available in this installation (the `realitycheck.uploads` module is "
                "missing). Extract the zip on the server and enter its folder path instead.")
        return
    with st.form("eval_zip_form", border=False):
        up = st.file_uploader("A zip holding real/ and fake/ folders", type=["zip"], key="eval_zip")
        go = st.form_submit_button("Evaluate", type="primary")
    if not go:
        return
    if up is None:
        st.warning("Choose a zip file first.")
        return
    data = up.getvalue()
    over = common.accept_upload(data, up.name)
    if over:
        common.show_error(over)
        return
    tmp = state.session_temp_dir("realitycheck-eval-")
    try:
        with st.spinner("Unpacking the zip…"):
            folder, skipped = uploads.extract_labelled_zip(data, tmp.name)
    except uploads.UploadError as exc:
        state.drop_temp_dir(tmp)
        common.show_error(str(exc), details=LAYOUT_HELP)
        return
    _evaluate(clf, folder, label=up.name, tmp=tmp, skipped=skipped)


def _source_files(clf) -> None:
    st.caption("Put each batch in the box for its true class; both classes are needed for ROC-AUC.")
    with st.form("eval_files_form", border=False):
        c1, c2 = st.columns(2)
        real = c1.file_uploader("Real photos (true class: real)", type=common.IMAGE_TYPES,
                                accept_multiple_files=True, key="eval_files_real")
        fake = c2.file_uploader("AI-generated photos (true class: fake)", type=common.IMAGE_TYPES,
                                accept_multiple_files=True, key="eval_files_fake")
        go = st.form_submit_button("Evaluate", type="primary")
    if not go:
        return
    if not real and not fake:
        st.warning("Add images to at least one of the two boxes first.")
        return
    from realitycheck import uploads

    by_label = {"real": [], "fake": []}
    for label, files in (("real", real or []), ("fake", fake or [])):
        for f in files:
            data = f.getvalue()
            over = common.accept_upload(data, f.name)
            if over:
                common.show_error(over)
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


def _slider_value(value: float) -> float:
    """A threshold as the slider can hold it (0.01 to 0.99 in steps of state.THRESHOLD_STEP)."""
    step = state.THRESHOLD_STEP
    return float(min(0.99, max(0.01, round(round(value / step) * step, 4))))


def _use_best(value: float) -> None:
    st.session_state[state.EVAL_THRESHOLD] = _slider_value(value)


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
    return getattr(ev.get("tmp"), "name", None)


def _failed(ev: dict, s: dict) -> None:
    from realitycheck.app import public

    reasons = {public.shown_path(p, _root(ev)): public.safe(r) for p, r in (s.get("failed_reasons") or {}).items()}
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
    from realitycheck.images import ImageError, load_image

    t = M.rethreshold(ev["result"].table, threshold)
    wrong = t[t["correct"].eq(False).fillna(False).astype(bool)]
    st.subheader("Mistakes at this threshold")
    if wrong.empty:
        st.success("No misclassified images at this threshold.")
        return
    st.caption(f"{len(wrong)} misclassified images. Pick one to see it with its Grad-CAM heatmap.")
    view = wrong[["path", "true_label", "predicted", "p_fake", "faces"]].drop_duplicates("path").copy()
    view["p_fake"] = pd.to_numeric(view["p_fake"], errors="coerce")
    from realitycheck.app import public

    shown = view.assign(path=[public.shown_path(p, _root(ev)) for p in view["path"]])  # public: no server folders
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"p_fake": st.column_config.NumberColumn("p(fake)", format="%.3f")})
    paths = view["path"].astype(str).tolist()
    # Keyed by the run: a second evaluation gets a fresh picker instead of the old run's choice.
    choice = st.selectbox("Show", paths, format_func=lambda p: Path(p).name, key=f"eval_error_pick_{ev['id']}")
    if choice not in paths:
        return
    row = view[view["path"].astype(str) == choice].iloc[0]
    try:
        img = load_image(choice).image
    except ImageError as exc:
        common.show_error(str(exc))
        return
    clf = _eval_classifier(ev)
    st.markdown(f"**{Path(choice).name}**: true class **{row['true_label']}**, "
                + common.verdict_html(str(row["predicted"]), float(row["p_fake"])), unsafe_allow_html=True)
    if clf is None:
        st.image(img, width=320, caption=f"true {row['true_label']}, predicted {row['predicted']}")
        st.info("The model that produced these results is no longer available, so no heatmap.")
        return
    with st.spinner("Computing the Grad-CAM heatmap…"):
        exp = common.explanation(clf, ("eval", choice), img, "gradcam", target_class=str(row["predicted"]))
    # One picture: the panel's left half is the image itself, so it is not shown a second time.
    st.image(exp.panel(), width="stretch",
             caption=f"Left: the {exp.region} the model saw. Right: Grad-CAM evidence for "
                     f"'{exp.target_class}' (red = strong, blue = weak).")
    st.markdown(f"**Where:** {exp.where(img)}")
    if exp.faithfulness is not None:
        st.caption(common.faithfulness_words(exp.faithfulness))


def _eval_classifier(ev: dict):
    path = ev.get("model_path")
    if not path or not Path(path).is_file():
        return None
    try:
        return common.get_classifier(Path(path))
    except Exception:  # noqa: BLE001 - a heatmap is optional here
        return None


def _downloads(ev: dict, threshold: float) -> None:
    from realitycheck.app import public

    shown = public.shown_result(ev["result"], _root(ev))  # public mode: no server folders in downloads
    t = M.rethreshold(shown.table, threshold)
    csv = t.reindex(columns=M.TABLE_COLUMNS + ["provenance"]).to_csv(index=False).encode("utf-8")
    c1, c2 = st.columns(2)
    c1.download_button("Download results (CSV)", data=csv, file_name="realitycheck-results.csv",
                       mime="text/csv", key="eval_dl_csv")
    clf = _eval_classifier(ev)
    if clf is None:
        c2.caption("HTML report: needs the model that produced these results.")
        return
    result = shown

    def report() -> bytes:
        from realitycheck import evaluate

        with tempfile.TemporaryDirectory(prefix="realitycheck-report-") as d:
            out = evaluate.write_report(Path(d) / "report.html", clf, result, threshold=threshold,
                                        image_root=_root(ev))
            return out.read_bytes()

    c2.download_button("Download report (HTML)", data=report, file_name="realitycheck-report.html",
                       mime="text/html", key="eval_dl_html",
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


def _results(ev: dict) -> None:
    result = ev["result"]
    st.subheader("Results")
    st.caption(f"Model **{ev['model_name']}** on {ev['label']} · {len(result.table)} images · "
               f"{result.seconds:.1f} s")
    active = common.active_model_path()
    if active is not None and common.model_key(active) != ev["model_key"]:
        st.info("These results are from another model than the active one; press Evaluate again to "
                "measure the active model.")
    left, right = st.columns([3, 2])
    threshold = left.slider("Threshold for these results: p(fake) at or above this is FAKE",
                            min_value=0.01, max_value=0.99, step=state.THRESHOLD_STEP, format="%.4f",
                            key=state.EVAL_THRESHOLD,
                            help="Re-scores the stored results; the model is not run again.")
    s = _summary(ev, threshold)
    kind, sentence = M.separation(s)
    best = s.get("best_threshold_balanced_accuracy") or {}
    if kind in ("chance", "reversed"):
        right.caption("No threshold is suggested: moving it cannot make these verdicts reliable.")
    elif best.get("threshold") is not None:
        t_use = _slider_value(best["threshold"])
        at_best = _summary(ev, t_use)  # the rates at the value "Use it" sets, never a bare threshold
        right.markdown(f"Best threshold for balanced accuracy: **{t_use:.2f}** "
                       f"({_fmt_pct(at_best.get('balanced_accuracy'))}): at it, **{_fmt_pct(at_best.get('fpr'))}** "
                       f"of real photos are flagged (false alarms) and **{_fmt_pct(at_best.get('fnr'))}** of fakes "
                       "are missed.")
        right.button("Use it", on_click=_use_best, args=(t_use,), key="eval_use_best")
    else:
        right.caption("Best threshold: needs both real and fake images.")
    if kind in ("chance", "reversed"):
        st.warning(sentence, icon=":material/block:")
    _cards(s, kind)
    _per_source(s)
    _charts(ev, s, threshold)
    _failed(ev, s)
    from realitycheck.app import provenance_panel

    provenance_panel.render_counts(s.get("provenance"))
    _downloads(ev, threshold)
    _error_browser(ev, threshold)


def render() -> None:
    st.title("Evaluate on labelled images")
    st.caption("Measure the active model on photos whose true class you know. The model runs once; "
               "the threshold slider then re-scores the stored results instantly.")
    from realitycheck.app import public

    clf = common.current_classifier()
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
    common.run_page(render, "the Evaluate page")
