"""Live camera and video page: frames from the browser's camera, and uploaded video files.

The camera frames go through the Classify page's path (`predictions.classify`: the session's cache,
history and rate limit), so a frame gets the number any photo would; videos go through
`realitycheck.serving.video` (sampled frames, per-face p_fake, the stated verdict rule). The browser's
camera widget (`st.camera_input`) needs no network: each snapshot is one check.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from realitycheck.intake.faces import draw_faces
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import verdict
from realitycheck.serving import video
from realitycheck.serving.app import public, state
from realitycheck.serving.app.display import verdict_html
from realitycheck.serving.app.errors import run_page, show_error
from realitycheck.serving.app.explanations import explanation, where_words
from realitycheck.serving.app.inputs import accept_upload, sha256
from realitycheck.serving.app.model_cache import current_classifier
from realitycheck.serving.app.predictions import classify

VIDEO_TYPES = ["mp4", "mov", "avi", "mkv", "webm", "m4v"]
LIVE_SERIES = "live_series"  # list[(n, p_fake, label)]: this session's camera checks, for the strip chart


def _faces_image(pred):
    if pred.image is None:
        return None
    if pred.face_boxes:
        return draw_faces(pred.image, pred.face_boxes, is_fake(pred.face_p_fake or [pred.p_fake], pred.threshold))
    return pred.image


def _verdict(pred, threshold: float) -> None:
    label = verdict(pred.p_fake, threshold)
    st.markdown(verdict_html(label, pred.p_fake), unsafe_allow_html=True)
    faces = ", ".join(f"face {i + 1}: {p:.3f}" for i, p in enumerate(pred.face_p_fake))
    st.caption(f":material/face: {pred.face_message}" + (f" — p(fake) {faces}" if faces else ""))
    if pred.unfamiliar:
        st.warning("Unfamiliar image: it lies outside what the model was trained on; this verdict is unreliable.",
                   icon=":material/help:")


def _camera(clf) -> None:
    st.subheader("Camera")
    st.caption("Each snapshot is checked as a photo: the verdict, each face's box and p(fake), and the "
               "heatmap on demand. Take another snapshot to check again.")
    shot = st.camera_input("Take a snapshot", key="live_camera")
    if shot is None:
        return
    data = shot.getvalue()
    refused = accept_upload(data, "camera frame")
    if refused:
        show_error(refused)
        return
    keys = classify(clf, [("camera frame", data)], source="camera")
    for msg in state.get(state.CLASSIFY_ERRORS):
        show_error(msg)
    state.get(state.CLASSIFY_ERRORS).clear()
    if not keys:
        return
    rec = state.get(state.PREDICTIONS)[keys[0]]
    pred = rec["pred"]
    if not pred.ok:
        show_error(f"This frame could not be checked: {pred.error}")
        return
    threshold = float(state.get(state.THRESHOLD))
    series = st.session_state.setdefault(LIVE_SERIES, [])
    if not series or series[-1][3] != keys[0][1]:
        series.append((len(series) + 1, pred.p_fake, pred.label, keys[0][1]))
    c1, c2 = st.columns([3, 2])
    with c1:
        img = _faces_image(pred)
        if img is not None:
            st.image(img, caption="Faces found, each with its p(fake)", width="stretch")
    with c2:
        _verdict(pred, threshold)
        if len(series) > 1:
            st.line_chart({"p(fake)": [p for _, p, _, _ in series]}, height=160)
            st.caption(f"p(fake) of this session's {len(series)} snapshots")
        if st.toggle("Show the heatmap", key="live_heatmap"):
            with st.spinner("Computing the Grad-CAM heatmap…"):
                exp = explanation(clf, keys[0][1], pred.image, "gradcam", target_class=pred.label,
                                  deciding_face=pred.deciding_face)
            st.image(exp.panel(), width="stretch", caption=f"Grad-CAM evidence for '{exp.target_class}'")
            st.markdown(f"**Where:** {where_words(exp, pred)}")


def _video(clf) -> None:
    st.subheader("Video file")
    st.caption(f"Frames are sampled and each is checked like a photo. Verdict rule: {video.VERDICT_RULE}.")
    settings = public.settings()
    cap = settings.classifications_per_minute if settings.classifications_per_minute > 0 else 600
    c1, c2 = st.columns(2)
    every_s = c1.number_input("Sample a frame every … seconds", min_value=0.1, max_value=60.0, value=1.0, step=0.5,
                              key="live_every_s")
    max_frames = c2.number_input("At most … frames", min_value=1, max_value=cap, value=min(60, cap), step=10,
                                 key="live_max_frames")
    up = st.file_uploader("Upload a video", type=VIDEO_TYPES, key="live_video")
    if up is None:
        return
    data = up.getvalue()
    refused = accept_upload(data, up.name)
    if not refused:  # a video's frames count against the rate limit all together: all now, or none
        allowed, later = public.allow_classifications(int(max_frames))
        refused = later if allowed < int(max_frames) else None
    if refused:
        show_error(refused)
        return
    with tempfile.TemporaryDirectory(prefix="realitycheck-video-") as tmp:
        path = Path(tmp) / Path(up.name).name
        path.write_bytes(data)
        bar = st.progress(0.0, text="checking frames…")
        try:
            result, frames = video.analyse_video(
                clf, path, every_s=float(every_s), max_frames=int(max_frames), top=3,
                progress=lambda n: bar.progress(min(1.0, n / max(1, int(max_frames))), text=f"{n} frames checked"))
        except video.VideoError as exc:
            bar.empty()
            show_error(public.safe(str(exc)))
            return
        bar.empty()
    label = result.label or "no verdict"
    st.markdown(verdict_html(label, result.p_fake or 0.0), unsafe_allow_html=True)
    st.caption(f"{len(result.frames)} frames ({result.sampling}); {result.rule}.")
    for note in result.notes:
        st.caption(f":material/info: {note}")
    st.plotly_chart(video.timeline_figure(result), key="live_timeline")
    st.markdown("**Most suspicious frames**")
    cols = st.columns(max(1, len(result.suspicious)))
    for col, k in zip(cols, result.suspicious):
        fr = result.frames[k]
        with col:
            st.image(frames[fr.frame], caption=f"frame {fr.frame} at {fr.time_s:.1f} s: p(fake) {fr.p_fake:.3f}",
                     width="stretch")
            if st.toggle("Heatmap", key=f"live_vheat_{fr.frame}"):
                with st.spinner("Computing…"):
                    exp = explanation(clf, (sha256(data), fr.frame), frames[fr.frame], "gradcam",
                                             target_class="fake")
                st.image(exp.panel(), width="stretch", caption="Grad-CAM evidence for 'fake'")
    st.download_button("Download per-frame table (CSV)", data=result.table().to_csv(index=False),
                       file_name=f"{Path(up.name).stem}-frames.csv", mime="text/csv", key="live_csv")


def render() -> None:
    st.title("Live camera and video")
    clf = current_classifier()
    if clf is None:
        return
    tab_cam, tab_vid = st.tabs(["Camera", "Video file"])
    with tab_cam:
        _camera(clf)
    with tab_vid:
        _video(clf)


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the Live camera and video page")
