"""The dashboard's pages: their files (what `st.page_link` and AppTest name) and the menu `st.navigation` shows.

Paths are relative to the repository root, the main script's folder.
"""

from __future__ import annotations

import streamlit as st

PAGE_CLASSIFY = "realitycheck/serving/app/classify_page.py"
PAGE_EVALUATE = "realitycheck/serving/app/evaluate_page.py"
PAGE_LIVE = "realitycheck/serving/app/live_page.py"
PAGE_HISTORY = "realitycheck/serving/app/history_page.py"
PAGE_CASES = "realitycheck/serving/app/cases_page.py"
PAGE_MODELS = "realitycheck/serving/app/models_page.py"
PAGE_ABOUT = "realitycheck/serving/app/about_page.py"


def pages() -> list:
    """The pages, in menu order."""
    return [
        st.Page(PAGE_CLASSIFY, title="Classify", icon=":material/search:", default=True),
        st.Page(PAGE_EVALUATE, title="Evaluate", icon=":material/analytics:", url_path="evaluate"),
        st.Page(PAGE_LIVE, title="Live camera and video", icon=":material/videocam:", url_path="live"),
        st.Page(PAGE_HISTORY, title="Session history", icon=":material/history:", url_path="history"),
        st.Page(PAGE_CASES, title="Cases", icon=":material/fact_check:", url_path="cases"),
        st.Page(PAGE_MODELS, title="Models", icon=":material/neurology:", url_path="models"),
        st.Page(PAGE_ABOUT, title="About / How it works", icon=":material/info:", url_path="about"),
    ]
