"""One image, one model, one number: predict, explain, evaluate and the dashboard agree on p_fake.

A new user saw 0.081 from `predict`, 0.067 from `explain` and 0.085 in the dashboard for one JPEG:
a reduced-size JPEG draft decode in some paths, bf16 batches next to fp32 single images. Every path
now decodes in full (`images.load_image`) and runs at the same precision, so the four agree.

The checkpoint is the small test Lite0 with its head scaled up, so p_fake moves visibly when the
pixels or the arithmetic move (an untrained head would answer ~0.5 whatever it is given).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from realitycheck.serving import cli
from tests.helpers import save_sharp_lite0

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def sharp_checkpoint(tmp_path_factory, photos) -> Path:
    return save_sharp_lite0(tmp_path_factory.mktemp("w") / "sharp.pt", photos["jpg"])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A JPEG and a PNG, both four or more times larger than the model's 96 px input, in a labelled folder."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    jpg = root / "real" / "hopper.jpg"
    hopper = Image.open(ROOT / "sample_images" / "grace_hopper.jpg").convert("RGB")
    hopper.resize((hopper.width * 2, hopper.height * 2), Image.BICUBIC).save(jpg, quality=92)  # a big photo
    png = root / "fake" / "collins.png"
    Image.open(ROOT / "sample_images" / "astronaut_eileen_collins.jpg").convert("RGB").resize((420, 500)).save(png)
    assert min(Image.open(jpg).size) >= 4 * 96 and min(Image.open(png).size) >= 4 * 96
    return {"jpg": jpg, "png": png, "root": root}


def _cli_json(capsys, *argv) -> list | dict:
    capsys.readouterr()
    cli.main([str(a) for a in argv])
    return json.loads(capsys.readouterr().out)


def test_predict_explain_evaluate_and_dashboard_agree(sharp_checkpoint, photos, capsys, tmp_path):
    jpg, png = photos["jpg"], photos["png"]
    numbers: dict[str, dict[str, float]] = {"jpg": {}, "png": {}}

    def put(path_text: str, source: str, p: float) -> None:
        kind = "jpg" if str(path_text).endswith(".jpg") else "png"
        numbers[kind][source] = float(p)

    # predict: the two images as one batch, then each alone
    for r in _cli_json(capsys, "predict", jpg, png, "--weights", sharp_checkpoint, "--json", "--no-progress"):
        put(r["path"], "predict batch", r["p_fake"])
    for img in (jpg, png):
        r = _cli_json(capsys, "predict", img, "--weights", sharp_checkpoint, "--json", "--no-progress")[0]
        put(r["path"], "predict single", r["p_fake"])
    # explain
    for r in _cli_json(capsys, "explain", jpg, png, "--weights", sharp_checkpoint, "--out", tmp_path / "heat",
                       "--json", "--no-progress"):
        put(r["path"], "explain", r["p_fake"])
        assert "face" in r["where"]  # words relative to the detected face (heatmap_words), not fixed cells
    # evaluate (the per-image CSV)
    table = tmp_path / "eval.csv"
    _cli_json(capsys, "evaluate", photos["root"], "--weights", sharp_checkpoint, "--csv", table, "--json",
              "--workers", "0", "--no-progress")
    for row in csv.DictReader(open(table)):
        put(row["path"], "evaluate", row["p_fake"])
    # the dashboard: both in one submit
    numbers_app = _dashboard(sharp_checkpoint, [jpg, png])
    for name, p in numbers_app.items():
        put(name, "dashboard", p)

    for kind, by_source in numbers.items():
        assert len(by_source) == 5, by_source
        spread = max(by_source.values()) - min(by_source.values())
        assert spread <= TOLERANCE, f"{kind}: p_fake differs by path: {by_source}"
    # the test means something only if the images score differently
    assert abs(numbers["jpg"]["predict single"] - numbers["png"]["predict single"]) > 0.01, numbers


def _dashboard(weights: Path, files: list[Path]) -> dict[str, float]:
    import os

    from streamlit.testing.v1 import AppTest

    saved = {k: os.environ.get(k) for k in ("REALITYCHECK_WEIGHTS", "REALITYCHECK_WEIGHTS_DIR")}
    os.environ["REALITYCHECK_WEIGHTS"] = str(weights)
    os.environ["REALITYCHECK_WEIGHTS_DIR"] = str(weights.parent)
    try:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
        at.file_uploader(key="classify_files").set_value(
            [(f.name, f.read_bytes(), "application/octet-stream") for f in files])
        at.button(key="FormSubmitter:classify_form-Classify").click()
        at.run()
        assert not at.exception, at.exception
        return {rec["name"]: rec["pred"].p_fake for rec in at.session_state["predictions"].values()}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
