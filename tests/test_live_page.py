"""The Live camera and video page, driven headlessly (AppTest): a generated clip gets its frames,
timeline, verdict rule and most suspicious frames; a corrupt file gets one clear message.
(The camera itself needs a browser: tests/test_e2e_live.py.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch  # noqa: F401  - imported before AppTest so the app's first run fits its timeout
from PIL import Image
from streamlit.testing.v1 import AppTest

from realitycheck.serving import video
from tests.app_helpers import app_weights, start_app, texts
from tests.helpers import APP_PAGES, REPO_ROOT

ROOT = REPO_ROOT
LIVE = APP_PAGES["live"]


@pytest.fixture(scope="module", autouse=True)
def weights_env(tiny_checkpoint):
    with app_weights(tiny_checkpoint):
        yield


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    face = Image.open(ROOT / "sample_images" / "grace_hopper.jpg").convert("RGB").resize((240, 300))
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4, (240, 300))
    for i in range(12):
        w.write(np.ascontiguousarray(np.asarray(face.rotate(i * 2))[:, :, ::-1]))
    w.release()
    return path.read_bytes()


def _live() -> AppTest:
    at = start_app()
    at.switch_page(LIVE).run()
    assert not at.exception, at.exception
    return at


def test_page_renders_with_camera_and_video_tabs():
    at = _live()
    assert at.title[0].value == "Live camera and video"
    assert len(at.tabs) == 2 and at.file_uploader(key="live_video") is not None
    assert video.VERDICT_RULE in texts(at)


def test_video_upload_gives_timeline_verdict_and_frames(clip_bytes):
    at = _live()
    at.number_input(key="live_every_s").set_value(1.0)
    at.file_uploader(key="live_video").set_value(("clip.avi", clip_bytes, "video/x-msvideo")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    text = texts(at)
    assert "3 frames (every 1 s (every 4 frames))" in text  # 12 frames at 4 fps, one a second
    assert "REAL" in text or "FAKE" in text
    assert at.get("plotly_chart"), "no timeline"
    frames = [im for im in at.image if any("frame" in c and "p(fake)" in c for c in im.captions)]
    assert len(frames) == 3


def test_corrupt_video_is_one_clear_message():
    at = _live()
    at.file_uploader(key="live_video").set_value(("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"x" * 500,
                                                  "video/mp4")).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "decode" in errors[0]
    assert "/tmp" not in errors[0]
