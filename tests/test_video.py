"""`realitycheck video`: a generated clip gets per-frame results and a verdict by the stated rule;
a corrupt or cut-off file gets one clear line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from realitycheck.serving import cli, video

ROOT = Path(__file__).resolve().parent.parent
FPS, N_FRAMES = 5, 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[Image.Image]]:
    """A 4 s MJPEG clip: 5 frames of one portrait, 5 of another, repeated; and the frames as written."""
    faces = [Image.open(ROOT / "sample_images" / n).convert("RGB").resize((320, 400))
             for n in ("grace_hopper.jpg", "astronaut_eileen_collins.jpg")]
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 400))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(np.ascontiguousarray(np.asarray(faces[(i // 5) % 2])[:, :, ::-1]))
    writer.release()
    return path, faces


def test_per_frame_results_and_verdict(clip, tiny_classifier):
    path, _ = clip
    result, frames = video.analyse_video(tiny_classifier, path, every_k=2, top=3)
    assert [f.frame for f in result.frames] == list(range(0, N_FRAMES, 2))
    assert [f.time_s for f in result.frames] == pytest.approx([i / FPS for i in range(0, N_FRAMES, 2)])
    assert all(f.p_fake is not None and f.faces == 1 for f in result.frames)
    # the rule as stated: median of the top 10% (here 1 of 10 frames) -> the highest frame
    ps = sorted((f.p_fake for f in result.frames), reverse=True)
    assert result.p_fake == pytest.approx(ps[0])
    assert result.label == ("fake" if result.p_fake >= result.threshold else "real")
    assert result.rule == video.VERDICT_RULE and "median" in result.rule
    assert [result.frames[k].p_fake for k in result.suspicious] == pytest.approx(ps[:3])
    assert set(frames) == {result.frames[k].frame for k in result.suspicious}  # only their images are kept
    # one picture, one number: a frame scores as `predict` scores the decoded picture
    first = next(iter(video.sample_frames(path, every_k=2)[0]))[2]
    assert result.frames[0].p_fake == pytest.approx(tiny_classifier.predict([first])[0].p_fake, abs=1e-6)


def test_rule_over_many_frames():
    p, label = video.video_verdict([0.1] * 18 + [0.9, 0.8], threshold=0.5)  # top 10% = 2 frames
    assert p == pytest.approx(0.85) and label == "fake"
    p, label = video.video_verdict([0.1] * 39 + [0.99], threshold=0.5)  # top 4: 0.99, 0.1, 0.1, 0.1
    assert p == pytest.approx(0.1) and label == "real"
    assert video.video_verdict([], 0.5) == (None, None)


def test_sampling_by_time_and_the_cap(clip, tiny_classifier):
    path, _ = clip
    result, _ = video.analyse_video(tiny_classifier, path, every_s=1.0)
    assert [f.frame for f in result.frames] == [0, 5, 10, 15]
    result, _ = video.analyse_video(tiny_classifier, path, every_k=1, max_frames=3)
    assert len(result.frames) == 3 and any("limit" in n for n in result.notes)


def test_cli_video(clip, tiny_checkpoint, tmp_path, capsys):
    path, _ = clip
    csv_path, plot, heat = tmp_path / "frames.csv", tmp_path / "timeline.html", tmp_path / "heat"
    code = cli.main(["video", str(path), "--weights", str(tiny_checkpoint), "--every-k", "4", "--json",
                     "--csv", str(csv_path), "--plot", str(plot), "--heatmaps", str(heat), "--top", "2", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scored_frames"] == 5 and out["label"] in ("real", "fake") and out["rule"] == video.VERDICT_RULE
    assert len(out["heatmaps"]) == 2 and all(Path(h["png"]).is_file() for h in out["heatmaps"])
    assert csv_path.read_text().splitlines()[0].startswith("frame,time_s,face,face_p_fake")
    assert len(csv_path.read_text().splitlines()) == 1 + 5
    assert "plotly" in plot.read_text()[:5000].lower()


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200, b"RIFF\x10\x00\x00\x00AVI "])
def test_corrupt_video_is_a_clear_error(content, tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    assert cli.main(["video", str(bad), "--weights", str(tiny_checkpoint), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("realitycheck: error: broken.mp4:") and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_cut_off_video(clip, tmp_path, tiny_classifier):
    """A file cut after its header: whatever frames decode are scored, else a clear VideoError."""
    path, _ = clip
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:2000])
    with pytest.raises(video.VideoError, match="cut.avi"):
        video.analyse_video(tiny_classifier, cut)
    half = tmp_path / "half.avi"
    half.write_bytes(data[: len(data) // 2])
    try:
        result, _ = video.analyse_video(tiny_classifier, half, every_k=1)
        assert 0 < len(result.frames) <= N_FRAMES
    except video.VideoError as exc:
        assert "half.avi" in str(exc)


def test_missing_and_bad_options(tmp_path, tiny_classifier):
    with pytest.raises(video.VideoError, match="no such file"):
        video.sample_frames(tmp_path / "nope.mp4")
    with pytest.raises(video.VideoError, match="every-k"):
        video.sample_frames(tmp_path / "nope.mp4", every_k=0)


def test_huge_video_is_refused_before_decoding(clip, tiny_checkpoint, monkeypatch, capsys):
    path, _ = clip
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 1000)
    assert cli.main(["video", str(path), "--weights", str(tiny_checkpoint), "--no-progress"]) == 2
    assert "the limit is" in capsys.readouterr().err
