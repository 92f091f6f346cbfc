#!/usr/bin/env python
"""RealityCheck benchmark: speed, agreement and memory of the original way vs ours, in one run.

    python benchmarks/run.py [--images DIR] [--limit N] [--json FILE] [--weights FILE]

For ResNet50 (the original architecture, with IMAGENET1K_V2 preprocessing) and for the shipped
default model it measures, on the same images:
  * baseline: one image at a time, PIL decode -> card transforms -> fp32 forward at batch 1
  * ours:     the folder-evaluation path (Classifier.iter_predict: batched, decoding in worker
              processes, channels_last, bf16 autocast where the CPU has native bf16)
and reports images/s, their ratio (`speedup`), label agreement and max |delta p_fake| between
the two, peak RSS of each path (each runs in its own process), warm single-image latency in the
app's path (decode + face check + forward), cold start, Grad-CAM time / forward time, ScoreCAM
time for one image, and achieved GFLOP/s against a matmul peak measured on the same machine.
Results are ratios from one run on one machine: compare them, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "faces-140k-sample"
CHUNK = 8  # images per chunk of the interleaved comparison (small: a busy moment hits both sides)
TIMING_SECONDS = 2.0  # how long each forward-pass timing loop of the stage breakdown runs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _list_images(folder: Path, limit: int) -> list[str]:
    from realitycheck.intake.data import walk_images

    files = [str(p) for p in walk_images(folder)]
    if len(files) > limit:  # spread over both classes of a real/fake folder
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def _make_images(folder: Path, n: int) -> None:
    """Synthetic 256x256 JPEGs, for machines without the shared data."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / ("real" if i % 2 == 0 else "fake")  # labelled, so the folder evaluation runs too
        sub.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((256, 256, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(sub / f"img_{i:04d}.jpg", quality=85)


def _classifier(spec: str, **kw):
    """spec: 'resnet50-original' (untrained ResNet50 with the original card) or a checkpoint path.

    The PyTorch paths (baseline, ours) stay PyTorch unless an engine is asked for explicitly.
    """
    from realitycheck.model import checkpoints, models
    from realitycheck.model.inference import Classifier

    kw.setdefault("engine", "torch")
    if spec == "resnet50-original":
        import torch

        torch.manual_seed(0)
        model = models.build_model("resnet50").eval()
        return Classifier(model, checkpoints.original_card("resnet50-untrained"), **kw)
    return Classifier.from_file(spec, **kw)


def _model_input(clf, img):
    """The card's input views of one decoded image, as (views, 3, H, W): `inference.prepare`'s rule
    (its aligned faces for an aligned card, with the face detector; else the whole-image transform)."""
    import torch

    from realitycheck.model.inference import prepare

    return torch.as_tensor(prepare(img, None, clf.card.preprocessing, face_check=False).tensor)


# ------------------------------------------------------------------------------------------------
# Worker modes (each in its own process, so peak RSS belongs to one path)
# ------------------------------------------------------------------------------------------------

def baseline_runner(spec: str):
    """The original project's loop: one image at a time, fp32, batch 1, no face check (two forwards
    per image when the card asks for mirror averaging, as the batched path then does too; an aligned
    card's faces found as the project found them before the engine work, with OpenCV's FaceDetectorYN).
    Returns (run(files) -> p_fake list, the card's threshold)."""
    import torch
    from PIL import Image

    # faces (aligned cards) found by OpenCV's FaceDetectorYN, the detector the project ran before the
    # engine work (faces.YuNetRuntime finds the same faces, tests/test_generalization.py)
    os.environ["REALITYCHECK_FACE_DETECTOR"] = "opencv"
    clf = _classifier(spec, face_check=False, precision="fp32")
    model, fi = clf.model.to(memory_format=torch.contiguous_format), clf.fake_index

    def run(files: list[str]) -> list[float]:
        p = []
        with torch.inference_mode():
            for f in files:
                faces = []
                for x in _model_input(clf, Image.open(f).convert("RGB")):  # an aligned card: each face, one at a time
                    pf = float(model(x[None]).softmax(1)[0, fi])
                    if clf.mirror_average:  # the card's prediction averages two views: same work for both paths
                        pf = (pf + float(model(x[None].flip(3)).softmax(1)[0, fi])) / 2
                    faces.append(pf)
                p.append(max(faces))  # the image's verdict is its most suspicious face
        return p

    return run, clf.threshold  # the card's: labels are compared where the model decides


def ours_runner(spec: str, precision: str):
    """The batched folder path (decode workers, batches of 16, channels_last, the chosen precision)."""
    from realitycheck.model.inference import resolve_precision

    clf = _classifier(spec, face_check=False, precision=precision, batch_size=16)
    return (lambda files: [p.p_fake for p in clf.iter_predict(files, workers=0 if len(files) < 32 else None)]), \
        resolve_precision(precision)


def folder_runner(spec: str, engine: str):
    """The folder-evaluation path end to end (decode + face check + preprocess + forward) with one engine."""
    clf = _classifier(spec, engine=engine)
    return (lambda files: [p.p_fake for p in clf.iter_predict(files, workers=0 if len(files) < 32 else None)]), \
        {"engine": clf.engine_label, "note": clf.engine_note}


def worker_session(kind: str, spec: str, files: list[str], precision: str) -> None:
    """A long-lived worker for the interleaved comparison: load once, warm up, then time each chunk of
    files the parent sends (one JSON list a line on stdin), answering with one RESULT line each.
    kind: "baseline" (the original loop), "ours" (batched PyTorch) or "folder:ENGINE"."""
    run, info = (baseline_runner(spec) if kind == "baseline" else ours_runner(spec, precision) if kind == "ours"
                 else folder_runner(spec, kind.split(":", 1)[1]))
    run(files[:4])  # warm-up (also the one-time channels_last)
    print("READY " + json.dumps({"info": info}), flush=True)
    for line in sys.stdin:
        chunk = json.loads(line)
        t0 = time.perf_counter()
        p = run(chunk)
        print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "p_fake": p,
                                      "peak_rss_mb": peak_rss_mb()}), flush=True)


def interleaved(run_a, run_b, chunks: list, clock=time.perf_counter) -> dict:
    """Time two paths on the same chunks, alternating A B, B A, A B ... so that a busy moment of the
    machine lands on both sides alike; the speed-up of B over A is the median of the per-chunk ratios
    (t_A / t_B), with its quartiles and range. `run_x(chunk)` does the work (its own timing, if it
    returns {"seconds": s}, wins over `clock`)."""
    def timed(run, chunk):
        t0 = clock()
        out = run(chunk)
        took = clock() - t0
        return (out.get("seconds", took) if isinstance(out, dict) else took), out

    ratios, seconds, outs = [], {"a": 0.0, "b": 0.0}, {"a": [], "b": []}
    for i, chunk in enumerate(chunks):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        t = {}
        for side in order:
            t[side], out = timed(run_a if side == "a" else run_b, chunk)
            seconds[side] += t[side]
            outs[side].append(out)
        ratios.append(t["a"] / t["b"] if t["b"] > 0 else float("nan"))
    r = np.asarray(ratios, dtype=float)
    n = sum(len(c) for c in chunks)
    return {"pairs": len(ratios), "ratios": ratios, "median_ratio": float(np.median(r)),
            "ratio_q25": float(np.percentile(r, 25)), "ratio_q75": float(np.percentile(r, 75)),
            "ratio_min": float(r.min()), "ratio_max": float(r.max()),
            "a_images_per_second": n / seconds["a"], "b_images_per_second": n / seconds["b"], "outputs": outs}


class SessionWorker:
    """The parent's handle on a `worker_session` subprocess."""

    def __init__(self, kind: str, spec: str, files_json: str, precision: str = "fp32"):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "session", "--kind", kind, "--spec", spec,
                                      "--files", files_json, "--precision", precision],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read("READY ")["info"]

    def _read(self, prefix: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        raise RuntimeError(f"benchmark session worker ended early (exit {self.proc.wait()})")

    def __call__(self, chunk: list[str]) -> dict:
        self.proc.stdin.write(json.dumps(chunk) + "\n")
        self.proc.stdin.flush()
        return self._read("RESULT ")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def cpu_capabilities() -> dict:
    """The CPU's model and the instruction sets that decide bf16 / INT8 speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        model = next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
        flags = set(next(l.split(":", 1)[1] for l in lines if l.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            "int8": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})}


def worker_latency(spec: str, files: list[str], engine: str = "torch") -> dict:
    """The app's path for one uploaded image: bytes -> decode -> face check -> forward."""
    clf = _classifier(spec, engine=engine)
    blobs = [Path(f).read_bytes() for f in files[:25]]
    clf.predict_one(blobs[0])
    times = []
    for b in blobs:
        t0 = time.perf_counter()
        clf.predict_one(b)
        times.append(time.perf_counter() - t0)
    from realitycheck.model.inference import resolve_precision

    return {"median_ms": statistics.median(times) * 1000,
            "p90_ms": sorted(times)[max(0, int(0.9 * len(times)) - 1)] * 1000,
            "precision_single": resolve_precision(clf.precision)}


def worker_explain(spec: str, files: list[str], scorecam: bool) -> dict:
    import torch
    from PIL import Image

    from realitycheck import explain

    clf = _classifier(spec, face_check=False, precision="fp32")
    imgs = [Image.open(f).convert("RGB") for f in files[:10]]
    # both sides start from the decoded image: Grad-CAM finds and aligns the face it explains (an
    # aligned card), so the forward side does too, then scores that view
    with torch.inference_mode():
        for _ in range(2):
            clf.model(_model_input(clf, imgs[0])[:1])
        t0 = time.perf_counter()
        for im in imgs:
            clf.model(_model_input(clf, im)[:1])
        forward = (time.perf_counter() - t0) / len(imgs)
    explain.explain(clf.model, clf.card, imgs[:1], faithfulness=False, progress=False)  # warm-up (copy, hooks)
    t0 = time.perf_counter()
    for im in imgs:
        explain.explain(clf.model, clf.card, [im], faithfulness=False, progress=False)
    cam = (time.perf_counter() - t0) / len(imgs)
    out = {"forward_ms": forward * 1000, "gradcam_ms": cam * 1000, "gradcam_over_forward": cam / forward}
    if scorecam:
        t0 = time.perf_counter()
        explain.explain(clf.model, clf.card, imgs[:1], method="scorecam", faithfulness=False, progress=False,
                        batch_size=64)
        out["scorecam_seconds"] = time.perf_counter() - t0
    return out


def worker_flops(spec: str, files: list[str], ours_ips: float, base_ips: float) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    clf = _classifier(spec, face_check=False)
    x = torch.zeros(1, 3, clf.card.preprocessing.crop, clf.card.preprocessing.crop)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        clf.model(x)
    gflop = fc.get_total_flops() / 1e9
    return {"gflop_per_image": gflop, "ours_gflops": gflop * ours_ips, "baseline_gflops": gflop * base_ips}


def worker_evalrss(spec: str, folder: str) -> dict:
    """Peak RSS of a whole-folder evaluation (the CLI's path), with every worker process counted."""
    from realitycheck.analysis.evaluate import evaluate_folder

    clf = _classifier(spec)
    t0 = time.perf_counter()
    res = evaluate_folder(clf, folder)
    dt = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"images": len(res.table), "seconds": dt, "images_per_second": len(res.table) / dt,
            "peak_rss_mb": peak_rss_mb(), "worker_peak_rss_mb": children}


# ------------------------------------------------------------------------------------------------
# Engines: the stages of one image, and the folder path per engine (--engines)
# ------------------------------------------------------------------------------------------------

def _label_of(path: str) -> str:
    parts = [p.lower() for p in Path(path).parts]
    return "fake" if "fake" in parts else "real"


def _graph_variants(clf, spec: str) -> list:
    """Every exported graph of this model (shipped beside it or cached), with whether it passed the gate."""
    from realitycheck.model import engines

    path = None if spec == "resnet50-original" else Path(spec)
    key = engines.file_sha256(path) if path else engines.model_sha256(clf.model, clf.card)
    out, seen = [], set()
    for folder in engines.engine_folders(key, path):
        m = engines.read_manifest(folder)
        if not m or m.get("checkpoint_sha256") != key:
            continue
        for v in m.get("variants", []):
            f = folder / v["file"]
            if (v["engine"], v["precision"]) in seen or not f.exists():
                continue
            seen.add((v["engine"], v["precision"]))
            out.append((v["engine"], v["precision"], f, v.get("passed")))
    return out


def worker_stages(spec: str, files: list[str]) -> dict:
    """Milliseconds per image of each stage, measured apart on the same images: decode, face check,
    preprocessing, and the forward pass (all views the card asks for) by each engine."""
    import numpy as np
    import torch

    from realitycheck.intake.faces import find_faces
    from realitycheck.intake.images import load_image
    from realitycheck.model import engines
    from realitycheck.model.export import images_per_second
    from realitycheck.model.views import image_views

    clf = _classifier(spec, precision="fp32")
    files = files[:64]
    t = {"decode": 0.0, "face_check": 0.0, "face_check_opencv": 0.0, "preprocess": 0.0}
    xs = []
    pre = clf.card.preprocessing
    find_faces(load_image(files[0]).image, "opencv")  # both detectors loaded before timing
    for f in files:
        t0 = time.perf_counter(); img = load_image(f).image
        t1 = time.perf_counter(); report = find_faces(img)
        t2 = time.perf_counter(); xs.append(image_views(img, pre, report)[0].tensor)  # aligned: the warp
        t3 = time.perf_counter(); find_faces(img, "opencv")  # the detector the original loop uses
        t4 = time.perf_counter()
        t["decode"] += t1 - t0; t["face_check"] += t2 - t1; t["preprocess"] += t3 - t2; t["face_check_opencv"] += t4 - t3
    out = {k: v / len(files) * 1000 for k, v in t.items()}
    views = 2 if clf.mirror_average else 1
    x = torch.stack(xs[:16]).numpy()
    xv = np.concatenate([x, x[..., ::-1]]) if views == 2 else x
    model = clf.model
    x1 = torch.from_numpy(np.ascontiguousarray(xv[:1]))
    with torch.inference_mode():
        model(x1)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < TIMING_SECONDS or n < 3:
            model(x1); n += 1
    fwd = {"torch fp32 batch 1": (time.perf_counter() - t0) / n * views * 1000}
    for prec in ("fp32", "bf16"):
        def run(b, prec=prec):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                return model(torch.from_numpy(np.ascontiguousarray(b)).contiguous(memory_format=torch.channels_last))
        fwd[f"torch {prec} batch 16"] = 1000 / images_per_second(run, xv, TIMING_SECONDS) * views
    gate = {}
    for eng, prec, f, passed in _graph_variants(clf, spec):
        ge = engines.GraphEngine(eng, prec, f)
        fwd[f"{eng} {prec} batch 16"] = 1000 / images_per_second(ge.run, xv, TIMING_SECONDS) * views
        gate[f"{eng} {prec} batch 16"] = passed
    return {"stages_ms": out, "forward_ms": fwd, "gate_passed": gate, "views": views, "images": len(files)}


def matmul_peak() -> dict:
    import torch

    out = {}
    n = 2048
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.5:
            a @ b
            reps += 1
        out[f"matmul_{name}_gflops"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
    return out


def _worker_main(args) -> None:
    files = json.loads(Path(args.files).read_text())
    workers = {  # one measurement per subprocess, so each starts from a cold, equal state
        "session": lambda: worker_session(args.kind, args.spec, files, args.precision),
        "latency": lambda: worker_latency(args.spec, files, args.engine),
        "stages": lambda: worker_stages(args.spec, files),
        "explain": lambda: worker_explain(args.spec, files, args.scorecam),
        "flops": lambda: worker_flops(args.spec, files, args.ours_ips, args.base_ips),
        "evalrss": lambda: worker_evalrss(args.spec, args.folder),
        "matmul": matmul_peak,
    }
    if args.worker not in workers:
        raise SystemExit(f"unknown worker {args.worker}")
    res = workers[args.worker]()
    if res is not None:
        print("RESULT " + json.dumps(res))


def run_worker(mode: str, spec: str, files_json: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--spec", spec, "--files", files_json]
    for k, v in extra.items():
        if isinstance(v, bool):
            if v:
                cmd.append(f"--{k}")
        else:
            cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"benchmark worker {mode} failed:\n{proc.stderr[-3000:]}")


def cold_start(spec: str, image: str, engine: str = "auto") -> float:
    """Process start -> first prediction printed, through the CLI."""
    if spec == "resnet50-original":
        return float("nan")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "realitycheck", "predict", image, "--weights", spec, "--json",
                    "--no-progress", "--engine", engine], capture_output=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def bench_model(label: str, spec: str, files_json: str, n: int, scorecam: bool, log) -> dict:
    from realitycheck.model.decision import is_fake
    from realitycheck.model.inference import (
        bf16_supported,  # "auto" is fp32 (one number per image); ask for bf16
    )

    precision = "bf16" if bf16_supported() else "fp32"
    files = json.loads(Path(files_json).read_text())
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    log(f"[{label}] the original loop (batch 1, fp32) and ours (batched, {precision}), interleaved in "
        f"{len(chunks)} chunks of {CHUNK} images ...")
    a, b = SessionWorker("baseline", spec, files_json), SessionWorker("ours", spec, files_json, precision)
    try:
        cmp = interleaved(a, b, chunks)
    finally:
        a.close(), b.close()
    base_p = [x for out in cmp["outputs"]["a"] for x in out["p_fake"]]
    ours_p = [x for out in cmp["outputs"]["b"] for x in out["p_fake"]]
    base = {"images_per_second": cmp["a_images_per_second"], "peak_rss_mb": max(o["peak_rss_mb"] for o in cmp["outputs"]["a"])}
    ours = {"images_per_second": cmp["b_images_per_second"], "precision": b.info,
            "peak_rss_mb": max(o["peak_rss_mb"] for o in cmp["outputs"]["b"])}
    diffs = [abs(x - y) for x, y in zip(base_p, ours_p)]
    t = a.info
    agree = float(np.mean(is_fake(base_p, t) == is_fake(ours_p, t)))
    log(f"[{label}] single-image latency, Grad-CAM{' and ScoreCAM' if scorecam else ''} ...")
    lat = run_worker("latency", spec, files_json)
    exp = run_worker("explain", spec, files_json, scorecam=scorecam)
    flops = run_worker("flops", spec, files_json, ours_ips=ours["images_per_second"], base_ips=base["images_per_second"])
    first = json.loads(Path(files_json).read_text())[0]
    return {
        "model": label, "images": n,
        "baseline_images_per_second": base["images_per_second"], "ours_images_per_second": ours["images_per_second"],
        "speedup": cmp["median_ratio"], "ours_precision": ours["precision"],
        "speedup_pairs": cmp["pairs"], "speedup_iqr": [cmp["ratio_q25"], cmp["ratio_q75"]],
        "speedup_range": [cmp["ratio_min"], cmp["ratio_max"]],
        "agreement": agree, "max_abs_delta_p_fake": max(diffs),
        "baseline_peak_rss_mb": base["peak_rss_mb"], "ours_peak_rss_mb": ours["peak_rss_mb"],
        "warm_single_image_ms": lat["median_ms"], "warm_single_image_p90_ms": lat["p90_ms"],
        "cold_start_seconds": cold_start(spec, first),
        "forward_ms": exp["forward_ms"], "gradcam_ms": exp["gradcam_ms"], "gradcam_over_forward": exp["gradcam_over_forward"],
        "scorecam_seconds": exp.get("scorecam_seconds"),
        **flops,
    }


def bench_engines(label: str, spec: str, files_json: str, engine_list: list[str], log) -> dict:
    """Stage breakdown, then the folder path end to end per engine, against the original loop."""
    from sklearn.metrics import roc_auc_score

    from realitycheck.model.decision import is_fake

    files = json.loads(Path(files_json).read_text())
    y = [_label_of(f) == "fake" for f in files]
    log(f"[{label}] stage breakdown ...")
    stages = run_worker("stages", spec, files_json)
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    base = SessionWorker("baseline", spec, files_json)
    rows, base_ips = [], []
    try:
        for eng in engine_list:
            log(f"[{label}] folder path with engine {eng} against the original loop (batch 1, fp32), interleaved "
                f"in {len(chunks)} chunks of {CHUNK} ...")
            ours = SessionWorker(f"folder:{eng}", spec, files_json)
            try:
                cmp = interleaved(base, ours, chunks)
            finally:
                ours.close()
            bp = [x for out in cmp["outputs"]["a"] for x in out["p_fake"]]
            rp = [x for out in cmp["outputs"]["b"] for x in out["p_fake"]]
            base_ips.append(cmp["a_images_per_second"])
            t = base.info
            agree = float(np.sum(is_fake(bp, t) == is_fake(rp, t))) / len(files)
            dauc = abs(roc_auc_score(y, rp) - roc_auc_score(y, bp)) if len(set(y)) == 2 else None
            lat = run_worker("latency", spec, files_json, engine=eng)
            rows.append({"engine_asked": eng, "engine": ours.info["engine"], "note": ours.info["note"],
                         "images_per_second": cmp["b_images_per_second"], "speedup": cmp["median_ratio"],
                         "speedup_iqr": [cmp["ratio_q25"], cmp["ratio_q75"]], "pairs": cmp["pairs"],
                         "agreement": agree, "abs_dauc": dauc, "max_abs_delta_p_fake": max(abs(a - b) for a, b in zip(bp, rp)),
                         "warm_single_image_ms": lat["median_ms"], "cold_start_seconds": cold_start(spec, files[0], eng),
                         "peak_rss_mb": max(o["peak_rss_mb"] for o in cmp["outputs"]["b"])})
    finally:
        base.close()
    return {"model": label, "images": len(files), "baseline_images_per_second": statistics.median(base_ips),
            **stages, "engines": rows}


def markdown_engines(result: dict) -> str:
    lines = ["", "Engines (folder path end to end = decode + face check + preprocess + forward, against the original "
                 "loop = batch 1 fp32 PyTorch without face check, except that an aligned card's loop finds (OpenCV's FaceDetectorYN) "
                 "and aligns the faces it scores; agreement and |dAUC| against that loop's fp32 p_fake, labels at the card's threshold):", "",
             "| model | engine asked | engine used | img/s | x original loop (median of pairs, IQR) | agreement | abs dAUC "
             "| max abs dp | warm 1-image ms | cold start s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result.get("engines", []):
        for r in m["engines"]:
            dauc = "-" if r["abs_dauc"] is None else f"{r['abs_dauc']:.4f}"
            cold = "-" if r["cold_start_seconds"] != r["cold_start_seconds"] else f"{r['cold_start_seconds']:.1f}"
            lines.append(f"| {m['model']} | {r['engine_asked']} | {r['engine']} | {r['images_per_second']:.1f} | "
                         f"{r['speedup']:.2f}x ({r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f}) | {r['agreement']:.2%} | {dauc} | {r['max_abs_delta_p_fake']:.4f} | "
                         f"{r['warm_single_image_ms']:.0f} | {cold} |")
    lines += ["", "Stages, ms per image (forward: all views the card asks for; 'gate' = passed the export's accuracy gate):", ""]
    for m in result.get("engines", []):
        st = m["stages_ms"]
        runs = " and ".join(f"{x:.1f}" for x in m.get("baseline_runs", []))
        lines.append(f"- {m['model']} (baseline {m['baseline_images_per_second']:.1f} img/s"
                     f"{f', runs {runs}' if runs else ''}): decode {st['decode']:.1f}, "
                     f"face check {st['face_check']:.1f} (OpenCV's FaceDetectorYN: {st.get('face_check_opencv', float('nan')):.1f}), preprocess {st['preprocess']:.1f}; forward: " + ", ".join(
                         f"{k} {v:.1f}" + ("" if k not in m["gate_passed"] else " (gate passed)" if m["gate_passed"][k]
                                           else " (gate FAILED)") for k, v in m["forward_ms"].items()))
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']} ({m['cores']} cores), torch {m['torch']}; bf16 instructions "
             f"{', '.join(m.get('bf16') or ['none'])}, INT8 {', '.join(m.get('int8') or ['none'])}; matmul peak fp32 "
             f"{m['matmul_fp32_gflops']:.0f} GFLOP/s, bf16 {m['matmul_bf16_gflops']:.0f} GFLOP/s; {result['date']}",
             ""]
    if result["models"]:
        lines += ["| model | images | baseline img/s | ours img/s | speedup | agreement | max abs dp | RSS base/ours MB "
                  "| warm 1-image ms | cold start s | Grad-CAM / forward | ScoreCAM s | ours GFLOP/s (% of peak) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        peak = m["matmul_bf16_gflops"] if r["ours_precision"] == "bf16" else m["matmul_fp32_gflops"]
        sc = f"{r['scorecam_seconds']:.0f}" if r.get("scorecam_seconds") else "-"
        lines.append(
            f"| {r['model']} | {r['images']} | {r['baseline_images_per_second']:.1f} | {r['ours_images_per_second']:.1f}"
            f" ({r['ours_precision']}) | {r['speedup']:.2f}x | {r['agreement']:.2%} | {r['max_abs_delta_p_fake']:.4f}"
            f" | {r['baseline_peak_rss_mb']:.0f}/{r['ours_peak_rss_mb']:.0f} | {r['warm_single_image_ms']:.0f}"
            f" | {r['cold_start_seconds']:.1f} | {r['gradcam_over_forward']:.2f}x | {sc}"
            f" | {r['ours_gflops']:.0f} ({r['ours_gflops'] / peak:.0%}) |")
    if any(r.get("speedup_pairs") for r in result["models"]):
        lines += ["", "Speed-up: the original loop and ours interleaved on the same chunks of "
                  f"{CHUNK} images (A B, B A, ...); the median of the per-chunk ratios, with quartiles and range (" + "; ".join(
            f"{r['model']}: {r['speedup']:.2f}x over {r['speedup_pairs']} pairs, IQR {r['speedup_iqr'][0]:.2f}-"
            f"{r['speedup_iqr'][1]:.2f}, range {r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}"
            for r in result["models"] if r.get("speedup_pairs")) + ")."]
    if result.get("engines"):
        lines.append(markdown_engines(result))
    fe = result.get("folder_evaluation")
    if fe:
        lines += ["", f"Whole-folder evaluation (default model, CLI path): {fe['images']} images, "
                      f"{fe['images_per_second']:.1f} img/s, peak RSS {fe['peak_rss_mb']:.0f} MB "
                      f"(main process) + {fe['worker_peak_rss_mb']:.0f} MB (largest decoding worker)"]
    return "\n".join(lines) + "\n"


def _bench_pytorch(args, result: dict, weights: str, folder: Path, files: list, files_json: str, log) -> None:
    """The PyTorch rows: the original loop vs the batched PyTorch path, per model."""
    if not args.skip_resnet50:
        # ScoreCAM on ResNet50 is ~2,048 masked forwards (minutes on 2 cores): only with --scorecam-all
        result["models"].append(bench_model("resnet50 (original head, untrained)", "resnet50-original",
                                            files_json, len(files), args.scorecam_all, log))
    if Path(weights).exists():
        from realitycheck.model.checkpoints import read_card

        result["models"].append(bench_model(f"{read_card(weights).name} (default)", weights, files_json,
                                            len(files), not args.skip_scorecam, log))
        if not args.skip_folder_rss:
            log(f"whole-folder evaluation of {folder} (peak RSS) ...")
            result["folder_evaluation"] = run_worker("evalrss", weights, files_json, folder=str(folder))
    else:
        log(f"no default weights at {weights}: skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--markdown", type=Path, default=None, help="default: the --json path with .md")
    ap.add_argument("--weights", help="default model checkpoint (default: the shipped one)")
    ap.add_argument("--skip-resnet50", action="store_true")
    ap.add_argument("--skip-scorecam", action="store_true")
    ap.add_argument("--scorecam-all", action="store_true", help="also time ScoreCAM on ResNet50 (several minutes)")
    ap.add_argument("--engines", help="compare inference engines instead of the PyTorch paths, e.g. "
                                      "torch,onnxruntime,openvino,auto (stage breakdown + folder path per engine)")
    # worker plumbing
    ap.add_argument("--worker"); ap.add_argument("--spec"); ap.add_argument("--files")
    ap.add_argument("--precision", default="auto"); ap.add_argument("--scorecam", action="store_true")
    ap.add_argument("--engine", default="torch"); ap.add_argument("--kind")
    ap.add_argument("--ours_ips", type=float); ap.add_argument("--base_ips", type=float)
    ap.add_argument("--folder"); ap.add_argument("--skip-folder-rss", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return _worker_main(args)

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    import torch

    from realitycheck.model.inference import default_weights_path

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.images
        if not folder.is_dir():
            log(f"{folder} not found: using {args.limit} synthetic 256 px images")
            folder = Path(tmp) / "images"
            _make_images(folder, args.limit)
        files = _list_images(folder, args.limit)
        files_json = str(Path(tmp) / "files.json")
        Path(files_json).write_text(json.dumps(files))
        log("matmul peak ...")
        machine = {**cpu_capabilities(), "cores": os.cpu_count(), "torch": torch.__version__,
                   **run_worker("matmul", "-", files_json)}
        log(f"CPU: {machine['cpu']}; bf16: {machine['bf16'] or 'none'}; INT8: {machine['int8'] or 'none'}")
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
                  "images": str(args.images), "models": []}
        weights = args.weights or str(default_weights_path())
        if args.engines:  # the engine comparison replaces the PyTorch rows
            result["engines"] = []
            specs = ([] if args.skip_resnet50 else [("resnet50 (original head, untrained)", "resnet50-original")])
            if Path(weights).exists():
                from realitycheck.model.checkpoints import read_card

                specs.append((f"{read_card(weights).name} (default)", weights))
            else:
                log(f"no default weights at {weights}: skipped")
            for label, spec in specs:
                result["engines"].append(bench_engines(label, spec, files_json, args.engines.split(","), log))
        else:
            _bench_pytorch(args, result, weights, folder, files, files_json, log)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.markdown or args.json.with_suffix(".md")).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
