"""`make run` on a fresh clone starts on the shipped model (own process: no env or cache from other tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import json
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("streamlit_app.py", default_timeout=120).run()
print("RESULT " + json.dumps({
    "exception": bool(at.exception),
    "text": " ".join(m.value for m in at.sidebar.markdown) + " " + " ".join(c.value for c in at.sidebar.caption),
    "metrics": {m.label: m.value for m in at.sidebar.metric},
    "warnings": [w.value for w in at.warning],
}))
"""


def test_app_starts_on_the_shipped_default_model():
    from realitycheck.model.inference import DEFAULT_WEIGHTS_NAME

    if not (ROOT / "weights" / DEFAULT_WEIGHTS_NAME).exists():
        pytest.skip("no shipped default model in weights/")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALITYCHECK_")}
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[7:])
    assert not res["exception"]
    assert "realitycheck-lite2" in res["text"]
    assert res["metrics"].get("Test accuracy", "").endswith("%")
    assert not any("no trained weights" in w.lower() for w in res["warnings"])
