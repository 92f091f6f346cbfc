"""Cases page: every judged image kept in the case database, for review.

Filter and sort the cases, open one (image, heatmap on demand, every judgement of it), set its
true label with a note, delete it, export the table. All of it is `realitycheck.analysis.cases`; this page
only renders. On a public deployment nothing is listed here: anyone may open the page, and the cases are
other people's images (the operator reviews them with the CLI or a local dashboard).
"""

from __future__ import annotations

import base64
import io

import pandas as pd
import streamlit as st

from realitycheck.analysis import cases
from realitycheck.intake.images import ImageError, load_image
from realitycheck.serving import access
from realitycheck.serving.app import public, state
from realitycheck.serving.app.case_log import case_store
from realitycheck.serving.app.errors import run_page, show_error
from realitycheck.serving.app.explanations import explanation
from realitycheck.serving.app.inputs import LABELLED_PLACEHOLDER
from realitycheck.serving.app.model_cache import current_classifier
from realitycheck.serving.app.navigation import PAGE_CLASSIFY

FILTERS = {  # checkbox key -> (label, cases.CaseStore.cases keyword)
    "cases_unreviewed": ("Unreviewed", "unreviewed"),
    "cases_disagreements": ("Model and analyst disagree", "disagreements"),
    "cases_unfamiliar": ("Unfamiliar", "unfamiliar"),
    "cases_declared_ai": ("File declares AI, model said real", "declared_ai_said_real"),
}
SORTS = {"last seen (newest first)": ("last_seen", True), "p(fake), highest first": ("p_fake", True),
         "p(fake), lowest first": ("p_fake", False), "most judgements": ("judgements", True), "name": ("name", False)}


def _data_url(jpeg: bytes | None) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii") if jpeg else None


def _filters(store) -> dict:
    cols = st.columns(len(FILTERS))
    chosen = {kw: col.checkbox(label, key=key) for col, (key, (label, kw)) in zip(cols, FILTERS.items())}
    c1, c2, c3 = st.columns([1.2, 1.6, 1.4])
    models = sorted(m for m in store.cases()["model_id"].dropna().unique())
    model = c1.selectbox("Model", ["any model", *models], key="cases_model",
                         help="The model of each case's latest judgement.")
    dates = c2.date_input("Last seen between", value=(), key="cases_dates",
                          help="Leave empty for every date.")
    sort = c3.selectbox("Sort", list(SORTS), key="cases_sort")
    out = {**chosen, "model": None if model == "any model" else model}
    if isinstance(dates, (tuple, list)) and len(dates) == 2:
        out["since"], out["until"] = str(dates[0]), str(dates[1])
    out["sort"], out["descending"] = SORTS[sort]
    return out


def _table(df: pd.DataFrame) -> None:
    view = pd.DataFrame({
        "image": [_data_url(t) for t in df["thumbnail"]],
        "case": df["sha256"].str[:12],
        "name": df["name"],
        "last seen": pd.to_datetime(df["last_seen"]),
        "verdict": df["verdict"].str.upper(),
        "p_fake": df["p_fake"],
        "unfamiliar": df["unfamiliar"],
        "true label": df["true_label"].fillna(""),
        "judgements": df["judgements"],
        "model": df["model_id"],
    })
    st.dataframe(view, hide_index=True, width="stretch", key="cases_table", column_config={
        "image": st.column_config.ImageColumn("image", width="small"),
        "p_fake": st.column_config.ProgressColumn("p(fake)", min_value=0.0, max_value=1.0, format="percent"),
        "last seen": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm"),
        "unfamiliar": st.column_config.CheckboxColumn("unfamiliar"),
    })


def _heatmap(store, case: dict) -> None:
    path = case.get("image_path")
    if not path:
        st.caption("No heatmap: this deployment did not keep a copy of the image.")
        return
    if not st.button("Show the heatmap (current model)", key=f"case_cam_{case['sha256'][:16]}"):
        return
    clf = current_classifier()
    if clf is None:
        return
    try:
        image = load_image(path).image
    except ImageError as exc:
        show_error(f"The stored image cannot be read: {exc}")
        return
    with st.spinner("Computing the heatmap…"):
        exp = explanation(clf, case["sha256"], image, "gradcam")
    st.image(exp.panel(opacity=0.45), width="stretch",
             caption=f"Grad-CAM of {clf.name}: evidence for '{exp.target_class}' (red = strong)")


def _label_form(store, case: dict) -> None:
    sha = case["sha256"]
    with st.form(f"case_label_{sha[:16]}", border=True):
        current = case.get("true_label")
        label = st.radio("True label", ["real", "fake"], horizontal=True, key=f"case_label_value_{sha[:16]}",
                         index=None if current is None else ["real", "fake"].index(current))
        generator = st.text_input("Generator (fakes, if known)", value=case.get("true_generator") or "",
                                  key=f"case_label_generator_{sha[:16]}")
        note = st.text_input("Note", value=case.get("note") or "", key=f"case_label_note_{sha[:16]}")
        if st.form_submit_button("Save label", type="primary"):
            if label is None:
                st.warning("Choose real or fake first.")
            else:
                store.label(sha, label, generator=generator.strip() or None, note=note.strip() or None)
                state.get(state.FLASH).append(f"Case {sha[:12]} labelled {label}.")
                st.rerun()


def _open_case(store, df: pd.DataFrame) -> None:
    options = list(df["sha256"])
    names = dict(zip(df["sha256"], df["name"]))
    chosen = state.get(state.CASE_OPEN)
    idx = options.index(chosen) if chosen in options else None
    sha = st.selectbox("Open a case", options, index=idx, key="cases_open_select",
                       format_func=lambda h: f"{names.get(h) or '(no name)'} · {h[:12]}",
                       placeholder="Choose a case to review")
    state.put(state.CASE_OPEN, sha)
    if sha is None:
        return
    case = store.case(sha)
    with st.container(border=True):
        left, right = st.columns([1, 1.6])
        with left:
            if case.get("image_path"):
                st.image(case["image_path"], width="stretch")
            elif case.get("thumbnail"):
                st.image(case["thumbnail"], caption="thumbnail (the image itself was not kept)")
            st.markdown(f"**{case['name'] or '(no name)'}**  \n`{sha[:16]}…`")
            truth = case["true_label"] or "not reviewed"
            st.caption(f"True label: **{truth}**" + (f" ({case['true_generator']})" if case["true_generator"] else "")
                       + (f" · note: {case['note']}" if case["note"] else "")
                       + f" · {'holdout' if case['holdout'] else 'training'} share for `learn`")
            _heatmap(store, case)
        with right:
            rows = [{"time": j["at"], "from": j["origin"], "model": j["model_id"], "verdict": (j["verdict"] or "").upper(),
                     "p_fake": j["p_fake"], "threshold": j["threshold"], "unfamiliar": j["unfamiliar"],
                     "declares": j["provenance_kind"] or ""} for j in case["judgements"]]
            st.markdown(f"**Judgements ({len(rows)})**")
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="case_judgements", column_config={
                "p_fake": st.column_config.ProgressColumn("p(fake)", min_value=0.0, max_value=1.0, format="percent"),
                "time": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss")})
            _label_form(store, case)
            c1, c2 = st.columns([1.3, 1])
            sure = c1.checkbox("Delete this case for good (image, thumbnail, judgements)", key="case_delete_sure")
            if c2.button("Delete case", key="case_delete", disabled=not sure):
                store.delete(sha)
                state.put(state.CASE_OPEN, None)
                state.get(state.FLASH).append(f"Case {sha[:12]} deleted: its image, thumbnail and judgements are gone.")
                st.rerun()


def _bulk_label(store) -> None:
    if public.is_public():
        return
    with st.expander("Label many cases from a labelled folder"):
        folder = st.text_input("Folder with real/ and fake/ (or a CSV of path,label)",
                               placeholder=LABELLED_PLACEHOLDER, key="cases_bulk_folder")
        if st.button("Label the matching cases", key="cases_bulk_run") and folder:
            try:
                path = access.check_path(folder, public.settings(), want="any")
                counts = store.bulk_label(path, note="from a labelled folder")
            except (access.PathRefused, ValueError) as exc:
                show_error(str(exc))
                return
            st.success(f"Labelled {counts['labelled']} cases; {counts['not_a_case']} files there were never judged.")


def _export(df: pd.DataFrame) -> None:
    table = df.drop(columns=["thumbnail"])
    c1, c2 = st.columns(2)
    c1.download_button("Export these cases (CSV)", data=table.to_csv(index=False).encode("utf-8"),
                       file_name="realitycheck-cases.csv", mime="text/csv", key="cases_csv")
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    c2.download_button("Export these cases (Parquet)", data=buf.getvalue(), file_name="realitycheck-cases.parquet",
                       mime="application/vnd.apache.parquet", key="cases_parquet")


def render() -> None:
    st.title("Cases")
    s = cases.settings(public.is_public())
    if not s.enabled:
        st.info(f"The case database is off on this deployment ({s.reason}).", icon=":material/database:")
        return
    if public.is_public():  # anyone can open a public page: other people's images are never shown to them
        st.info("Verdicts given here are recorded for this deployment's operator, who reviews them "
                "(`realitycheck cases`, or a local dashboard on the same database). They are not shown on this page.",
                icon=":material/lock:")
        return
    st.caption("Every verdict given on the Classify page (and by `realitycheck predict --log` / `evaluate --log`) "
               "is kept here: review it, set the true label, and `realitycheck learn` can learn from your corrections."
               + ("" if s.store_images else " This deployment keeps thumbnails only, not the images."))
    for msg in state.get(state.FLASH):
        st.success(msg, icon=":material/check:")
    state.put(state.FLASH, [])
    try:
        store = case_store()
        opts = _filters(store)
        df = store.cases(**opts, thumbnails=True)
        total = store.count()
    except cases.CaseStoreError as exc:
        show_error(str(exc))
        return
    if not total:
        st.info("No cases yet: classify a photo on the Classify page and it is kept here.", icon=":material/fact_check:")
        st.page_link(PAGE_CLASSIFY, label="Go to the Classify page", icon=":material/search:")
        return
    reviewed = int(df["true_label"].notna().sum())
    c = st.columns(3)
    c[0].metric("Cases shown", f"{len(df)} of {total}")
    c[1].metric("Reviewed", f"{reviewed}")
    c[2].metric("Disagreements", f"{int((df['true_label'].notna() & (df['true_label'] != df['verdict'])).sum())}")
    if df.empty:
        st.info("No case matches these filters.", icon=":material/filter_alt:")
        return
    _table(df)
    try:
        _open_case(store, df)
    except (cases.CaseStoreError, cases.CaseNotFound) as exc:
        show_error(str(exc))
    _bulk_label(store)
    _export(df)


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Cases page")
