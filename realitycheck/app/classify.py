"""Classify page: upload face photos (or click an example), get a verdict and a Grad-CAM heatmap.

Predictions are cached in the session by (model, file hash), explanations by (model, file hash,
method): moving the opacity slider or switching the CAM method never re-runs the classifier and
never loses the results shown.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from realitycheck.app import common, state

MAX_FILES_PER_SUBMIT = state.MAX_CACHED_PREDICTIONS


def _methods(allow_slow: bool) -> list[str]:
    from realitycheck import explain as X

    fast = [m for m in X.METHODS if m not in X.SLOW_METHODS]
    slow = [m for m in X.METHODS if m in X.SLOW_METHODS]
    return fast + (slow if allow_slow else [])


def _guidance(demo: bool) -> None:
    text = ("**Works best with** clear, prominent, frontal faces, **one face per image**, like a passport "
            "or profile photo. The model looks at the centre square of the picture.")
    if demo:
        st.markdown(text)
    else:
        st.info(text + " Group photos, tiny faces, side views and heavy filters make the verdict unreliable.",
                icon=":material/lightbulb:")


def _examples(clf, demo: bool) -> None:
    items = common.examples()
    if not items:
        st.caption("No example images found (sample_images/ is empty).")
        return
    per_row = 6 if not demo else 5
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (i, (path, label)) in zip(cols, enumerate(items[start:start + per_row], start=start)):
            with col:
                st.image(str(path), width="stretch")
                st.caption(f"{path.name}  \ntrue class: **{label or 'unknown'}**")
                if st.button("Classify this", key=f"example_{i}", disabled=clf is None, width="stretch"):
                    _run(clf, [(path.name, path.read_bytes())], source=f"example ({label})")


def _run(clf, items: list[tuple[str, bytes]], source: str) -> None:
    with st.spinner(f"Classifying {len(items)} image{'s' if len(items) != 1 else ''}…"):
        keys = common.classify(clf, items, source)
    state.put(state.CURRENT, keys)


def _upload_form(clf) -> None:
    with st.form("classify_form", clear_on_submit=False, border=True):
        files = st.file_uploader(
            "Face photos: drag and drop, or click to browse",
            type=common.IMAGE_TYPES, accept_multiple_files=True, key="classify_files",
            help="JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF; up to 50 MB each.",
        )
        submitted = st.form_submit_button("Classify", type="primary")
    if not submitted:
        return
    if not files:
        st.warning("Choose at least one image first, then press Classify.")
        return
    errors, items = [], []
    if len(files) > MAX_FILES_PER_SUBMIT:
        errors.append(f"{len(files)} files submitted: only the first {MAX_FILES_PER_SUBMIT} are classified here; "
                      "use the Evaluate page for whole folders.")
        files = files[:MAX_FILES_PER_SUBMIT]
    for f in files:
        data = f.getvalue()
        over = common.accept_upload(data, f.name)
        if over:
            errors.append(over)
        else:
            items.append((f.name, data))
    state.put(state.CLASSIFY_ERRORS, errors)
    if items:
        _run(clf, items, source="upload")
    else:
        state.put(state.CURRENT, [])


def _settings() -> tuple[str, float]:
    """CAM method, opacity (and the slow-method opt-in); demo mode uses the defaults."""
    from realitycheck import explain as X

    if state.get(state.DEMO):
        return X.DEFAULT_METHOD, state.DEFAULTS[state.OPACITY]
    from realitycheck.app import public

    c1, c2, c3 = st.columns([2, 2, 1.4])
    allow_slow = public.settings().slow_methods and c3.checkbox(
        "Slow methods", key=state.SLOW_OK,
        help="ScoreCAM and AblationCAM: one forward pass per feature channel, about a minute or more per image on this CPU.")
    options = _methods(allow_slow)
    if state.get(state.METHOD) not in options:
        state.put(state.METHOD, X.DEFAULT_METHOD)
    c1.selectbox("Heatmap method", options, key=state.METHOD,
                 help="Grad-CAM is the standard; the others are variants. Slow ones need the checkbox.")
    c2.slider("Heatmap opacity", 0.0, 1.0, step=0.05, key=state.OPACITY)
    return state.get(state.METHOD), float(state.get(state.OPACITY))


def _faces(pred) -> None:
    if pred.faces is None:
        st.caption(":material/face: face check unavailable")
    elif pred.faces == 0:
        st.warning(f"No face found: {pred.face_message.split(':', 1)[-1].strip()}", icon=":material/face:")
    else:
        st.caption(f":material/face: {pred.face_message}")


def _heatmap(clf, key, rec, pred, method: str, opacity: float, demo: bool) -> None:
    from realitycheck import explain as X

    from realitycheck.app import public

    h = key[1]
    slow = method in X.SLOW_METHODS
    if slow and not public.settings().slow_methods:
        method, slow = X.DEFAULT_METHOD, False  # a planted session value cannot start minutes of CPU
    ekey = (common.model_key(clf.path) if clf.path else clf.name, h, method)
    cached = ekey in state.get(state.EXPLANATIONS)
    if slow and not cached:
        est = X.estimate_seconds(method, clf.model, clf.card)
        st.warning(f"{method} is slow: about {est:.0f} s for this image on this machine.", icon=":material/hourglass_top:")
        if not st.button(f"Compute the {method} heatmap", key=f"slow_{h}_{method}"):
            return
        bar = st.progress(0.0, text=f"{method}: starting…")

        def tick(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=f"{method}: {done}/{total} batches")

        exp = common.explanation(clf, h, pred.image, method, progress=tick)
        bar.empty()
    elif not cached:
        with st.spinner(f"Computing the {method} heatmap…"):
            exp = common.explanation(clf, h, pred.image, method)
    else:
        exp = common.explanation(clf, h, pred.image, method)
    panel = exp.panel(opacity=opacity)
    st.image(panel, width="stretch",
             caption=f"Left: the {exp.region} the model saw. Right: {method} evidence for "
                     f"'{exp.target_class}' (red = strong, blue = weak).")
    if demo:
        st.markdown(f"**What the model looked at:** {exp.describe()}.")
        return
    st.caption(f"Where: {exp.describe()}.")
    for note in exp.notes:
        st.caption(f":material/info: {note}")
    if exp.faithfulness is not None:
        f = exp.faithfulness
        st.metric("Faithfulness", f"{f.score * 100:+.0f} points",
                  help="Confidence drop when the hottest 20% of pixels are removed, minus the drop when "
                       "a random 20% are removed (percentage points). Positive: the heatmap matters.")
        st.caption(f.meaning)
    stem = Path(rec["name"]).stem
    caption = f"{rec['name']}: {pred.label.upper()} p(fake) {pred.p_fake:.1%} ({method})"
    st.download_button("Download heatmap (PNG)", data=lambda: _png(exp, opacity, caption),
                       file_name=f"{stem}-{method}.png", mime="image/png", key=f"dl_{h}_{method}")


def _png(exp, opacity, caption) -> bytes:
    from realitycheck import explain as X

    return X.to_png_bytes(exp.panel(opacity=opacity, caption=caption, max_side=None))


def _result(clf, key, rec, threshold: float, method: str, opacity: float, demo: bool) -> None:
    pred = rec["pred"].at_threshold(threshold)
    if not pred.ok:
        common.show_error(pred.error)
        return
    with st.container(border=True):
        left, right = st.columns([1, 1.6] if not demo else [1, 2])
        with left:
            st.markdown(f"**{rec['name']}**")
            st.markdown(common.verdict_html(pred.label, pred.p_fake, "large" if demo else "normal"),
                        unsafe_allow_html=True)
            st.caption(f"Verdict: {pred.label.upper()} (threshold {threshold:.2f})")
            if not demo:
                c1, c2 = st.columns(2)
                c1.metric("p(fake)", f"{pred.p_fake:.1%}", help="The model's probability that the photo is AI-generated.")
                c2.metric("p(real)", f"{pred.p_real:.1%}")
                c1.metric("Time", f"{pred.seconds * 1000:.0f} ms",
                          help="Decoding, face check and the model's forward pass for this image.")
                c2.metric("Faces found", "n/a" if pred.faces is None else f"{pred.faces}")
            _faces(pred)
            for note in pred.notes:
                st.caption(f":material/info: {note}")
            from realitycheck.app import provenance_panel

            provenance_panel.render(rec.get("provenance"), pred.label, demo)
        with right:
            if pred.image is None:
                st.caption("No image kept for the heatmap.")
            else:
                common.run_page(lambda: _heatmap(clf, key, rec, pred, method, opacity, demo), "the heatmap")


def _compare(clf, keys: list, opacity: float) -> None:
    from realitycheck import explain as X

    good = [k for k in keys if k in state.get(state.PREDICTIONS) and state.get(state.PREDICTIONS)[k]["pred"].ok]
    if not good:
        return
    preds = state.get(state.PREDICTIONS)
    with st.expander("Compare heatmap methods on one image"):
        key = good[0] if len(good) == 1 else st.selectbox(
            "Image", good, format_func=lambda k: preds[k]["name"], key="compare_image")
        methods = [m for m in X.METHODS if m not in X.SLOW_METHODS]
        rec = preds[key]
        mkey = key[0]
        missing = [m for m in methods if (mkey, key[1], m) not in state.get(state.EXPLANATIONS)]
        if missing and st.button(f"Compute {len(missing)} more methods (about a second each)", key="compare_run"):
            bar = st.progress(0.0)
            for i, m in enumerate(missing):
                bar.progress(i / len(missing), text=f"{m}…")
                common.explanation(clf, key[1], rec["pred"].image, m)
            bar.empty()
        done = [m for m in methods if (mkey, key[1], m) in state.get(state.EXPLANATIONS)]
        if not done:
            st.caption("No heatmaps computed for this image yet.")
            return
        cols = st.columns(3)
        for i, m in enumerate(done):
            exp = common.explanation(clf, key[1], rec["pred"].image, m)
            with cols[i % 3]:
                st.image(exp.overlay(opacity), width="stretch", caption=m)
                if exp.faithfulness is not None:
                    st.caption(f"faithfulness {exp.faithfulness.score * 100:+.0f} points")


def render() -> None:
    demo = bool(state.get(state.DEMO))
    st.title("Real or AI-generated?" if demo else "Classify face photos")
    clf = common.current_classifier()
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
        common.show_error(msg)
    mkey = common.model_key(clf.path) if clf.path else clf.name
    shown = [k for k in state.get(state.CURRENT) if k in state.get(state.PREDICTIONS)]
    keys = [k for k in shown if k[0] == mkey]
    if len(keys) < len(shown):
        st.info("The active model has changed since these images were classified: press Classify again "
                "(or click an example) to see the new model's verdicts.", icon=":material/sync:")
    if not keys:
        st.caption("Results appear here. Every image you classify is also listed on the Session history page.")
        return
    st.divider()
    method, opacity = _settings()
    threshold = float(state.get(state.THRESHOLD))
    for key in keys:
        _result(clf, key, state.get(state.PREDICTIONS)[key], threshold, method, opacity, demo)
    if not demo:
        _compare(clf, keys, opacity)


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    common.run_page(render, "the Classify page")
