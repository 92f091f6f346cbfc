"""Classify page: upload face photos (or click an example), get a verdict and a Grad-CAM heatmap.

Predictions are cached in the session by (model, file hash), explanations by (model, file hash,
method): moving the opacity slider or switching the CAM method never re-runs the classifier and
never loses the results shown.

`realitycheck.explain` is imported inside the functions that draw heatmaps: it loads pytorch-grad-cam
(about 1.7 s here), which the page's first view (no results yet) does not need.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from realitycheck.analysis.face_table import (
    deciding_face_caveat,
    face_rows,
    verdict_caveat,
)
from realitycheck.intake import provenance
from realitycheck.intake.examples import PLAIN, outcome, outcome_words
from realitycheck.intake.faces import draw_faces
from realitycheck.model.attribution import generator_words
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import verdict
from realitycheck.model.ood import UNFAMILIAR_MESSAGE, UNFAMILIAR_PLAIN
from realitycheck.serving.app import provenance_panel, public, state
from realitycheck.serving.app.display import (
    duration_words,
    thumbnail_data_url,
    verdict_html,
    verdict_meaning,
)
from realitycheck.serving.app.errors import run_page, show_error
from realitycheck.serving.app.explanations import (
    explanation,
    faithfulness_words,
    has_explanation,
    where_words,
)
from realitycheck.serving.app.gallery import examples
from realitycheck.serving.app.inputs import IMAGE_TYPES, accept_upload, sha256
from realitycheck.serving.app.model_cache import classifier_key, current_classifier
from realitycheck.serving.app.predictions import classify

MAX_FILES_PER_SUBMIT = state.MAX_CACHED_PREDICTIONS


def _methods(allow_slow: bool) -> list[str]:
    from realitycheck import explain as X  # lazy: see the module docstring

    fast = [m for m in X.METHODS if m not in X.SLOW_METHODS]
    slow = [m for m in X.METHODS if m in X.SLOW_METHODS]
    return fast + (slow if allow_slow else [])


def _guidance(demo: bool) -> None:
    text = ("**Works best with** clear, reasonably large faces, like a portrait or profile photo. Each face "
            "the detector finds is judged on its own (the image takes its most suspicious face); with no "
            "face found, the centre of the picture is judged, less reliably.")
    if demo:
        st.markdown(text)
    else:
        st.info(text + " Group photos, tiny faces, side views and heavy filters make the verdict unreliable.",
                icon=":material/lightbulb:")


def _example_verdicts(clf, items) -> dict:
    """Every example's Prediction under this model, computed once per session and model (server images:
    not counted against the session's rate limit, not logged in its history)."""
    store = state.get(state.EXAMPLE_VERDICTS)
    mkey = classifier_key(clf)
    if mkey not in store:
        with st.spinner("Classifying the examples…"):
            paths = [str(p) for p, _ in items]
            store.clear()  # one model's verdicts at a time
            store[mkey] = dict(zip(paths, clf.predict(paths, [p.name for p, _ in items])))
    return store[mkey]


def _examples(clf, demo: bool) -> None:
    items = examples()
    if not items:
        st.caption("No example images found (sample_images/ is empty).")
        return
    # demo mode shows each example's verdict up front, right or wrong: a gallery of hits only would oversell
    verdicts = _example_verdicts(clf, items) if demo and clf is not None else {}
    threshold = float(state.get(state.THRESHOLD))
    per_row = 6 if not demo else 5
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (i, (path, label)) in zip(cols, enumerate(items[start:start + per_row], start=start)):
            with col:
                st.image(str(path), width="stretch")
                truth = PLAIN.get(label, "unknown") if demo else label
                st.caption(f"{path.name}  \n{'actually' if demo else 'true class:'} **{truth or 'unknown'}**")
                pred = verdicts.get(str(path))
                if pred is not None and pred.ok:
                    said = verdict(pred.p_fake, threshold)
                    words = outcome_words(label, said)
                    if outcome(label, said) in ("missed", "false alarm"):
                        st.markdown(f":red[**{words}**]")
                    else:
                        st.markdown(f"**{words}**")
                if st.button("Classify this", key=f"example_{i}", disabled=clf is None, width="stretch"):
                    state.put(state.CLASSIFY_ERRORS, [])
                    state.put(state.CLASSIFY_NOTES, [])
                    _run(clf, [(path.name, path.read_bytes())], source=f"example ({label})", truth=label)


def _run(clf, items: list[tuple[str, bytes]], source: str, truth: str | None = None) -> None:
    with st.spinner(f"Classifying {len(items)} image{'s' if len(items) != 1 else ''}…"):
        keys = classify(clf, items, source, truth=truth)
    state.put(state.CURRENT, keys)


def _upload_form(clf) -> None:
    with st.form("classify_form", clear_on_submit=False, border=True):
        files = st.file_uploader(
            "Face photos: drag and drop, or click to browse",
            type=IMAGE_TYPES, accept_multiple_files=True, key="classify_files",
            help="JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF; up to 50 MB each.",
        )
        submitted = st.form_submit_button("Classify", type="primary")
    if not submitted:
        return
    if not files:
        st.warning("Choose at least one image first, then press Classify.")
        return
    errors, notes, items, first_name = [], [], [], {}
    if len(files) > MAX_FILES_PER_SUBMIT:
        errors.append(f"{len(files)} files submitted: only the first {MAX_FILES_PER_SUBMIT} are classified here; "
                      "use the Evaluate page for whole folders.")
        files = files[:MAX_FILES_PER_SUBMIT]
    for f in files:
        data = f.getvalue()
        h = sha256(data)
        if h in first_name:  # the uploader appends, so the same file is easily added twice
            same = "was added more than once" if f.name == first_name[h] else f"is the same file as {first_name[h]}"
            notes.append(f"{f.name} {same}: classified and shown once.")
            continue
        first_name[h] = f.name
        over = accept_upload(data, f.name)
        if over:
            errors.append(over)
        else:
            items.append((f.name, data))
    state.put(state.CLASSIFY_ERRORS, errors)
    state.put(state.CLASSIFY_NOTES, list(dict.fromkeys(notes)))
    if items:
        _run(clf, items, source="upload")
    else:
        state.put(state.CURRENT, [])


EVIDENCE_OPTIONS = ["verdict", "fake", "real"]  # "verdict": the class of each image's verdict
EVIDENCE_WORDS = {  # how the choice is shown: analysts get the class, demo mode plain words
    False: {"verdict": "the verdict's class", "fake": "fake (AI-generated)", "real": "real"},
    True: {"verdict": "what supports the verdict", "fake": "what looks generated", "real": "what looks real"},
}


def _evidence_choice(demo: bool, container) -> str:
    words = EVIDENCE_WORDS[demo]
    container.radio("Show evidence for" if not demo else "Show me", EVIDENCE_OPTIONS, key=state.EVIDENCE,
                    format_func=words.get, horizontal=True,
                    help="Which class the heatmap explains. Asking for the other class than the verdict "
                         "answers 'why might this be fake?' about a photo judged real, and the reverse.")
    return state.get(state.EVIDENCE)


def _settings(demo: bool) -> tuple[str, float, str]:
    """CAM method, opacity, evidence class (and the slow-method opt-in); demo mode: only the evidence."""
    from realitycheck import explain as X  # lazy: see the module docstring

    if demo:
        return X.DEFAULT_METHOD, state.DEFAULTS[state.OPACITY], _evidence_choice(True, st)
    c1, c2, c3, c4 = st.columns([1.6, 1.6, 2.4, 1.1])
    allow_slow = public.settings().slow_methods and c4.checkbox(
        "Slow methods", key=state.SLOW_OK,
        help="ScoreCAM and AblationCAM: one forward pass per feature channel, "
             "about a minute or more per image on this CPU.")
    options = _methods(allow_slow)
    if state.get(state.METHOD) not in options:
        state.put(state.METHOD, X.DEFAULT_METHOD)
    c1.selectbox("Heatmap method", options, key=state.METHOD,
                 help="Grad-CAM is the standard; the others are variants. Slow ones need the checkbox.")
    c2.slider("Heatmap opacity", 0.0, 1.0, step=0.05, key=state.OPACITY)
    evidence = _evidence_choice(False, c3)
    return state.get(state.METHOD), float(state.get(state.OPACITY)), evidence


def _target(evidence: str, pred) -> str:
    """The class the heatmap explains: the verdict's (at the current threshold) unless one is chosen."""
    return pred.label if evidence == "verdict" else evidence


def _faces(pred, key) -> int | None:
    """The face check; for several faces a table of them and the face to explain (None: the deciding one)."""
    if pred.faces is None:
        st.caption(":material/face: face check unavailable")
    elif pred.faces == 0:
        st.warning(f"No face found: {pred.face_message.split(':', 1)[-1].strip()}", icon=":material/face:")
    else:
        st.caption(f":material/face: {pred.face_message}")
        if len(pred.face_p_fake) > 1 and pred.image is not None:
            return _face_table(pred, key)
    return None


def _face_table(pred, key) -> int:
    """Each face with its number, size, p_fake and flags; the user picks the face the heatmap explains."""
    rows = face_rows(pred)
    st.image(draw_faces(pred.image, pred.face_boxes, is_fake(pred.face_p_fake, pred.threshold)),
             caption="Faces by number (red: judged fake, green: real); the image takes its most suspicious face",
             width="stretch")
    st.dataframe([{"face": r["face"], "size": r["size"], "p(fake)": r["p_fake"], "verdict": r["verdict"],
                   "unfamiliar": {True: "yes", False: "no", None: "n/a"}[r["unfamiliar"]],
                   "small or blurred": ", ".join(w for w in ("small", "blurred") if r[w]) or "no",
                   "decides": "yes" if r["deciding"] else ""} for r in rows],
                 hide_index=True, width="stretch", key=f"faces_{key[1]}",
                 column_config={"p(fake)": st.column_config.NumberColumn(format="percent")})
    caveat = deciding_face_caveat(rows)
    if caveat:
        st.warning(caveat, icon=":material/blur_on:")
    deciding = next(r["face"] for r in rows if r["deciding"])
    chosen = st.selectbox("Explain face", [r["face"] for r in rows], index=deciding - 1, key=f"face_pick_{key[1]}",
                          format_func=lambda n: f"face {n}" + (" (decides the verdict)" if n == deciding else ""))
    return int(chosen) - 1


def _heatmap(clf, key, rec, pred, method: str, opacity: float, demo: bool, evidence: str,
             face: int | None = None) -> None:
    from realitycheck import explain as X  # lazy: see the module docstring
    h = key[1]
    slow = method in X.SLOW_METHODS
    if slow and not public.settings().slow_methods:
        method, slow = X.DEFAULT_METHOD, False  # a planted session value cannot start minutes of CPU
    target = _target(evidence, pred)
    if face is not None and face == pred.deciding_face:
        face = None  # the deciding face: the explanation every other view of this image shares
    cached = has_explanation(clf, h, method, target, face)
    if slow and not cached:
        est = X.explainer_for(clf).estimate_seconds(method)
        st.warning(f"{method} is slow: {duration_words(est)} for this image on this machine.",
                   icon=":material/hourglass_top:")
        if not st.button(f"Compute the {method} heatmap", key=f"slow_{h}_{method}"):
            return
        bar = st.progress(0.0, text=f"{method}: starting…")

        def tick(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=f"{method}: {done}/{total} batches")

        exp = explanation(clf, h, pred.image, method, progress=tick, target_class=target, face=face, deciding_face=pred.deciding_face)
        bar.empty()
    elif not cached:
        with st.spinner(f"Computing the {method} heatmap…"):
            exp = explanation(clf, h, pred.image, method, target_class=target, face=face, deciding_face=pred.deciding_face)
    else:
        exp = explanation(clf, h, pred.image, method, target_class=target, face=face, deciding_face=pred.deciding_face)
    panel = exp.panel(opacity=opacity)
    if demo:
        look = "generated" if exp.target_class == "fake" else "real"
        caption = f"Left: the part of the photo the model saw. Right: what looks {look} to the model (red = most)."
    else:
        caption = (f"Left: the {exp.region} the model saw. Right: {method} evidence for '{exp.target_class}'"
                   f"{' (the verdict)' if exp.target_class == pred.label else ' (not the verdict)'}"
                   " - red = strong, blue = weak.")
    st.image(panel, width="stretch", caption=caption)
    words = where_words(exp, pred)
    if demo:
        st.markdown(f"**What the model looked at:** {words}")
        return
    st.markdown(f"**Where:** {words}")
    for note in exp.notes:
        st.caption(f":material/info: {note}")
    if exp.faithfulness is not None:
        f = exp.faithfulness
        st.markdown(f"**Does the heatmap matter to the model?** {faithfulness_words(f)}",
                    help=f"Technically: {f.meaning} (ROAD imputation; score {f.score * 100:+.0f} percentage points.)")
    stem = Path(rec["name"]).stem
    caption = f"{rec['name']}: {pred.label.upper()} p(fake) {pred.p_fake:.1%} ({method})"
    st.download_button("Download heatmap (PNG)", data=lambda: _png(exp, opacity, caption),
                       file_name=f"{stem}-{method}.png", mime="image/png", key=f"dl_{h}_{method}",
                       on_click="ignore")  # no rerun: the deferred PNG stays registered for the next click


def _png(exp, opacity, caption) -> bytes:
    from realitycheck import explain as X  # lazy: see the module docstring

    return X.to_png_bytes(exp.panel(opacity=opacity, caption=caption, max_side=None))


def _result(clf, key, rec, threshold: float, method: str, opacity: float, demo: bool, evidence: str) -> None:
    pred = rec["pred"].at_threshold(threshold)
    if not pred.ok:
        show_error(pred.error)
        return
    with st.container(border=True):
        left, right = st.columns([1, 1.6] if not demo else [1, 2])
        with left:
            st.markdown(f"**{rec['name']}**")
            caveat = verdict_caveat(pred)
            st.markdown(verdict_html(pred.label, pred.p_fake, "large" if demo else "normal", caveat),
                        unsafe_allow_html=True)
            if rec.get("truth"):  # an example: its true class is known, so say whether the model got it right
                words = outcome_words(rec["truth"], pred.label)
                (st.warning if outcome(rec["truth"], pred.label) in ("missed", "false alarm") else st.success)(
                    words, icon=":material/fact_check:")
            st.caption(f":material/percent: {verdict_meaning(clf, pred.label, threshold)}")
            if not demo:
                st.caption(f"Verdict: {pred.label.upper()}{' (unreliable)' if caveat else ''} "
                           f"(threshold {threshold:.4g})")
                c1, c2 = st.columns(2)
                c1.metric("p(fake)", f"{pred.p_fake:.1%}", help="The model's probability that the photo is AI-generated.")
                c2.metric("p(real)", f"{pred.p_real:.1%}")
                c1.metric("Time", f"{pred.seconds * 1000:.0f} ms",
                          help="Decoding, face check and the model's forward pass for this image.")
                c2.metric("Faces found", "n/a" if pred.faces is None else f"{pred.faces}")
            if pred.label == "fake" and pred.generator:
                st.markdown(f":material/factory: **{generator_words(pred.generator)}**",
                            help="Which generator family this fake resembles most (a second head of the model, "
                                 "trained on the families in its training data; never part of p_fake).")
            if pred.unfamiliar:
                st.warning(UNFAMILIAR_PLAIN if demo else
                           f"{UNFAMILIAR_MESSAGE[0].upper()}{UNFAMILIAR_MESSAGE[1:]} (score {pred.ood_score:.2f}, "
                           f"threshold {clf.ood.threshold:.2f}).", icon=":material/help:")
            face = _faces(pred, key)
            for note in pred.notes:
                st.caption(f":material/info: {note}")
            provenance_panel.render(rec.get("provenance"), pred.label, demo)
        with right:
            if pred.image is None:
                st.caption("No image kept for the heatmap.")
            else:
                run_page(lambda: _heatmap(clf, key, rec, pred, method, opacity, demo, evidence, face),
                                "the heatmap")


def _compare(clf, keys: list, opacity: float, threshold: float, evidence: str) -> None:
    from realitycheck import explain as X  # lazy: see the module docstring

    good = [k for k in keys if k in state.get(state.PREDICTIONS) and state.get(state.PREDICTIONS)[k]["pred"].ok]
    if not good:
        return
    preds = state.get(state.PREDICTIONS)
    with st.expander("Compare heatmap methods on one image"):
        key = good[0] if len(good) == 1 else st.selectbox(
            "Image", good, format_func=lambda k: preds[k]["name"], key="compare_image")
        methods = [m for m in X.METHODS if m not in X.SLOW_METHODS]
        rec = preds[key]
        target = _target(evidence, rec["pred"].at_threshold(threshold))
        missing = [m for m in methods if not has_explanation(clf, key[1], m, target)]
        if missing:
            # measured on this machine (timed forwards of this model), not a promise
            est = sum(X.explainer_for(clf).estimate_seconds(m) for m in missing)
            label = f"Compute {len(missing)} more methods ({duration_words(est)} in all on this machine)"
            if st.button(label, key="compare_run"):
                bar = st.progress(0.0)
                for i, m in enumerate(missing):
                    bar.progress(i / len(missing), text=f"{m}…")
                    explanation(clf, key[1], rec["pred"].image, m, target_class=target, deciding_face=rec["pred"].deciding_face)
                bar.empty()
        done = [m for m in methods if has_explanation(clf, key[1], m, target)]
        if not done:
            st.caption("No heatmaps computed for this image yet.")
            return
        st.caption(f"Evidence for '{target}' by each method.")
        cols = st.columns(3)
        for i, m in enumerate(done):
            exp = explanation(clf, key[1], rec["pred"].image, m, target_class=target, deciding_face=rec["pred"].deciding_face)
            with cols[i % 3]:
                st.image(exp.overlay(opacity), width="stretch", caption=m)
                if exp.faithfulness is not None:
                    st.caption(faithfulness_words(exp.faithfulness))


def _summary_table(keys: list, threshold: float, demo: bool) -> None:
    """Several images: one sortable row each (click a column header to sort) before the cards, with the
    flags each card shows; files that could not be read are counted in the heading and listed apart."""
    rows, failed = [], []
    for key in keys:
        rec = state.get(state.PREDICTIONS)[key]
        pred = rec["pred"].at_threshold(threshold)
        if not pred.ok:
            failed.append(rec["name"])
            continue
        prov = rec.get("provenance")
        rows.append({
            "image": thumbnail_data_url(pred.image) if pred.image is not None else None,
            "name": rec["name"],
            "verdict": pred.label.upper() + (" (no face: unreliable)" if verdict_caveat(pred) else ""),
            "p_fake": pred.p_fake,
            "faces": pred.faces,
            "unfamiliar": {True: "yes", False: "no", None: "n/a"}[pred.unfamiliar],
            "declares": provenance.KIND_WORDS[prov.kind] if prov is not None and prov.kind != "none" else "",
            "disagrees": "yes" if prov is not None and provenance.disagreement(prov, pred.label) else "",
            "ms": pred.seconds * 1000,
        })
    n_fake = sum(r["verdict"].startswith("FAKE") for r in rows)
    n_real = len(rows) - n_fake
    n = len(rows) + len(failed)
    st.subheader(f"{n} images: {n_fake} {'look' if demo else 'judged'} AI-generated, {n_real} real"
                 + (f", {len(failed)} could not be read" if failed else ""))
    if rows:
        st.dataframe(
            pd.DataFrame(rows), hide_index=True, width="stretch", key="classify_summary",
            column_config={
                "image": st.column_config.ImageColumn("image", width="small"),
                "verdict": st.column_config.TextColumn("verdict"),
                "p_fake": st.column_config.ProgressColumn("likely AI-generated" if demo else "p(fake)", min_value=0.0,
                                                          max_value=1.0, format="percent"),
                "faces": st.column_config.NumberColumn("faces found", format="%d"),
                "unfamiliar": st.column_config.TextColumn("unfamiliar", help="Outside what the model was trained on: "
                                                          "the verdict is unreliable (n/a: the model has no such check)."),
                "declares": st.column_config.TextColumn("file declares", help="What the file's own metadata says; "
                                                        "not part of p(fake)."),
                "disagrees": st.column_config.TextColumn("declaration disagrees", help="The file's declaration and "
                                                         "the model's verdict point different ways."),
                "ms": st.column_config.NumberColumn("time", format="%.0f ms"),
            },
        )
    if failed:
        st.caption("Could not be read (see below): " + ", ".join(failed))
    st.caption("Each photo's details and what the model looked at follow." if demo else
               f"Verdicts at threshold {threshold:.4g}. The details and heatmap of each image follow.")


def render() -> None:
    demo = bool(state.get(state.DEMO))
    st.title("Real or AI-generated?" if demo else "Classify face photos")
    clf = current_classifier()
    _guidance(demo)
    if clf is None:
        with st.expander("Example images (classifying needs trained weights)"):
            _examples(None, demo)
        return
    if demo:
        st.subheader("Try an example: one click")
        _examples(clf, demo)
        _upload_form(clf)
    else:
        _upload_form(clf)
        with st.expander("Examples: one click classifies an image", expanded=not state.get(state.CURRENT)):
            _examples(clf, demo)
    for msg in state.get(state.CLASSIFY_ERRORS):
        show_error(msg)
    for msg in state.get(state.CLASSIFY_NOTES):
        st.caption(f":material/content_copy: {msg}")
    mkey = classifier_key(clf)
    # One card per distinct image: every widget key below is derived from the image's hash.
    shown = [k for k in dict.fromkeys(state.get(state.CURRENT)) if k in state.get(state.PREDICTIONS)]
    keys = [k for k in shown if k[0] == mkey]
    if len(keys) < len(shown):
        st.info("The active model has changed since these images were classified: press Classify again "
                "(or click an example) to see the new model's verdicts.", icon=":material/sync:")
    if not keys:
        st.caption("Results appear here. Every image you classify is also listed on the Session history page.")
        return
    st.divider()
    threshold = float(state.get(state.THRESHOLD))
    if len(keys) > 1:
        _summary_table(keys, threshold, demo)
    method, opacity, evidence = _settings(demo)
    for key in keys:
        _result(clf, key, state.get(state.PREDICTIONS)[key], threshold, method, opacity, demo, evidence)
    if not demo:
        _compare(clf, keys, opacity, threshold, evidence)


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Classify page")
