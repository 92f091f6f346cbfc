"""Session state of the dashboard, initialised in ONE place.

Everything a browser session remembers lives in `st.session_state` under the keys below, so two
users (two browser tabs) never see each other's images, history or results. Nothing here is
module-global: a module-level value would be shared by every session of the server process.

`init()` runs at the top of every script run (from `streamlit_app.py`), before any widget:

* it fills in the defaults that are missing, and
* it re-assigns the keys of widgets that must keep their value while they are not on screen
  (Streamlit forgets the value of a keyed widget that is not rendered in a run: the threshold
  slider is hidden in demo mode, the CAM method selector lives on one page only).
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

import streamlit as st

# -- what the user chose (bound to widgets of the same key) ----------------------------------------
THRESHOLD = "threshold"  # float: p_fake >= threshold means "fake" (sidebar slider)
DEMO = "demo_mode"  # bool: big verdicts, no settings (sidebar toggle)
METHOD = "cam_method"  # str: explain.METHODS key (Classify page)
OPACITY = "cam_opacity"  # float 0-1: heatmap opacity (Classify page)
SLOW_OK = "allow_slow_methods"  # bool: offer scorecam/ablationcam (Classify page)
EVIDENCE = "cam_evidence"  # "verdict" | "fake" | "real": the class the heatmap explains (Classify page)
EVAL_THRESHOLD = "eval_threshold"  # float: threshold of the Evaluate page (re-thresholds the table)
THRESHOLD_FOR = "threshold_for"  # str | None: the model whose card last set the thresholds
PREVALENCE = "prevalence"  # float 0-1: share of fakes among the photos checked (sidebar), for what a verdict means
EXAMPLE_VERDICTS = "example_verdicts"  # dict[model_key] -> {example path: Prediction}: the demo gallery's verdicts
THRESHOLD_STEP = 0.0001  # holds a card's threshold and a suggested one (4 decimals) exactly

# -- what the session holds ------------------------------------------------------------------------
ACTIVE_MODEL = "active_model"  # str | None: checkpoint path chosen on the Models page (None: default)
EXTRA_MODELS = "extra_models"  # list[str]: checkpoints loaded this session (upload / server path)
HISTORY = "history"  # list[dict]: every image classified in this session, in order
EVAL_LOG = "evaluation_log"  # list[dict]: every evaluation run in this session (what, model, headline numbers)
PREDICTIONS = "predictions"  # dict[(model_key, sha256)] -> record dict (Prediction + image), LRU
EXPLANATIONS = "explanations"  # dict[(model_key, sha256 | path, method, class)] -> explain.Explanation, LRU
CURRENT = "classify_current"  # list[(model_key, sha256)]: results shown on the Classify page
CLASSIFY_ERRORS = "classify_errors"  # list[str]: one-line messages of the last submit
CLASSIFY_NOTES = "classify_notes"  # list[str]: remarks on the last submit (a file added twice)
UPLOADED_BYTES = "uploaded_bytes"  # int: bytes accepted from uploads this session (cap below)
SEEN_UPLOADS = "seen_uploads"  # set[str]: sha256 of uploads already counted
EVALUATION = "evaluation"  # dict | None: last Evaluate-page run (EvaluationResult, curves, temp dir)
COMPARISON = "model_comparison"  # dict | None: last two-model comparison (Models page)
TEMP_DIRS = "temp_dirs"  # list[TemporaryDirectory]: removed when the session is garbage-collected
FLASH = "flash"  # list[str]: success messages to show once after a rerun
CASE_SESSION = "case_session"  # str: this session's id in the case database (random, names no one)
CASE_OPEN = "case_open"  # str | None: sha256 of the case opened on the Cases page

DEFAULTS: dict[str, Any] = {
    THRESHOLD: 0.5,
    DEMO: False,
    METHOD: "gradcam",
    OPACITY: 0.45,
    SLOW_OK: False,
    EVIDENCE: "verdict",
    EVAL_THRESHOLD: 0.5,
    ACTIVE_MODEL: None,
    THRESHOLD_FOR: None,
    PREVALENCE: 0.01,
}

# Widget-bound keys that must survive runs in which their widget is not drawn.
PERSISTENT_WIDGET_KEYS = (THRESHOLD, DEMO, METHOD, OPACITY, SLOW_OK, EVIDENCE, EVAL_THRESHOLD, PREVALENCE)

# Per-session caps: uploads are held in memory and on disk for the session's lifetime.
# (the per-session upload budget is a deployment setting: access.AccessSettings.session_upload_bytes)
MAX_CACHED_PREDICTIONS = 40  # decoded images kept for re-rendering heatmaps
MAX_CACHED_EXPLANATIONS = 80


def _fresh(key: str) -> Any:
    """A new mutable default (never shared between sessions)."""
    return {
        EXTRA_MODELS: list, HISTORY: list, EVAL_LOG: list, PREDICTIONS: dict, EXPLANATIONS: dict, CURRENT: list,
        CLASSIFY_ERRORS: list, CLASSIFY_NOTES: list, SEEN_UPLOADS: set, TEMP_DIRS: list, FLASH: list,
        EXAMPLE_VERDICTS: dict,
        CASE_SESSION: lambda: uuid.uuid4().hex[:12],
    }[key]()


MUTABLE_KEYS = (EXTRA_MODELS, HISTORY, EVAL_LOG, PREDICTIONS, EXPLANATIONS, CURRENT, CLASSIFY_ERRORS, CLASSIFY_NOTES,
                SEEN_UPLOADS, TEMP_DIRS, FLASH, EXAMPLE_VERDICTS, CASE_SESSION)


def init() -> None:
    """Create every session key that is missing; keep hidden widgets' values. Idempotent."""
    ss = st.session_state
    for key, value in DEFAULTS.items():
        if key not in ss:
            ss[key] = value
    for key in MUTABLE_KEYS:
        if key not in ss:
            ss[key] = _fresh(key)
    for key in (UPLOADED_BYTES,):
        if key not in ss:
            ss[key] = 0
    for key in (EVALUATION, COMPARISON, CASE_OPEN):
        if key not in ss:
            ss[key] = None
    for key in PERSISTENT_WIDGET_KEYS:
        # Re-assigning detaches the value from the widget's lifetime (Streamlit's documented way
        # to keep a widget's value across pages and runs in which the widget is not rendered).
        ss[key] = ss[key]


def get(key: str) -> Any:
    return st.session_state[key]


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def remember(store_key: str, key: Any, value: Any, limit: int) -> None:
    """Insert into a per-session dict cache, dropping the oldest entries beyond `limit`."""
    store: dict = st.session_state[store_key]
    store.pop(key, None)
    store[key] = value
    while len(store) > limit:
        store.pop(next(iter(store)))


def reset_history() -> None:
    st.session_state[HISTORY] = []


def session_temp_dir(prefix: str = "realitycheck-"):
    """A temporary folder owned by this session; deleted when the session object is collected."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    st.session_state[TEMP_DIRS].append(tmp)
    return tmp


def drop_temp_dir(tmp) -> None:
    if tmp is None:
        return
    dirs = st.session_state[TEMP_DIRS]
    if tmp in dirs:
        dirs.remove(tmp)
    tmp.cleanup()
