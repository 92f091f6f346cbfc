"""Shared fixtures: a small real checkpoint (built once per run), the sample photos, and the browser tests'
Chromium and page.

Plain helpers (running the CLI, writing a checkpoint, synthetic photos) are in `tests/helpers.py`; the
dashboard tests' (AppTest) in `tests/app_helpers.py`; the browser tests' (server, Chromium) in
`tests/e2e_helpers.py`.

The checkpoint is a real EfficientNet-Lite0 (ImageNet weights, untrained 2-class head) with a
96 px / 80 px crop card: every test that needs "a model" gets the real loading and inference
path, at a fraction of the 224 px cost. Its verdicts mean nothing; tests only check behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

# One compute thread per process unless the caller sets it (OMP_NUM_THREADS=2 python -m pytest ...): the
# machine's 2 cores are shared, and PyTorch's two OpenMP threads contending with another job for them ran
# the in-process training and inference tests 3-10x slower than one thread does (tests/test_train.py:
# 160 s -> 17 s with the load average at 5). The CLI subprocesses already run on one (tests/helpers.cli_env).
# Set here, before any test module imports torch; child processes (torchrun, benchmarks, the engine
# tests' own pytest) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from tests.helpers import SAMPLE_IMAGES


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real RealityCheck checkpoint (efficientnet_lite0, ImageNet init, 96/80 px card), built once."""
    from tests.helpers import save_tiny_checkpoint

    path = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny-lite0.pt"
    return save_tiny_checkpoint(path)


@pytest.fixture(scope="session")
def tiny_classifier(tiny_checkpoint):
    """`Classifier` over `tiny_checkpoint`, fp32 so results are exactly repeatable."""
    from realitycheck.model.inference import Classifier

    return Classifier.from_file(tiny_checkpoint, precision="fp32")


@pytest.fixture(scope="session")
def sample_face() -> Path:
    """A real, public-domain portrait with one frontal face."""
    return SAMPLE_IMAGES / "grace_hopper.jpg"


@pytest.fixture(scope="session", autouse=True)
def _private_case_database(tmp_path_factory):
    """Every test run records its judgements (dashboard, `predict --log`) in a throwaway case database,
    never in the user's ~/.realitycheck/cases.db (tests that need their own set REALITYCHECK_DB again)."""
    import os

    folder = tmp_path_factory.mktemp("case-db")
    saved = os.environ.get("REALITYCHECK_DB")
    os.environ["REALITYCHECK_DB"] = str(folder / "cases.db")
    yield
    if saved is None:
        os.environ.pop("REALITYCHECK_DB", None)
    else:
        os.environ["REALITYCHECK_DB"] = saved


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one per browser-test module (tests/e2e_helpers.py)."""
    from tests.e2e_helpers import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, request):
    """A fresh page in a browser context of its own: 1400 px wide, as tall as the test module's
    VIEWPORT_HEIGHT (else 1400)."""
    from tests.e2e_helpers import new_page

    with new_page(browser, getattr(request.module, "VIEWPORT_HEIGHT", 1400)) as pg:
        yield pg
