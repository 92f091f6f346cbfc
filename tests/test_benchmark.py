"""The benchmark script runs end to end on a handful of images (numbers are not asserted: not a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_script_runs_on_a_few_images(tmp_path, tiny_checkpoint):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--images", str(tmp_path / "none"),
                          "--limit", "4", "--json", str(out), "--weights", str(tiny_checkpoint), "--skip-resnet50",
                          "--skip-scorecam"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    (model,) = result["models"]
    for key in ("speedup", "agreement", "gradcam_over_forward", "warm_single_image_ms",
                "cold_start_seconds", "ours_gflops"):
        assert model[key] is not None and model[key] == model[key], key  # present and not NaN
    assert 0.0 <= model["agreement"] <= 1.0 and model["images"] == 4
    # the original loop runs before and after ours; the ratio uses both runs, pooled
    a, b = model["baseline_runs"]
    assert min(a, b) <= model["baseline_images_per_second"] <= max(a, b)
    assert result["folder_evaluation"]["images"] == 4
    assert "| model |" in out.with_suffix(".md").read_text()
