"""Which checkpoint is active, and one cached Classifier per (path, mtime) per server process.

The Classifier holds no per-request state, so one instance serves every session; which model a
session uses is its own choice (`state.ACTIVE_MODEL`), checked against the deployment's rules each time.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from realitycheck.model import checkpoints, inference
from realitycheck.model.checkpoints import CheckpointError, ModelCard
from realitycheck.serving import access
from realitycheck.serving.app import public, state
from realitycheck.serving.app.errors import one_line, show_error
from realitycheck.serving.app.navigation import PAGE_MODELS


def available_models() -> list[Path]:
    """Checkpoints in the weights folder, the default path, and those loaded in this session."""
    found: list[Path] = list(inference.list_weights())
    default = inference.default_weights_path()
    # session state could hold any path: only checkpoints in the weights folders, this session's
    # uploads (and, locally, the allowed roots) are ever opened
    settings, own = public.settings(), public.session_dirs()
    extra = [Path(p) for p in state.get(state.EXTRA_MODELS) if access.model_allowed(p, settings, own)]
    for p in [default, *extra]:
        if p.is_file() and all(p.resolve() != q.resolve() for q in found):
            found.append(p)
    return found


def active_model_path() -> Path | None:
    """The session's choice if it still exists, else the default weights, else the first listed."""
    chosen = state.get(state.ACTIVE_MODEL)
    if chosen and access.model_allowed(chosen, public.settings(), public.session_dirs()):
        return Path(chosen)
    default = inference.default_weights_path()
    if default.is_file():
        return default
    listed = inference.list_weights()
    return listed[0] if listed else None


def checkpoint_version(path: Path) -> tuple[str, int]:
    """THE rule for "which model is this": resolved path + modification time, so a checkpoint
    rewritten in place (retrained) is a new model to every cache below and in the session."""
    p = Path(path).resolve()
    return str(p), p.stat().st_mtime_ns


def model_key(path: Path) -> str:
    """`checkpoint_version` as one string, the first part of every per-session cache key."""
    p, mtime = checkpoint_version(path)
    return f"{p}@{mtime}"


def classifier_key(clf: inference.Classifier) -> str:
    """The model key of a loaded Classifier (one built in memory, without a file: its card name)."""
    return model_key(clf.path) if clf.path else clf.name


@st.cache_resource(show_spinner="Loading the model (first use only)…", max_entries=4)
def _load_classifier(path: str, mtime_ns: int) -> inference.Classifier:
    # mtime_ns is part of the cache key only (checkpoint_version).
    # The Classifier holds no per-request state, so one instance serves every session.
    return inference.load_classifier(path)


def get_classifier(path: Path) -> inference.Classifier:
    """The cached Classifier of `path`; raises CheckpointError (not cached) for a bad file."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    return _load_classifier(*checkpoint_version(path))


@st.cache_data(show_spinner=False, max_entries=64)
def _card_of(path: str, mtime_ns: int) -> ModelCard:
    return checkpoints.read_card(path)


def card_of(path: Path) -> ModelCard:
    return _card_of(*checkpoint_version(path))


def no_weights_message() -> None:
    if public.is_public():
        st.warning("**No trained weights are installed on this server**, so nothing can be classified yet.",
                   icon=":material/warning:")
        return
    st.warning(
        "**No trained weights are present**, so nothing can be classified yet (RealityCheck never "
        "guesses with an untrained model).",
        icon=":material/warning:",
    )
    st.info(
        "How to get weights:\n"
        "1. **Train** one on a folder of your labelled photos (`real/` and `fake/` inside): "
        "`realitycheck train LABELLED_FOLDER --out "
        f"weights/{Path(inference.DEFAULT_WEIGHTS_NAME).stem}` (any `.pt` in `{inference.weights_dir()}` is picked up); or\n"
        "2. **Load** a checkpoint on the **Models** page: your own RealityCheck `.pt`, or the original "
        "project's `RealityCheck.pth` (by server path; it is about 100 MB, above the 50 MB upload limit).",
    )
    st.page_link(PAGE_MODELS, label="Go to the Models page", icon=":material/neurology:")


def current_classifier(show_message: bool = True) -> inference.Classifier | None:
    """The active model, or None after telling the user why (no weights / unusable file)."""
    path = active_model_path()
    if path is None:
        if show_message:
            no_weights_message()
        return None
    try:
        return get_classifier(path)
    except CheckpointError as exc:
        if show_message:
            show_error(f"The active model cannot be used: {one_line(exc)}", details=str(exc))
            st.page_link(PAGE_MODELS, label="Choose another model on the Models page", icon=":material/neurology:")
        return None
