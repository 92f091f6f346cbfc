"""Helpers the tests import (`from tests.helpers import ...`): paths and running the CLI as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def save_tiny_checkpoint(path: str | os.PathLike, **card_fields) -> Path:
    """Write the tests' small real checkpoint (efficientnet_lite0, ImageNet init, 96/80 px card) to `path`."""
    from realitycheck import checkpoints, models
    from realitycheck.checkpoints import ModelCard, Preprocessing

    card_fields.setdefault("name", "test")
    card = ModelCard(arch="efficientnet_lite0", **card_fields,
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3))
    return checkpoints.save_checkpoint(path, models.build_model("efficientnet_lite0", pretrained=True), card)
