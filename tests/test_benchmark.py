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
    # the speed-up is the median of interleaved pair ratios (4 images: one chunk, one pair)
    assert model["speedup_pairs"] == 1 and model["speedup_range"][0] <= model["speedup"] <= model["speedup_range"][1]
    assert "Speed-up: the original loop and ours interleaved" in out.with_suffix(".md").read_text()
    assert result["folder_evaluation"]["images"] == 4
    assert "| model |" in out.with_suffix(".md").read_text()


def _load_run():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_interleaving_reports_the_median_of_pair_ratios_so_a_busy_moment_on_one_side_does_not_decide():
    bench = _load_run()
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731  (a fake clock: each stub advances it by its own cost)
    calls = []
    busy = {2}  # the machine is busy while chunk 2 runs on the original loop: it takes 10x as long

    def loop(chunk):
        calls.append(("a", chunk[0]))
        now[0] += 2.0 * (10 if chunk[0] in busy else 1)

    def ours(chunk):
        calls.append(("b", chunk[0]))
        now[0] += 1.0

    chunks = [[i] for i in range(5)]
    r = bench.interleaved(loop, ours, chunks, clock=clock)
    assert r["ratios"] == [2.0, 2.0, 20.0, 2.0, 2.0]
    assert r["median_ratio"] == 2.0 and r["ratio_max"] == 20.0 and r["pairs"] == 5
    # total-time ratio would have said (2*4 + 20) / 5 = 5.6x
    assert abs(r["b_images_per_second"] / r["a_images_per_second"] - 5.6) < 1e-9
    # alternating order on the same chunks: A B, B A, A B, ...
    assert calls[:4] == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]
    # a worker's own timing (its RESULT's seconds) wins over the clock
    r = bench.interleaved(lambda c: {"seconds": 3.0}, lambda c: {"seconds": 1.5}, chunks, clock=clock)
    assert r["median_ratio"] == 2.0


def test_cpu_capabilities_name_the_model_and_instruction_sets():
    caps = _load_run().cpu_capabilities()
    assert caps["cpu"] and isinstance(caps["bf16"], list) and isinstance(caps["int8"], list)
