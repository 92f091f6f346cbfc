"""Video files: sampled frames -> per-frame, per-face p_fake -> a timeline and one video verdict.

Each sampled frame is an image like any other: it goes through `Classifier.predict` (faces found,
aligned, scored), so a frame gets the number `predict` would give the same picture. The video's
verdict follows a stated rule (`VERDICT_RULE`): the median p_fake of the most suspicious tenth of
the sampled frames (at least one frame), against the model's threshold. A few fake frames in a long
real video move it; one odd frame does not decide it alone once there are 20 or more.

Decoding is OpenCV's (FFmpeg inside the opencv-python-headless wheel). A file that is not a video,
is cut off before its first frame, or is over the limits gets a `VideoError` with a message
safe to show.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

MAX_VIDEO_BYTES = 2_000_000_000  # 2 GB
MAX_FRAME_PIXELS = 40_000_000  # as images.MAX_PIXELS
MAX_SAMPLED_FRAMES = 600  # frames scored per video, whatever the sampling asks
TOP_FRACTION = 0.10
VERDICT_RULE = ("video p_fake = median p_fake of the most suspicious 10% of sampled frames (at least 1); "
                "fake if that is >= the model's threshold")


class VideoError(ValueError):
    """A file that cannot be analysed as a video; the message is one line, safe to show."""


@dataclass
class FrameResult:
    frame: int  # index in the file
    time_s: float
    p_fake: float | None
    label: str | None
    faces: int | None
    face_p_fake: list = field(default_factory=list)
    face_boxes: list = field(default_factory=list)
    unfamiliar: bool | None = None
    error: str | None = None


@dataclass
class VideoResult:
    name: str
    frames: list[FrameResult]
    p_fake: float | None  # by VERDICT_RULE
    label: str | None
    threshold: float
    rule: str = VERDICT_RULE
    fps: float | None = None
    duration_s: float | None = None
    frames_in_file: int | None = None
    sampling: str = ""
    suspicious: list[int] = field(default_factory=list)  # indices into `frames`, most suspicious first
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scored_frames"] = sum(f.p_fake is not None for f in self.frames)
        return d

    def table(self):
        """Per frame and face: one row per face (or one per frame without faces), for CSV."""
        import pandas as pd

        rows = []
        for f in self.frames:
            faces = f.face_p_fake or [None]
            for i, fp in enumerate(faces):
                rows.append({"frame": f.frame, "time_s": round(f.time_s, 3), "face": i if f.face_p_fake else None,
                             "face_p_fake": fp, "frame_p_fake": f.p_fake, "label": f.label, "faces": f.faces,
                             "unfamiliar": f.unfamiliar, "error": f.error})
        return pd.DataFrame(rows)


def video_verdict(p_fakes: list[float], threshold: float) -> tuple[float | None, str | None]:
    """VERDICT_RULE over the frames' p_fake: (video p_fake, label); (None, None) without a scored frame."""
    from realitycheck.model.inference import verdict

    vals = sorted((p for p in p_fakes if p is not None), reverse=True)
    if not vals:
        return None, None
    top = vals[:max(1, math.ceil(len(vals) * TOP_FRACTION))]
    p = float(np.median(top))
    return p, verdict(p, threshold)


def _open(path: str | os.PathLike):
    import cv2

    p = Path(path)
    name = p.name
    if not p.exists():
        raise VideoError(f"{name}: no such file")
    if not p.is_file():
        raise VideoError(f"{name}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise VideoError(f"{name}: file is empty (0 bytes)")
    if size > MAX_VIDEO_BYTES:
        raise VideoError(f"{name}: file is {size / 1e9:.1f} GB; the limit is {MAX_VIDEO_BYTES / 1e9:.0f} GB")
    quiet = "OPENCV_FFMPEG_LOGLEVEL" not in os.environ  # FFmpeg's own complaints: our message says it once
    if quiet:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"
    try:
        cap = cv2.VideoCapture(str(p))
    finally:
        if quiet:
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{name}: not a video this installation can decode (corrupt, cut off, or an unknown format)")
    w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if w * h > MAX_FRAME_PIXELS:
        cap.release()
        raise VideoError(f"{name}: frames of {w:.0f}x{h:.0f} pixels are over the {MAX_FRAME_PIXELS / 1e6:.0f} MP limit")
    return cap


def sample_frames(path: str | os.PathLike, *, every_s: float | None = 1.0, every_k: int | None = None,
                  max_frames: int = MAX_SAMPLED_FRAMES) -> tuple[Iterator[tuple[int, float, Image.Image]], dict]:
    """(frames, info): an iterator of (frame index, time in s, RGB image) and the file's fps/length.

    every_k: every k-th frame; else every `every_s` seconds (by the file's frame rate). At most
    `max_frames` frames (bounded memory and time whatever the file says). Raises VideoError.
    """
    import cv2

    if every_k is not None and every_k < 1:
        raise VideoError("every-k must be at least 1")
    if every_k is None and (every_s is None or every_s <= 0):
        raise VideoError("every-s must be above 0")
    max_frames = max(1, min(int(max_frames), MAX_SAMPLED_FRAMES))
    cap = _open(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else None
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    step = every_k or max(1, round(every_s * fps)) if fps else (every_k or 1)
    info = {"fps": fps, "frames_in_file": count, "duration_s": (count / fps) if (count and fps) else None,
            "sampling": f"every {every_k} frames" if every_k else f"every {every_s:g} s (every {step} frames)"}

    def frames():
        taken, idx = 0, 0
        try:
            while taken < max_frames:
                ok = cap.grab()
                if not ok:
                    break
                if idx % step == 0:
                    ok, bgr = cap.retrieve()
                    if ok and bgr is not None:
                        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if not fps else idx / fps
                        yield idx, t, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                        taken += 1
                idx += 1
        finally:
            cap.release()

    return frames(), info


def analyse_video(clf, path: str | os.PathLike, *, every_s: float | None = 1.0, every_k: int | None = None,
                  max_frames: int = MAX_SAMPLED_FRAMES, top: int = 3, keep_frames: bool = False,
                  progress: Callable[[int], None] | None = None) -> tuple[VideoResult, dict[int, Image.Image]]:
    """Score the sampled frames of a video; (result, {frame index: image} of the most suspicious ones).

    keep_frames: also return every sampled frame's image (the dashboard shows a strip). Raises VideoError
    for a file that yields no frame.
    """
    frames_iter, info = sample_frames(path, every_s=every_s, every_k=every_k, max_frames=max_frames)
    name = Path(path).name
    results: list[FrameResult] = []
    kept: dict[int, Image.Image] = {}
    batch: list[tuple[int, float, Image.Image]] = []

    def flush():
        preds = clf.predict([im for _, _, im in batch], [f"{name} frame {i}" for i, _, _ in batch])
        for (i, t, im), p in zip(batch, preds):
            results.append(FrameResult(frame=i, time_s=t, p_fake=p.p_fake, label=p.label, faces=p.faces,
                                       face_p_fake=list(p.face_p_fake), face_boxes=[list(b) for b in p.face_boxes],
                                       unfamiliar=p.unfamiliar, error=p.error))
            kept[i] = im
        batch.clear()
        if not keep_frames:  # bounded memory: only the images of the current most suspicious frames stay
            best = sorted((r for r in results if r.p_fake is not None), key=lambda r: -r.p_fake)[:top]
            for i in set(kept) - {r.frame for r in best}:
                del kept[i]
        if progress:
            progress(len(results))

    for item in frames_iter:
        batch.append(item)
        if len(batch) >= clf.batch_size:
            flush()
    if batch:
        flush()
    if not results:
        raise VideoError(f"{name}: no frame could be decoded (the file is corrupt or cut off)")
    p, label = video_verdict([r.p_fake for r in results], clf.threshold)
    order = sorted((k for k, r in enumerate(results) if r.p_fake is not None), key=lambda k: -results[k].p_fake)
    notes = []
    if any(r.error for r in results):
        notes.append(f"{sum(bool(r.error) for r in results)} sampled frame(s) could not be scored")
    if len(results) >= max_frames:
        notes.append(f"stopped after {max_frames} sampled frames (the limit); later frames were not checked")
    res = VideoResult(name=name, frames=results, p_fake=p, label=label, threshold=clf.threshold,
                      fps=info["fps"], duration_s=info["duration_s"], frames_in_file=info["frames_in_file"],
                      sampling=info["sampling"], suspicious=order[:top], notes=notes)
    return res, kept


def timeline_figure(result: VideoResult):
    """p_fake per sampled frame over time (each face a point, the frame's verdict a line), the threshold
    and the video's p_fake; a plotly figure."""
    import plotly.graph_objects as go

    from realitycheck.analysis.plots import COLORS, P_FAKE_AXIS

    fig = go.Figure()
    fig.update_layout(title=f"{result.name}: p(fake) per sampled frame", template="plotly_white",
                      xaxis=dict(title="time (s)"), yaxis=dict(title=P_FAKE_AXIS, range=[-0.02, 1.02]),
                      margin=dict(l=60, r=20, t=60, b=55))
    ok = [f for f in result.frames if f.p_fake is not None]
    fig.add_trace(go.Scatter(x=[f.time_s for f in ok], y=[f.p_fake for f in ok], mode="lines+markers",
                             name="frame (most suspicious face)", line=dict(color="#555555"),
                             marker=dict(color=[COLORS.get(f.label, "#7f7f7f") for f in ok], size=8)))
    xs = [f.time_s for f in ok for _ in f.face_p_fake]
    ys = [p for f in ok for p in f.face_p_fake]
    if xs and any(len(f.face_p_fake) > 1 for f in ok):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="each face", marker=dict(size=5, color="#1f77b4")))
    fig.add_hline(y=result.threshold, line=dict(color="#333333", dash="dash"),
                  annotation_text=f"threshold {result.threshold:.3g}")
    if result.p_fake is not None:
        fig.add_hline(y=result.p_fake, line=dict(color=COLORS.get(result.label, "#7f7f7f"), dash="dot"),
                      annotation_text=f"video p_fake {result.p_fake:.3f} ({result.label})", annotation_position="bottom right")
    return fig


__all__ = ["VideoError", "FrameResult", "VideoResult", "VERDICT_RULE", "video_verdict", "sample_frames",
           "analyse_video", "timeline_figure"]
