"""End-to-end: the Live camera page in Chromium with a fake camera playing a generated clip.

Chromium's `--use-fake-device-for-media-stream` + `--use-file-for-fake-video-capture=clip.y4m`
stand in for a webcam (`--use-fake-ui-for-media-stream` grants the permission). The page must show
the snapshot's faces with their p(fake), the verdict, and the heatmap when asked. Run with `-m e2e`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e_helpers import chromium, idle, new_page, streamlit_server
from tests.helpers import REPO_ROOT as ROOT

pytestmark = pytest.mark.e2e


def write_y4m(path: Path, frames: list[Image.Image], fps: int = 10) -> Path:
    """A raw YUV 4:2:0 clip in the YUV4MPEG2 format Chromium's fake camera reads."""
    w, h = frames[0].size
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for im in frames:
            ycc = np.asarray(im.convert("YCbCr"), dtype=np.float32)
            y = ycc[..., 0].astype(np.uint8)
            u = ycc[..., 1].reshape(h // 2, 2, w // 2, 2).mean((1, 3)).round().astype(np.uint8)
            v = ycc[..., 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3)).round().astype(np.uint8)
            fh.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())
    return path


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory) -> Path:
    face = Image.open(ROOT / "sample_images" / "grace_hopper.jpg").convert("RGB").resize((320, 400))
    return write_y4m(tmp_path_factory.mktemp("cam") / "camera.y4m", [face] * 10)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with streamlit_server({"REALITYCHECK_WEIGHTS": str(tiny_checkpoint),
                           "REALITYCHECK_WEIGHTS_DIR": str(tiny_checkpoint.parent)}) as url:
        yield url


def test_camera_snapshot_is_checked(server, fake_camera, tmp_path):
    camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={fake_camera}"]
    with chromium(*camera) as browser, new_page(browser, 1100, permissions=["camera"]) as page:
        page.goto(server + "/live")
        page.get_by_text("Live camera and video").first.wait_for(timeout=120_000)
        idle(page)
        take = page.get_by_role("button", name="Take Photo")
        take.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the fake camera deliver frames
        take.click()
        page.get_by_text("Faces found, each with its p(fake)").wait_for(timeout=120_000)
        idle(page)
        body = page.locator("body").inner_text()
        assert "p(fake)" in body and ("REAL" in body or "FAKE" in body)
        assert "1 face found" in body  # YuNet found the face the fake camera shows
        page.get_by_text("Show the heatmap").click()
        page.get_by_text("Grad-CAM evidence for").wait_for(timeout=120_000)
        assert page.locator("[data-testid='stException']").count() == 0
        shots = Path(os.environ.get("REALITYCHECK_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "live.png"), full_page=True)
