"""End-to-end: the Live camera page in Chromium with a fake camera playing a generated clip.

Chromium's `--use-fake-device-for-media-stream` + `--use-file-for-fake-video-capture=clip.y4m`
stand in for a webcam (`--use-fake-ui-for-media-stream` grants the permission). The page must show
the snapshot's faces with their p(fake), the verdict, and the heatmap when asked. Run with `-m e2e`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REALITYCHECK_WEIGHTS": str(tiny_checkpoint), "REALITYCHECK_WEIGHTS_DIR": str(tiny_checkpoint.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _idle(page, timeout=180_000):
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def test_camera_snapshot_is_checked(server, fake_camera, tmp_path):
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_camera}"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1100}, permissions=["camera"])
        page = ctx.new_page()
        page.goto(server + "/live")
        page.get_by_text("Live camera and video").first.wait_for(timeout=120_000)
        _idle(page)
        take = page.get_by_role("button", name="Take Photo")
        take.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the fake camera deliver frames
        take.click()
        page.get_by_text("Faces found, each with its p(fake)").wait_for(timeout=120_000)
        _idle(page)
        body = page.locator("body").inner_text()
        assert "p(fake)" in body and ("REAL" in body or "FAKE" in body)
        assert "1 face found" in body  # YuNet found the face the fake camera shows
        page.get_by_text("Show the heatmap").click()
        page.get_by_text("Grad-CAM evidence for").wait_for(timeout=120_000)
        assert page.locator("[data-testid='stException']").count() == 0
        shots = Path(os.environ.get("REALITYCHECK_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "live.png"), full_page=True)
        browser.close()
