"""The Streamlit dashboard. Only this sub-package imports streamlit.

`streamlit_app.py` (repository root) is the entry point: it sets the page config, calls `init()`
(session state + sidebar) and runs the page `st.navigation` picks from `pages()`. Each page is a
file `*_page.py` in this folder that Streamlit executes as a script (`__name__ == "__main__"`);
importing it as a module runs nothing. Pages stay files rather than `st.Page(callable)`: AppTest
switches pages by file path.

The glue the pages share, one concern a module: `state` (session state, initialised in one place),
`navigation` (the pages' files and the menu), `errors` (one line, never a traceback), `model_cache`
(the active model, one cached Classifier per checkpoint version), `sidebar`, `inputs` (upload types and
budget, zips), `predictions` (classifying with per-session caching and history), `case_log` (the case
database), `explanations` (heatmaps cached per session), `display` (verdicts and numbers in words),
`gallery` (the example images) and `public` (the deployment's access settings).
"""

from __future__ import annotations

from realitycheck.serving.app import state
from realitycheck.serving.app.errors import run_page
from realitycheck.serving.app.navigation import pages
from realitycheck.serving.app.sidebar import sidebar

PAGE_CONFIG = dict(page_title="RealityCheck: real or AI-generated?", page_icon=":material/search:", layout="wide",
                   initial_sidebar_state="expanded")


def init() -> None:
    """Session state first, then the sidebar shared by every page (errors there never stop a page)."""
    state.init()
    run_page(sidebar, "the sidebar")


__all__ = ["PAGE_CONFIG", "pages", "init", "state"]
