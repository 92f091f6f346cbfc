"""The Streamlit dashboard. Only this sub-package imports streamlit.

`streamlit_app.py` (repository root) is the entry point: it sets the page config, calls `init()`
(session state + sidebar) and runs the page `st.navigation` picks from `pages()`. Each page is a
file `*_page.py` in this folder that Streamlit executes as a script (`__name__ == "__main__"`);
importing it as a module runs nothing. `common.py` and `state.py` are the glue the pages share.
Pages stay files rather than `st.Page(callable)`: AppTest switches pages by file path.
"""

from __future__ import annotations

import streamlit as st

from realitycheck.serving.app import common, state

PAGE_CONFIG = dict(page_title="RealityCheck: real or AI-generated?", page_icon=":material/search:", layout="wide",
                   initial_sidebar_state="expanded")


def pages() -> list:
    """The pages, in menu order; paths are relative to the repository root (the main script's folder)."""
    return [
        st.Page(common.PAGE_CLASSIFY, title="Classify", icon=":material/search:", default=True),
        st.Page(common.PAGE_EVALUATE, title="Evaluate", icon=":material/analytics:", url_path="evaluate"),
        st.Page("realitycheck/serving/app/live_page.py", title="Live camera and video", icon=":material/videocam:",
                url_path="live"),
        st.Page(common.PAGE_HISTORY, title="Session history", icon=":material/history:", url_path="history"),
        st.Page(common.PAGE_CASES, title="Cases", icon=":material/fact_check:", url_path="cases"),
        st.Page(common.PAGE_MODELS, title="Models", icon=":material/neurology:", url_path="models"),
        st.Page(common.PAGE_ABOUT, title="About / How it works", icon=":material/info:", url_path="about"),
    ]


def init() -> None:
    """Session state first, then the sidebar shared by every page (errors there never stop a page)."""
    state.init()
    common.run_page(common.sidebar, "the sidebar")


__all__ = ["PAGE_CONFIG", "pages", "init", "common", "state"]
