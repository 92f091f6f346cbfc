"""What every page shares: the cached model, the sidebar, error display, verdict rendering.

Pages only render; every computation is a call into the `realitycheck` package. The few helpers
here are glue: turning package objects into Streamlit elements and caching them per session.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import logging
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from PIL import Image

from realitycheck import REPO_ROOT
from realitycheck.analysis import plots
from realitycheck.model import inference
from realitycheck.model.checkpoints import CheckpointError, ModelCard
from realitycheck.serving.app import state

log = logging.getLogger("realitycheck.serving.app")

SAMPLE_DIR = REPO_ROOT / "sample_images"
SEED_EXAMPLES_DIR = (REPO_ROOT / ".." / "shared" / "data" / "seed-examples").resolve()
# the example must be one the default roots accept: by default only the folder the dashboard runs in
LABELLED_PLACEHOLDER = "a folder with real/ and fake/ inside, e.g. labelled (relative to where the dashboard runs)"
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
COLORS = plots.COLORS
THUMB_PX = 96

PAGE_CLASSIFY = "realitycheck/serving/app/classify_page.py"
PAGE_EVALUATE = "realitycheck/serving/app/evaluate_page.py"
PAGE_HISTORY = "realitycheck/serving/app/history_page.py"
PAGE_MODELS = "realitycheck/serving/app/models_page.py"
PAGE_ABOUT = "realitycheck/serving/app/about_page.py"
PAGE_CASES = "realitycheck/serving/app/cases_page.py"


# ---------------------------------------------------------------------------------------------
# Errors: one clear line, details folded away, never a traceback
# ---------------------------------------------------------------------------------------------

def one_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


def show_error(message: str, details: str | None = None) -> None:
    """`st.error` with one line, plus an expander with the details when there are any.

    In public mode server paths are taken out of both (`access.redact`)."""
    from realitycheck.serving.app import public

    message, details = public.safe(str(message)), public.safe(details) if details else details
    st.error(one_line(message), icon=":material/error:")
    if details and details.strip() and details.strip() != one_line(message):
        with st.expander("Details"):
            st.text(details)


def show_unexpected(exc: BaseException, where: str) -> None:
    """An unexpected failure: logged with its traceback on the server, shown as one line here."""
    log.exception("unexpected error in %s", where)
    show_error(
        f"Something went wrong in {where}: {one_line(exc)}",
        details=f"{type(exc).__name__}: {exc}\n\nThe full report is in the server log. "
                "Reload the page to start over; your session history is kept.",
    )


def run_page(body: Callable[[], None], where: str) -> None:
    """Run a page body; an unexpected exception becomes `show_unexpected` instead of a traceback.

    Streamlit's own control flow (st.rerun, st.stop, st.switch_page) derives from BaseException and
    passes through.
    """
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything a page may raise
        show_unexpected(exc, where)


# ---------------------------------------------------------------------------------------------
# Models: which checkpoint is active, and one cached Classifier per (path, mtime) per process
# ---------------------------------------------------------------------------------------------

def available_models() -> list[Path]:
    """Checkpoints in the weights folder, the default path, and those loaded in this session."""
    from realitycheck.serving import access
    from realitycheck.serving.app import public

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
    from realitycheck.serving import access
    from realitycheck.serving.app import public

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
    from realitycheck.model import checkpoints

    return checkpoints.read_card(path)


def card_of(path: Path) -> ModelCard:
    return _card_of(*checkpoint_version(path))


def no_weights_message() -> None:
    from realitycheck.serving.app import public

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


# ---------------------------------------------------------------------------------------------
# Sidebar
# ---------------------------------------------------------------------------------------------

def training_data_names(card: ModelCard) -> str:
    """The card's training data by folder name ("faces-140k-sample + real-world-faces"): the
    paths are the trainer's machine's, meaningless to someone reading the dashboard."""
    training = card.training or {}
    if training.get("sources"):  # named sources (a manifest): their names say it best
        return ", ".join(training["sources"])
    data = training.get("data")
    sources = (list(data) if isinstance(data, (list, tuple)) else [data]) + list(training.get("extra_real") or [])
    names = [Path(str(s).rstrip("/\\")).name or str(s) for s in sources if s]
    return " + ".join(dict.fromkeys(names))


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.1%}"


def sidebar() -> None:
    """Active model and its card, the decision threshold, demo mode."""
    from realitycheck.serving.app import public

    with st.sidebar:
        public.badge()
        st.toggle("Demo mode", key=state.DEMO,
                  help="Large verdicts and plain-language explanations; hides the settings.")
        path = active_model_path()
        st.subheader("Active model")
        if path is None:
            st.warning("No trained weights: see the Models page.", icon=":material/warning:")
        else:
            try:
                card = card_of(path)
            except CheckpointError as exc:
                st.error(f"{path.name}: cannot be read ({one_line(exc)})")
                card = None
            if card is not None and state.get(state.THRESHOLD_FOR) != str(path):
                # a model's own threshold (chosen on its validation data) until the user moves the slider
                state.put(state.THRESHOLD, float(card.threshold))
                state.put(state.EVAL_THRESHOLD, float(card.threshold))
                state.put(state.THRESHOLD_FOR, str(path))
            if card is not None:
                st.markdown(f"**{card.name}**  \n`{path.name}`")
                if not state.get(state.DEMO):
                    st.caption(f"Architecture: {card.arch}")
                    data = training_data_names(card)
                    st.caption(f"Training data: {data or 'not recorded'}")
                    test = (card.metrics or {}).get("test") or {}
                    if test:
                        c1, c2 = st.columns(2)
                        c1.metric("Test accuracy", _pct(test.get("accuracy")))
                        auc = test.get("roc_auc")
                        c2.metric("Test ROC-AUC", "n/a" if auc is None else f"{auc:.3f}")
                        n = f"{int(test['n'])} " if test.get("n") else ""
                        where = f" of {data}" if data else ""
                        st.caption(f"Measured on {n}held-out test images{where}, never used in training; "
                                   "your photos may differ: measure them on the Evaluate page.")
                    else:
                        st.caption("Test metrics: none recorded in the model card")
        prevalence_control()
        if not state.get(state.DEMO):
            st.subheader("Decision")
            st.slider("Threshold: p(fake) at or above this is FAKE", min_value=0.0, max_value=1.0,
                      step=state.THRESHOLD_STEP, format="%.4f", key=state.THRESHOLD,
                      help="Raise it for fewer false alarms on real photos, lower it to catch more fakes.")


# ---------------------------------------------------------------------------------------------
# What a verdict means at the user's prevalence (the arithmetic is realitycheck.analysis.prevalence)
# ---------------------------------------------------------------------------------------------

PREVALENCE_CHOICES = [0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5]


def prevalence_control() -> None:
    """Sidebar: how common fakes are among the photos checked (shown in demo mode too)."""
    from realitycheck.analysis import prevalence as P

    st.subheader("How common are fakes?" if state.get(state.DEMO) else "Prevalence")
    st.select_slider("Share of AI-generated photos among those you check", options=PREVALENCE_CHOICES,
                     key=state.PREVALENCE, format_func=P.prevalence_words,
                     help="The same verdict means much less when fakes are rare: at 1 in 1,000, most FAKE "
                          "verdicts of a model with 1% false alarms are false alarms. Each verdict then says "
                          "how often a verdict like it is right, from the model's measured rates.")
    path = active_model_path()
    if path is not None:
        try:
            rates = P.rates_from_card(card_of(path))
        except CheckpointError:
            return
        st.caption(P.both_words(P.reliability(rates, float(state.get(state.PREVALENCE)))))


def verdict_meaning(clf: inference.Classifier, label: str, threshold: float) -> str:
    """The sentence beside a verdict: how often it is right at the session's prevalence."""
    from realitycheck.analysis import prevalence as P

    rel = P.reliability(P.rates_from_card(clf.card), float(state.get(state.PREVALENCE)))
    return P.verdict_meaning(rel, label, threshold, plain=bool(state.get(state.DEMO)))


# ---------------------------------------------------------------------------------------------
# Rendering helpers
# ---------------------------------------------------------------------------------------------

def verdict_html(label: str, p_fake: float, size: str = "normal", caveat: str | None = None) -> str:
    """The verdict headline; with a `caveat` (`face_table.verdict_caveat`) it is grey and says it is unreliable."""
    color = COLORS.get(label, plots.NEUTRAL) if not caveat else plots.NEUTRAL
    word = html.escape(label.upper()) + ("?" if caveat else "")
    note = (f'<div style="font-size:1.05rem;font-weight:600;color:#8a5a00">{html.escape(caveat[0].upper() + caveat[1:])}'
            "</div>") if caveat else ""
    if size == "large":
        return (f'<div style="font-size:3.2rem;font-weight:800;color:{color};line-height:1.1">{word}</div>{note}'
                f'<div style="font-size:1.3rem;color:#444">{p_fake:.0%} likely AI-generated · '
                f'{1 - p_fake:.0%} likely real</div>')
    return (f'<span style="font-size:1.6rem;font-weight:700;color:{color}">{word}</span>'
            f'<span style="color:#555"> &nbsp;p(fake) {p_fake:.1%} · p(real) {1 - p_fake:.1%}</span>{note}')


def duration_words(seconds: float) -> str:
    """An estimate in words: "under 1 s" rather than "about 0 s"."""
    return "under 1 s" if seconds < 1 else f"about {seconds:.0f} s"


def plural(n: int, word: str) -> str:
    """ "1 image", "2 images" (words whose plural adds an s)."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def thumbnail_data_url(img: Image.Image, px: int = THUMB_PX) -> str:
    thumb = img.convert("RGB").copy()
    thumb.thumbnail((px, px))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def accept_upload(data: bytes, name: str) -> str | None:
    """Count an upload against the per-session budget; the one-line refusal when it is over.

    The same bytes uploaded again are not counted twice. The rule itself is the package's
    (`uploads.check_upload_size`).
    """
    h = sha256(data)
    seen = state.get(state.SEEN_UPLOADS)
    if h in seen:
        return None
    from realitycheck.serving.app import public

    used = state.get(state.UPLOADED_BYTES)
    budget = public.settings().session_upload_bytes
    per_file = int(st.get_option("server.maxUploadSize")) * 1024 * 1024
    try:
        from realitycheck.intake import uploads
    except ImportError:  # pragma: no cover - the module ships with the package
        uploads = None
    if uploads is not None:
        try:
            total = uploads.check_upload_size(len(data), used, per_file, budget, name=name)
        except uploads.UploadError as exc:
            return str(exc)
    else:
        total = used + len(data)
        if total > budget:
            return f"{name}: this session has reached its upload limit of {budget >> 20} MB"
    seen.add(h)
    state.put(state.UPLOADED_BYTES, total)
    return None


# ---------------------------------------------------------------------------------------------
# Classification glue (package calls + per-session caching)
# ---------------------------------------------------------------------------------------------

def classify(clf: inference.Classifier, items: list[tuple[str, bytes]], source: str,
             truth: str | None = None) -> list[tuple[str, str]]:
    """Predict each (name, bytes), cached per session by (model, file hash); log to the history.

    Returns the keys of the records in order. Bad inputs get a record with `error` set. `truth`: the
    known class of the items (an example), so the result can say whether the verdict is right.
    """
    mkey = classifier_key(clf)
    preds = state.get(state.PREDICTIONS)
    keys, todo = [], []
    for name, data in items:
        key = (mkey, sha256(data))
        keys.append(key)
        if key not in preds:
            todo.append((key, name, data))
    from realitycheck.intake import provenance
    from realitycheck.serving.app import public

    allowed, later = public.allow_classifications(len(todo))
    if later:  # over the session's rate limit: score up to it, say how many are left and when
        state.get(state.CLASSIFY_ERRORS).append(later)
        left = {key for key, _, _ in todo[allowed:]}
        todo = todo[:allowed]
        items = [it for it, key in zip(items, keys) if key not in left]
        keys = [k for k in keys if k not in left]
    if todo:
        results = clf.predict([d for _, _, d in todo], [n for _, n, _ in todo], keep_images=True)
        for (key, name, data), pred in zip(todo, results):
            # what the file declares, kept beside the prediction (never mixed into p_fake)
            state.remember(state.PREDICTIONS, key, {"name": name, "pred": pred, "source": source,
                                                    "bytes": len(data),
                                                    "provenance": provenance.read_provenance(data)},
                           state.MAX_CACHED_PREDICTIONS)
    threshold = float(state.get(state.THRESHOLD))
    record_cases(clf, [(preds[k], name, data) for k, (name, data) in zip(keys, items) if k in preds], threshold, source)
    history = state.get(state.HISTORY)
    fresh = {key for key, _, _ in todo}
    for key, (name, _data) in zip(keys, items):
        rec = preds[key]
        rec["name"] = name  # the same bytes may arrive under another name
        rec["truth"] = truth  # and an example's bytes as an upload, whose truth is unknown
        if key not in fresh:  # already checked (and listed) in this session with this model: one row per image
            continue
        pred = rec["pred"]
        if not pred.ok:
            continue
        label = inference.verdict(pred.p_fake, threshold)
        prov = rec.get("provenance")
        history.append({
            "time": _dt.datetime.now(),
            "name": name,
            "label": label,
            "provenance": provenance.KIND_WORDS[prov.kind] if prov else "",
            "disagreement": (provenance.disagreement(prov, label) or "") if prov else "",
            "p_fake": float(pred.p_fake),
            "unfamiliar": pred.unfamiliar,
            "faces": pred.faces,
            "seconds": float(pred.seconds),
            "threshold": threshold,
            "model": clf.name,
            "source": source,
            "thumbnail": thumbnail_data_url(pred.image) if pred.image is not None else None,
        })
    return keys


def explanation_key(clf: inference.Classifier, key: Any, method: str, target_class: str | None,
                    face: int | None = None) -> tuple:
    """The per-session cache key of a heatmap: model, image, method, the class it explains, the face."""
    return (classifier_key(clf), key, method, target_class) + (() if face is None else (face,))


def unpack_zip_upload(up, prefix: str, details: str | None = None):
    """An uploaded zip of real/ and fake/ folders, counted against the upload budget and unpacked into
    this session's temporary folder: (folder, files skipped, temp dir), or None after showing why not."""
    from realitycheck.intake import uploads

    data = up.getvalue()
    over = accept_upload(data, up.name)
    if over:
        show_error(over)
        return None
    tmp = state.session_temp_dir(prefix)
    try:
        with st.spinner("Unpacking the zip…"):
            folder, skipped = uploads.extract_labelled_zip(data, tmp.name)
    except uploads.UploadError as exc:
        state.drop_temp_dir(tmp)
        show_error(str(exc), details=details)
        return None
    return folder, skipped, tmp


def case_store():
    """This deployment's case database (`cases.settings`: on locally, off in public mode unless configured),
    or None; raises cases.CaseStoreError when it is configured but unusable."""
    from realitycheck.analysis import cases
    from realitycheck.serving.app import public

    return cases.open_store(public.is_public())


def record_cases(clf: inference.Classifier, recs: list[tuple[dict, str, bytes]], threshold: float, source: str) -> None:
    """Every verdict shown becomes a judgement in the case database (at the threshold it was shown at).
    A database failure is one line on the page; the verdicts are shown all the same."""
    from realitycheck.analysis import cases

    try:
        store = case_store()
        if store is None:
            return
        model = cases.model_info(clf)
        for rec, name, data in recs:
            pred = rec["pred"]
            if not pred.ok:
                continue
            prov = rec.get("provenance")
            store.record(pred.at_threshold(threshold).to_dict(), data=data, image=pred.image, name=name,
                         origin=f"dashboard:classify ({source})", session=state.get(state.CASE_SESSION), model=model,
                         provenance=prov.to_dict() if prov is not None else None)
    except cases.CaseStoreError as exc:
        state.get(state.CLASSIFY_ERRORS).append(f"Not recorded in the case database: {exc}")


def case_stream(clf: inference.Classifier, source: str, workers: int = 0):
    """(predict_stream for `evaluate.evaluate_items` that records every judgement, its Recorder), or
    (None, None) when this deployment records nothing. The Recorder keeps a database failure (`.error`)."""
    from realitycheck.analysis import cases
    from realitycheck.serving.app import public

    if not cases.settings(public.is_public()).enabled:
        return None, None
    recorder = cases.Recorder(clf, source=source, session=state.get(state.CASE_SESSION), public=public.is_public())
    return cases.logged(lambda paths, progress: clf.iter_predict(paths, workers=workers, progress=progress),
                        recorder), recorder


def has_explanation(clf: inference.Classifier, key: Any, method: str, target_class: str | None,
                    face: int | None = None) -> bool:
    return explanation_key(clf, key, method, target_class, face) in state.get(state.EXPLANATIONS)


def explanation(clf: inference.Classifier, key: Any, image: Image.Image, method: str,
                progress: Callable[[int, int], None] | None = None, target_class: str | None = None,
                face: int | None = None):
    """Grad-CAM (or another method) of one image for `target_class` (None: the model's argmax),
    cached per session by (model, key, method, class, face); `face` (0-based): that face of an aligned
    model instead of the deciding one."""

    ekey = explanation_key(clf, key, method, target_class, face)
    cache = state.get(state.EXPLANATIONS)
    if ekey in cache:
        return cache[ekey]
    result = clf.explainer.explain([image], method=method, target_class=target_class,
                                   progress=progress or False, face=face)[0]
    state.remember(state.EXPLANATIONS, ekey, result, state.MAX_CACHED_EXPLANATIONS)
    return result


def where_words(exp, pred) -> str:
    """Where the heatmap's evidence lies, relative to the largest face the prediction found and its
    landmarks (`Explanation.where`); relative to the crop when the model saw a face crop."""
    if pred.region == "face crop":
        return exp.where(None)
    return exp.where(pred.image, pred.face_report)


def faithfulness_words(faithfulness) -> str:
    from realitycheck.explain import heatmap_words

    return heatmap_words.faithfulness_words(faithfulness)


def examples() -> list[tuple[Path, str | None]]:
    """Example images: sample_images/ (each file's class from its examples.csv) and the seed examples if present."""
    from realitycheck.intake.examples import load_examples
    from realitycheck.intake.images import is_image_path

    out: list[tuple[Path, str | None]] = [(e.path, e.label) for e in load_examples(SAMPLE_DIR)]
    for label in ("real", "fake"):
        d = SEED_EXAMPLES_DIR / label
        if d.is_dir():
            out += [(p, label) for p in sorted(d.iterdir()) if is_image_path(p)]
    return out
