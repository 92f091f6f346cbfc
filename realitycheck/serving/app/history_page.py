"""Session history page: every image classified in this browser session, in order.

The history lives only in `st.session_state` (see `state.HISTORY`), so two users never see each
other's images, and it is gone when the tab is closed.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from realitycheck.analysis import plots
from realitycheck.analysis.metrics import as_text
from realitycheck.serving.app import state
from realitycheck.serving.app.errors import run_page
from realitycheck.serving.app.navigation import PAGE_CLASSIFY

COLUMNS = ["time", "name", "label", "p_fake", "unfamiliar", "provenance", "faces", "seconds", "threshold", "model", "source",
           "disagreement"]


def history_frame() -> pd.DataFrame:
    rows = state.get(state.HISTORY)
    df = pd.DataFrame(rows, columns=COLUMNS + ["thumbnail"])
    return df


def _clear() -> None:
    state.reset_history()


def _evaluations() -> None:
    """Every evaluation run in this session (Evaluate page), oldest first."""
    runs = state.get(state.EVAL_LOG)
    if not runs:
        return
    st.subheader(f"Evaluations ({len(runs)})")
    st.dataframe(pd.DataFrame(runs), hide_index=True, width="stretch", key="history_evaluations",
                 column_config={"time": st.column_config.DatetimeColumn("time", format="HH:mm:ss"),
                                "accuracy": st.column_config.NumberColumn(format="percent"),
                                "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f"),
                                "threshold": st.column_config.NumberColumn(format="%.4f"),
                                "separation": st.column_config.TextColumn(
                                    "tells classes apart?", help="chance: no better than guessing on that data")})


def render() -> None:
    st.title("Session history")
    st.caption("Every image classified and every evaluation run in this browser session, oldest first. "
               "It is private to this tab and disappears when you close it.")
    df = history_frame()
    _evaluations()
    if df.empty:
        st.info("Nothing classified yet in this session. Classify a photo (or click an example) on the "
                "Classify page and it will be listed here.", icon=":material/history:")
        st.page_link(PAGE_CLASSIFY, label="Go to the Classify page", icon=":material/search:")
        return
    threshold = float(state.get(state.THRESHOLD))
    n_fake = int((df["label"] == "fake").sum())
    c = st.columns(4)
    c[0].metric("Images checked", f"{len(df)} images")
    c[1].metric("Verdict FAKE", f"{n_fake} images")
    c[2].metric("Verdict REAL", f"{len(df) - n_fake} images")
    c[3].metric("Median time", f"{df['seconds'].median() * 1000:.0f} ms")
    st.plotly_chart(plots.confidence_timeline(df, threshold), key="history_timeline")
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.verdict_counts_fig(df), key="history_counts")
    c2.plotly_chart(plots.verdict_histogram(df, threshold), key="history_hist")  # green real, red fake
    st.caption("Verdicts are those given at the time, with the threshold shown in the table.")
    clashes = df[as_text(df["disagreement"]) != ""]
    for _, row in clashes.iterrows():
        st.error(f"**{row['name']}**: {row['disagreement']}", icon=":material/report:")
    view = df[["thumbnail", "time", "name", "label", "p_fake", "unfamiliar", "provenance", "faces", "seconds", "threshold",
               "model"]].copy()
    view["seconds"] = pd.to_numeric(view["seconds"], errors="coerce") * 1000
    st.dataframe(
        view,
        hide_index=True, width="stretch",
        column_config={
            "thumbnail": st.column_config.ImageColumn("image", width="small"),
            "time": st.column_config.DatetimeColumn("time", format="HH:mm:ss"),
            "label": st.column_config.TextColumn("verdict"),
            "provenance": st.column_config.TextColumn("file declares", help="What the file's own metadata says "
                                                      "(C2PA, XMP, generator text, camera EXIF); not part of p(fake)."),
            "p_fake": st.column_config.ProgressColumn("p(fake)", min_value=0.0, max_value=1.0, format="percent"),
            "faces": st.column_config.NumberColumn("faces found", format="%d"),
            "unfamiliar": st.column_config.CheckboxColumn("unfamiliar", help="Outside what the model was trained "
                                                          "on: the verdict is unreliable (empty: the model has no such check)."),
            "seconds": st.column_config.NumberColumn("time (ms)", format="%.0f ms"),
            "threshold": st.column_config.NumberColumn("threshold", format="%.2f"),
        },
    )
    c1, c2 = st.columns(2)
    csv = df[COLUMNS].to_csv(index=False).encode("utf-8")
    c1.download_button("Download history (CSV)", data=csv, file_name="realitycheck-session.csv",
                       mime="text/csv", key="history_csv", on_click="ignore")
    c2.button("Clear session history", on_click=_clear, key="history_clear", type="secondary")


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Session history page")
