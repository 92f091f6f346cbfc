"""Shared fixtures: a small real checkpoint, the sample photos, and a way to run the CLI.

The checkpoint is a real EfficientNet-Lite0 (ImageNet weights, untrained 2-class head) with a
96 px / 80 px crop card: every test that needs "a model" gets the real loading and inference
path, at a fraction of the 224 px cost. Its verdicts mean nothing; tests only check behaviour.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO_ROOT / "sample_images"


def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: one thread (the machine is shared), no colour, no tqdm bars."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("REALITYCHECK_WEIGHTS", None)
    return env


def cli_command(*args: str) -> list[str]:
    """argv for `realitycheck ARGS` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "realitycheck", *map(str, args)]


def run_cli(*args: str, timeout: float = 300, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          cwd=cwd or REPO_ROOT)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real RealityCheck checkpoint (efficientnet_lite0, ImageNet init, 96/80 px card), built once."""
    from realitycheck import checkpoints, models
    from realitycheck.checkpoints import ModelCard, Preprocessing

    path = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny-lite0.pt"
    model = models.build_model("efficientnet_lite0", pretrained=True)
    card = ModelCard(name="test", arch="efficientnet_lite0",
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3))
    checkpoints.save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_checkpoint):
    """`Classifier` over `tiny_checkpoint`, fp32 so results are exactly repeatable."""
    from realitycheck.inference import Classifier

    return Classifier.from_file(tiny_checkpoint, precision="fp32")


@pytest.fixture(scope="session")
def sample_face() -> Path:
    """A real, public-domain portrait with one frontal face."""
    return SAMPLE_IMAGES / "grace_hopper.jpg"
