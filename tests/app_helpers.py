"""What the dashboard tests (Streamlit's AppTest) share: point the app at a checkpoint, start it, submit
the Classify form, gather what a page says.

Import it after `pytest.importorskip("streamlit.testing.v1")`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import REPO_ROOT

APP = str(REPO_ROOT / "streamlit_app.py")
TIMEOUT = 120  # the first run imports torch; Grad-CAM + faithfulness on 2 shared cores
TEXT_ELEMENTS = ("markdown", "caption", "error", "warning", "info")


@contextmanager
def app_weights(ckpt: Path, roots: Path | None = None):
    """For a whole test module: `ckpt` the app's default model, its folder the weights folder and, with
    `roots`, the server folders the app may read. The environment is restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REALITYCHECK_WEIGHTS", str(ckpt))
        mp.setenv("REALITYCHECK_WEIGHTS_DIR", str(Path(ckpt).parent))
        if roots is not None:
            mp.setenv("REALITYCHECK_ROOTS", str(roots))
        yield ckpt


def start_app(timeout: float = TIMEOUT) -> AppTest:
    """The app's first run (the Classify page), which must raise nothing."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, at.exception
    return at


def classify(at: AppTest, files) -> AppTest:
    """Submit (name, bytes, mime) files through the Classify page's form."""
    at.file_uploader(key="classify_files").set_value(files)
    at.button(key="FormSubmitter:classify_form-Classify").click()
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest, *more: str) -> str:
    """What the page says, an element a line: markdown, captions and alerts, then the elements of the
    kinds in `more` ("success", "subheader", "text", ...)."""
    return "\n".join(str(e.value) for kind in (*TEXT_ELEMENTS, *more) for e in getattr(at, kind))


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]
