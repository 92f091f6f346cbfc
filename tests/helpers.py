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


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`run_cli` in this process (`cli.main`, stdout and stderr captured; an argparse exit becomes its
    code): the same answers without a new interpreter importing torch (3-4 s a call). Tests of what a
    shell sees (signals, exit codes of a crash, stray output before main) keep `run_cli`."""
    import contextlib
    import io

    from realitycheck.serving import cli

    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.pop("REALITYCHECK_WEIGHTS", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        if saved is not None:
            os.environ["REALITYCHECK_WEIGHTS"] = saved
    return subprocess.CompletedProcess([*cli_command(*args)], code, out.getvalue(), err.getvalue())


def save_tiny_checkpoint(path: str | os.PathLike, **card_fields) -> Path:
    """Write the tests' small real checkpoint (efficientnet_lite0, ImageNet init, 96/80 px card) to `path`."""
    from realitycheck.model import checkpoints, models
    from realitycheck.model.checkpoints import ModelCard, Preprocessing

    card_fields.setdefault("name", "test")
    card = ModelCard(arch="efficientnet_lite0", **card_fields,
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3))
    return checkpoints.save_checkpoint(path, models.build_model("efficientnet_lite0", pretrained=True), card)


# The dashboard's pages, by the names tests use (one place: AppTest switches pages by file path)
APP_PAGES = {
    "classify": "realitycheck/serving/app/classify_page.py",
    "evaluate": "realitycheck/serving/app/evaluate_page.py",
    "history": "realitycheck/serving/app/history_page.py",
    "cases": "realitycheck/serving/app/cases_page.py",
    "models": "realitycheck/serving/app/models_page.py",
    "about": "realitycheck/serving/app/about_page.py",
    "live": "realitycheck/serving/app/live_page.py",
}


def jpeg(seed: int, size: int = 96, noisy: bool = False, quality: int = 90) -> bytes:
    """A small synthetic JPEG, the same for the same arguments: smooth stripes, or (`noisy`) random pixels."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    if noisy:
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        y, x = np.mgrid[0:size, 0:size]
        base = rng.integers(60, 200, 3)
        arr = np.stack([(base[c] + 40 * np.sin((x + y * (c + 1)) / (8 + seed % 5))) for c in range(3)], -1)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def folder_ranked_by(clf, root: Path) -> Path:
    """real/ and fake/ of 8 synthetic photos split by `clf`'s own p_fake (its 4 lowest are 'real'), so the
    model separates them by construction, whatever it has learnt."""
    pool = [jpeg(80 + i, noisy=i % 2 == 0) for i in range(8)]
    scores = [p.p_fake for p in clf.predict(pool)]
    order = sorted(range(8), key=scores.__getitem__)
    for label, idx in (("real", order[:4]), ("fake", order[4:])):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in idx:
            (root / label / f"{i}.jpg").write_bytes(pool[i])
    return root


def weights_of_its_own(tmp_path: Path, checkpoint: Path, monkeypatch, roots: Path) -> Path:
    """The app in local mode with a weights folder of its own under `tmp_path` (a copy of `checkpoint`, the
    only model), server paths under `roots`, no settings file, and `tmp_path` as the working folder."""
    import shutil

    from realitycheck.serving import access

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(checkpoint, weights / "tiny.pt")
    monkeypatch.setenv("REALITYCHECK_WEIGHTS", str(weights / "tiny.pt"))
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv(access.ROOTS_ENV, str(roots))
    monkeypatch.delenv(access.PUBLIC_ENV, raising=False)
    monkeypatch.delenv(access.CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return weights


def make_toy_folder(root, side: int = 64, per_class: int = 40, blur: float = 4) -> "Path":
    """A labelled folder a model learns in a few steps: 'real' = smooth blurred noise, 'fake' = the same
    plus a fine checkerboard (a high-frequency trace, as generators leave)."""
    import numpy as np
    from PIL import Image, ImageFilter

    root = Path(root)
    rng = np.random.default_rng(0)
    checker = (np.indices((side, side)).sum(0) % 2 * 60).astype(np.int16)[..., None]
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).filter(ImageFilter.GaussianBlur(blur))
            arr = np.asarray(base).astype(np.int16) + (checker - 30 if label == "fake" else 0)
            Image.fromarray(np.clip(arr, 0, 255).astype("uint8")).save(root / label / f"{label}_{i:03d}.png")
    return root


def save_sharp_lite0(path: str | os.PathLike, centre_on: str | os.PathLike) -> Path:
    """A Lite0 whose p_fake is sensitive to small input changes (logits x3) with the image `centre_on`
    near p_fake 0.5, where p_fake moves most: a model that shows any drift between two paths."""
    import torch
    from PIL import Image

    from realitycheck.model import checkpoints, models
    from realitycheck.model.checkpoints import ModelCard, Preprocessing

    torch.manual_seed(0)
    model = models.build_model("efficientnet_lite0", pretrained=True).eval()
    card = ModelCard(name="sharp-lite0", arch="efficientnet_lite0",
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3))
    x = card.preprocessing.transform()(Image.open(centre_on).convert("RGB"))[None]
    fake, real = card.classes.index("fake"), card.classes.index("real")
    with torch.no_grad():
        model._fc.weight.mul_(3.0)
        logits = model(x)
        centre = float(logits[0, fake] - logits[0, real])
        model._fc.bias[fake] -= centre / 2
        model._fc.bias[real] += centre / 2
    return checkpoints.save_checkpoint(path, model, card)
