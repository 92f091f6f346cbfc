"""Models page: the checkpoints available, their cards, which one is active, loading and comparing.

A checkpoint loaded here (uploaded or by server path) is validated by actually loading it
(`checkpoints.load_checkpoint` through the cached `inference.load_classifier`); it is added to this
session's list only, never to the shared weights folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from realitycheck.analysis import evaluate, plots
from realitycheck.intake.data import DataError
from realitycheck.intake.uploads import safe_file_name
from realitycheck.model import checkpoints, inference
from realitycheck.model.checkpoints import CheckpointError
from realitycheck.serving import access
from realitycheck.serving.app import public, state, versions_panel
from realitycheck.serving.app.errors import one_line, run_page, show_error
from realitycheck.serving.app.inputs import (
    LABELLED_PLACEHOLDER,
    accept_upload,
    unpack_zip_upload,
)
from realitycheck.serving.app.model_cache import (
    active_model_path,
    available_models,
    card_of,
    get_classifier,
)

RADIO_KEY = "models_active_radio"
COMPARE_COLUMNS = [
    ("accuracy", "accuracy", True), ("balanced_accuracy", "balanced accuracy", True),
    ("roc_auc", "ROC-AUC", False), ("average_precision", "average precision", False),
    ("precision_fake", "precision (fake)", True), ("recall_fake", "recall (fake)", True),
    ("f1_fake", "F1 (fake)", True), ("fpr", "false-alarm rate (real)", True), ("eer", "equal error rate", True),
]


def _label(path: Path) -> str:
    try:
        card = card_of(path)
        return f"{card.name} ({path.name})"
    except CheckpointError:
        return f"{path.name} (unreadable)"


def _select_active() -> None:
    st.session_state[state.ACTIVE_MODEL] = st.session_state[RADIO_KEY]


def _list(paths: list[Path]) -> None:
    st.subheader("Available models")
    if not paths:
        st.warning("No checkpoints found. Train one (`realitycheck train`) or load one below.", icon=":material/warning:")
        if not public.is_public():
            st.caption(f"Weights folder: `{inference.weights_dir()}`")
        return
    active = active_model_path()
    options = [str(p) for p in paths]
    current = str(active) if active is not None and str(active) in options else options[0]
    if st.session_state.get(RADIO_KEY) != current:
        st.session_state[RADIO_KEY] = current
    st.radio("Active model (used by every page of this session)", options, key=RADIO_KEY,
             format_func=lambda p: _label(Path(p)), on_change=_select_active)
    for p in paths:
        mark = " · active" if str(p) == current else ""
        with st.expander(f"Model card: {_label(p)}{mark}"):
            try:
                card = card_of(p)
            except CheckpointError as exc:
                show_error(str(exc))
                continue
            st.markdown(checkpoints.card_markdown(card, p.name))
            if not public.is_public():
                st.caption(f"Path: `{p}`")


def _named(text: str, path: Path, what: str, uploaded: bool) -> str:
    """A message about `path` naming an uploaded file by its own name, never its temporary server path."""
    if not uploaded:
        return text
    for p in sorted({str(path), str(path.resolve()), str(path.parent), str(path.parent.resolve())}, key=len,
                    reverse=True):
        text = text.replace(p, what if p.endswith(path.name) else "the upload")
    return text


def _adopt(path: Path, what: str, uploaded: bool = False) -> None:
    """Validate by loading; on success add to this session's models and make it active."""
    try:
        with st.spinner(f"Loading and checking {what}…"):
            clf = get_classifier(path)
    except CheckpointError as exc:
        show_error(_named(str(exc), path, what, uploaded),
                          details="Expected a RealityCheck checkpoint (.pt) or the original "
                                  "project's RealityCheck.pth (a ResNet50 state_dict).")
        return
    except Exception as exc:  # noqa: BLE001 - a user's file must never end the page
        show_error(f"{what if uploaded else path.name}: could not be loaded "
                          f"({_named(one_line(exc), path, what, uploaded)})",
                          details=_named(f"{type(exc).__name__}: {exc}", path, what, uploaded))
        return
    extra = state.get(state.EXTRA_MODELS)
    if str(path) not in extra:
        extra.append(str(path))
    state.put(state.ACTIVE_MODEL, str(path))
    # Rerun so the sidebar and the list show the new model; the message survives the rerun.
    state.get(state.FLASH).append(f"Loaded **{clf.name}** ({clf.arch}) and made it the active model.")
    st.rerun()


def _load() -> None:
    settings = public.settings()
    if not settings.server_paths and not settings.allow_checkpoint_upload:
        return  # public mode: the server's own models only
    st.subheader("Load a checkpoint")
    tabs = (["Upload a file"] if settings.allow_checkpoint_upload else []) + (
        ["Path on the server"] if settings.server_paths else [])
    shown = dict(zip(tabs, st.tabs(tabs)))
    if "Upload a file" in shown:
        _load_upload(shown["Upload a file"])
    if "Path on the server" in shown:
        _load_path(shown["Path on the server"])


def _load_upload(tab_up) -> None:
    with tab_up:
        st.caption("A RealityCheck `.pt` checkpoint or a bare state_dict (`.pt`/`.pth`), up to 50 MB. "
                   "The original project's RealityCheck.pth is about 100 MB: load it by server path.")
        with st.form("model_upload_form", border=False):
            up = st.file_uploader("Checkpoint file", type=["pt", "pth"], key="model_upload")
            go = st.form_submit_button("Load uploaded checkpoint")
        if go:
            if up is None:
                st.warning("Choose a checkpoint file first.")
            else:
                data = up.getvalue()
                over = accept_upload(data, up.name)
                if over:
                    show_error(over)
                else:
                    tmp = state.session_temp_dir("realitycheck-model-")
                    name = safe_file_name(up.name, "checkpoint.pt")
                    target = Path(tmp.name) / name
                    target.write_bytes(data)
                    _adopt(target, up.name, uploaded=True)  # reruns on success
                    state.drop_temp_dir(tmp)


def _load_path(tab_path) -> None:
    with tab_path:
        with st.form("model_path_form", border=False):
            path = st.text_input("Checkpoint path on the server", key="model_path",
                                 placeholder="/data/models/RealityCheck.pth")
            go = st.form_submit_button("Load from path")
        if go:
            if not path.strip():
                st.warning("Enter a path first.")
            else:
                try:  # only under the allowed roots, never a device or a link out of them
                    p = access.check_path(path.strip(), public.settings(), want="file")
                except access.PathRefused as exc:
                    show_error(str(exc))
                else:
                    _adopt(p, p.name)


def _compare(paths: list[Path]) -> None:
    st.subheader("Compare two models")
    if public.is_public():
        st.caption("Comparing models on a labelled folder of the server is turned off on this public deployment.")
        return
    if len(paths) < 2:
        st.info("Comparing needs two models: load another checkpoint above.", icon=":material/balance:")
        _show_comparison()
        return
    options = [str(p) for p in paths]
    with st.form("compare_form", border=False):
        c1, c2 = st.columns(2)
        a = c1.selectbox("Model A", options, index=0, format_func=lambda p: _label(Path(p)), key="compare_a")
        b = c2.selectbox("Model B", options, index=1, format_func=lambda p: _label(Path(p)), key="compare_b")
        folder = st.text_input("Labelled folder or CSV on the server", key="compare_folder",
                               placeholder=LABELLED_PLACEHOLDER)
        up = st.file_uploader("…or a zip holding real/ and fake/ folders", type=["zip"], key="compare_zip")
        one = st.checkbox("Score both at one common threshold (default: each model at its own card's threshold)",
                          key="compare_common")
        common_t = st.number_input("Common threshold", min_value=0.0, max_value=1.0, step=0.01, format="%.4f",
                                   value=float(state.get(state.THRESHOLD)), key="compare_common_threshold")
        go = st.form_submit_button("Compare", type="primary")
    if go:
        threshold = float(common_t) if one else None
        if a == b:
            st.warning("Choose two different models.")
        elif up is not None:
            _compare_zip([Path(a), Path(b)], up, threshold)
        elif not folder.strip():
            st.warning("Enter a labelled folder or CSV path, or upload a zip, first.")
        else:
            try:  # only under the allowed roots; every file a CSV lists is checked too
                source = access.checked_labelled_source(folder.strip(), public.settings())
            except (access.PathRefused, DataError) as exc:
                show_error(str(exc))
            else:
                _run_comparison([Path(a), Path(b)], source, folder.strip(), threshold)
    _show_comparison()


def _compare_zip(paths: list[Path], up, threshold: float | None) -> None:
    """The Evaluate page's zip route for the comparison: checked, unpacked into this session's folder."""
    unpacked = unpack_zip_upload(up, "realitycheck-compare-")
    if unpacked is None:
        return
    folder, _skipped, tmp = unpacked
    _run_comparison(paths, folder, up.name, threshold)
    state.drop_temp_dir(tmp)  # the comparison keeps numbers and curves only


def _run_comparison(paths: list[Path], folder, label: str, threshold: float | None = None) -> None:
    try:
        classifiers = {_label(p): get_classifier(p) for p in paths}
    except CheckpointError as exc:
        show_error(str(exc))
        return
    names = list(classifiers)
    bar = st.progress(0.0, text="Starting…")

    def tick(name: str, done: int, total: int) -> None:
        frac = (names.index(name) + (done / total if total else 0)) / len(names)
        bar.progress(min(1.0, frac), text=f"{name}: {done} of {total} images")

    try:
        comparison = evaluate.compare_models(classifiers, folder, threshold=threshold, progress=tick, workers=0)
    except DataError as exc:
        show_error(str(exc))
        return
    finally:
        bar.empty()
    comparison["folder"] = label
    state.put(state.COMPARISON, comparison)


def _show_comparison() -> None:
    comp = state.get(state.COMPARISON)
    if not comp:
        return
    st.caption(f"On {comp['folder']}: {comparison_thresholds_words(comp)}")
    st.dataframe(comparison_frame(comp["rows"]), width="stretch", key="compare_table")
    # one chart per row: side by side, long model names in the legends squeezed the plots
    st.plotly_chart(plots.roc_fig(comp["curves"]), key="compare_roc")
    st.plotly_chart(plots.pr_fig(comp["curves"]), key="compare_pr")


def comparison_thresholds_words(comp: dict) -> str:
    """Which threshold each column was scored at, said plainly."""
    if comp.get("threshold") is not None:
        return (f"both models at one common threshold, {comp['threshold']:g} (chosen by you, not by either "
                "model's card)")
    each = ", ".join(f"{name} {t:g}" for name, t in (comp.get("thresholds") or {}).items())
    return f"each model at its own card's threshold ({each})"


def comparison_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per measure, one column per model: long model names become column headers
    instead of a wide table cut off at the right."""
    def fmt(v, pct: bool) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "n/a"
        return f"{v:.1%}" if pct else f"{v:.3f}"

    table = {}
    for r in rows:
        col = {"threshold": f"{r['threshold']:g}" if r.get("threshold") is not None else "n/a"}
        col.update({label: fmt(r.get(k), pct) for k, label, pct in COMPARE_COLUMNS})
        col["images scored"] = f"{r.get('images') or 0}"
        col["failed"] = f"{r.get('failed') or 0}"
        col["time"] = f"{r.get('seconds', 0):.1f} s"
        name = r["model"]
        while name in table:  # two files may carry the same card name
            name += " (2)"
        table[name] = col
    return pd.DataFrame(table)


def render() -> None:
    st.title("Models")
    st.caption("Choose the model this session uses, read its model card, load your own checkpoint, "
               "or compare two models on the same labelled images.")
    for msg in state.get(state.FLASH):
        st.success(msg)
    state.get(state.FLASH).clear()
    paths = available_models()
    _list(paths)
    versions_panel.render()
    _load()
    _compare(available_models())


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Models page")
