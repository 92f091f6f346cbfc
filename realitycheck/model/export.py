"""`realitycheck export`: graphs for every engine, INT8 calibration, the accuracy gate, the engine card.

Why apart from `engines`: a Classifier at run time only reads what this writes. Exporting compares
each engine with fp32 PyTorch through the Classifier's own scoring (`Classifier.scores(runner=...)`),
so this module sits above `inference`, and `engines` below it needs nothing from either.
An INT8 or bf16 engine becomes the default only if it passes `gate` (label agreement >= 99.5% and
|dAUC| <= 0.002 on the validation split and on every source; the test split is never read here).
"""

from __future__ import annotations

import datetime
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from realitycheck.model.decision import is_fake, is_unfamiliar
from realitycheck.model.engines import (
    FP32_FILE,
    GRAPH_ENGINES,
    INT8_FILE,
    MANIFEST,
    MANIFEST_FORMAT,
    OPSET,
    EngineError,
    GraphEngine,
    beside_dir,
    cache_dir,
    export_onnx,
    export_proto,
    file_entry,
    file_sha256,
    graph_file,
    model_sha256,
    openvino_has_bf16,
    passing_variants,
    save_proto,
    write_manifest,
)
from realitycheck.model.views import deciding

GATE_AGREEMENT = 0.995  # label agreement with fp32 PyTorch, at least
GATE_DAUC = 0.002  # |ROC-AUC change| against fp32 PyTorch, at most
GATE_SPLIT = "val"  # the gate chooses the default engine, so it never reads the test split


# ---------------------------------------------------------------------------------------------
# INT8
# ---------------------------------------------------------------------------------------------

class _Batches:
    """onnxruntime CalibrationDataReader over batches of preprocessed views."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it = iter(batches)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"input": np.ascontiguousarray(x, dtype=np.float32)}

    def rewind(self):  # pragma: no cover - only some calibrators ask
        raise RuntimeError("calibration data can be read once")


def default_keep_fp32(nodes) -> list[str]:
    """The nodes `quantize_int8` leaves fp32 unless told otherwise: the first convolution and the dense layers."""
    first_conv = next((n.name for n in nodes if n.op_type == "Conv"), None)
    return [first_conv] * bool(first_conv) + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]


def quantize_int8(model, card, out: Path, calibration: Iterable[np.ndarray], *, method: str = "minmax",
                  keep_fp32: Sequence[str] | None = None, op_types: Sequence[str] | None = None) -> Path:
    """Static INT8 (QDQ, per-channel int8 weights, uint8 activations) calibrated on `calibration` batches.

    `calibration` must come from training-split images: the gate measures on the validation split.
    `keep_fp32`: node-name prefixes left unquantized; by default the first convolution (where a
    detector of fine generator artefacts looks at raw pixels) and the classifier's dense layers,
    which cost little time and moved p_fake the most when quantized (Lite2 default, 2026-11-30);
    `op_types`: quantize only these operator types.
    """
    import tempfile

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    proto = export_proto(model, card)
    with tempfile.TemporaryDirectory() as tmp:
        raw, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        save_proto(proto, raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
            import onnx

            nodes = list(onnx.load(str(pre)).graph.node)
            if keep_fp32 is None:
                keep_fp32 = default_keep_fp32(nodes)
            exclude = [n.name for n in nodes if any(n.name.startswith(k) for k in keep_fp32)]
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_suffix(".part.onnx")
            quantize_static(str(pre), str(part), _Batches(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=exclude,
                            op_types_to_quantize=list(op_types) if op_types else None,
                            extra_options={"CalibTensorRangeSymmetric": False})
    part.replace(out)
    return out


# ---------------------------------------------------------------------------------------------
# The acceptance gate
# ---------------------------------------------------------------------------------------------

def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(set(y.tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


@dataclass
class Check:
    """One comparison of an engine's p_fake with fp32 PyTorch's on one set of images."""

    name: str
    n: int
    agreement: float
    auc_reference: float | None
    auc_engine: float | None
    max_abs_dp: float
    passed: bool
    why: str = ""


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [f"{c.name}: {c.why}" for c in self.checks if not c.passed]


def _check(name: str, ref: np.ndarray, new: np.ndarray, y: np.ndarray, threshold: float,
           auc_sets: tuple[np.ndarray, np.ndarray] | None = None) -> Check:
    agree = float(np.mean(is_fake(ref, threshold) == is_fake(new, threshold))) if len(ref) else 1.0
    if auc_sets is None:
        a_ref, a_new = _auc(y, ref), _auc(y, new)
    else:  # one-class source: scored against the other class of the pooled set
        idx_y, idx = auc_sets
        a_ref, a_new = _auc(idx_y, idx[0]), _auc(idx_y, idx[1])
    why = []
    if agree < GATE_AGREEMENT:
        why.append(f"label agreement {agree:.2%} < {GATE_AGREEMENT:.1%}")
    if a_ref is not None and a_new is not None and abs(a_new - a_ref) > GATE_DAUC:
        why.append(f"|dAUC| {abs(a_new - a_ref):.4f} > {GATE_DAUC}")
    return Check(name, int(len(ref)), agree, a_ref, a_new, float(np.max(np.abs(ref - new))) if len(ref) else 0.0,
                 not why, "; ".join(why))


def gate(reference: Sequence[float], engine: Sequence[float], labels: Sequence[str], sources: Sequence[str],
         threshold: float = 0.5, *, ood_reference: Sequence[float] | None = None,
         ood_engine: Sequence[float] | None = None, ood_threshold: float | None = None) -> GateResult:
    """Accept an engine only if it keeps the answers of fp32 PyTorch overall and on every source.

    A source holding one class only (e.g. a real-only photo set) has no AUC of its own: it is
    scored against the other class of the pooled images, which asks the same question (does the
    engine move this source relative to the rest?). For a model with the unfamiliar-image check,
    the engine must also keep its flags (`ood_*`: the scores of both and the card's threshold).
    """
    ref, new = np.asarray(reference, float), np.asarray(engine, float)
    y = np.array([lab == "fake" for lab in labels], int)
    src = np.asarray(sources)
    checks = [_check("validation split (all sources)", ref, new, y, threshold)]
    for s in sorted(set(src.tolist())):
        mine = src == s
        if len(set(y[mine].tolist())) == 2:
            checks.append(_check(s, ref[mine], new[mine], y[mine], threshold))
        else:
            other = (~mine) & (y != y[mine][0])
            both = mine | other
            checks.append(_check(s, ref[mine], new[mine], y[mine], threshold,
                                 auc_sets=(y[both], (ref[both], new[both]))))
    if ood_reference is not None and ood_engine is not None and ood_threshold is not None:
        checks.append(_flag_check(np.asarray(ood_reference, float), np.asarray(ood_engine, float), ood_threshold))
    return GateResult(all(c.passed for c in checks), checks)


def _flag_check(ref: np.ndarray, new: np.ndarray, threshold: float) -> Check:
    """Do the unfamiliar-image flags of the engine agree with fp32 PyTorch's?"""
    agree = float(np.mean(is_unfamiliar(ref, threshold) == is_unfamiliar(new, threshold))) if len(ref) else 1.0
    why = f"unfamiliar-flag agreement {agree:.2%} < {GATE_AGREEMENT:.1%}" if agree < GATE_AGREEMENT else ""
    return Check("unfamiliar flag (all sources)", int(len(ref)), agree, None, None,
                 float(np.max(np.abs(ref - new))) if len(ref) else 0.0, not why, why)


# ---------------------------------------------------------------------------------------------
# Data for calibration and checks, and scoring it
# ---------------------------------------------------------------------------------------------

def source_of(path: Path, root: Path) -> str:
    """A source name: the folder given, plus a lowercase file-name prefix such as utk_ / aaf_ when present."""
    stem = path.stem
    prefix = stem.split("_", 1)[0] if "_" in stem else ""
    return f"{root.name}/{prefix}" if prefix.isalpha() and prefix.islower() else root.name


def labelled_files(data: Sequence[str | os.PathLike], split: str, seed: int = 0,
                   limit_per_source: int | None = None) -> list[tuple[Path, str, str]]:
    """(path, label, source) of the images of `data` whose split is `split`, spread evenly per source.

    `data` takes what `--data` takes (folders, NAME=FOLDER, manifests), split as `train` splits
    them (group-aware where a manifest says so), so INT8 calibration sees training images only
    and the gate only held-out ones. A plain folder's sources are named by `source_of`.
    """
    from realitycheck.intake.data import collect_sources, parse_data_arg, split_of

    out: list[tuple[Path, str, str]] = []
    for arg in data:
        arg = str(arg)
        named = arg.lower().endswith(".toml") or "=" in arg.split(os.sep, 1)[0]
        by_source: dict[str, list[tuple[Path, str, str]]] = {}
        for it in collect_sources(parse_data_arg(arg)):
            if split_of(it.path, seed=seed, group=it.group) == split:
                src = it.source if named else source_of(it.path, Path(arg))
                by_source.setdefault(src, []).append((it.path, it.label, src))
        for rows in by_source.values():
            out += spread(rows, limit_per_source) if limit_per_source else rows
    return out


def calibration_files(data: Sequence[str | os.PathLike], seed: int, n: int) -> list[tuple[Path, str, str]]:
    """The n training-split images INT8 is calibrated on, spread evenly over `data` (never test images)."""
    return spread(labelled_files(data, "train", seed), n)


def spread(rows: list, n: int) -> list:
    """n of `rows`, evenly spaced (all of them when there are no more than n)."""
    if len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def _views(clf, path: Path):
    """Every view of the image (one per aligned face, else the whole image) as `clf` preprocesses it,
    face check off; None when it cannot be read."""
    from realitycheck.model.inference import prepare

    pr = prepare(path, None, clf.card.preprocessing, face_check=False, crop_face=clf.crop_face)
    return torch.as_tensor(pr.tensor) if pr.error is None else None


def stack_views(batches: Iterable[np.ndarray]) -> torch.Tensor:
    """One float tensor of the views `preprocessed_batches` yields."""
    return torch.from_numpy(np.concatenate(list(batches))).float()


def training_seed(card) -> int:
    """The seed of the hash split the model was trained on (train/val/test shares are drawn with it)."""
    return int(((card.training or {}).get("settings") or {}).get("seed", 0) or 0)


def preprocessed_batches(clf, files: Sequence[Path], batch: int = 16, *, views: bool = False) -> Iterable[np.ndarray]:
    """Batches of the Classifier's own preprocessing (decode, draft, transform; face check off).

    views=True adds the mirror images when the card averages them, because the engine sees both.
    """
    for i in range(0, len(files), batch):
        # calibration and timing batches: each image's first view (an aligned card's largest face)
        xs = [v[0].numpy() for v in (_views(clf, f) for f in files[i:i + batch]) if v is not None]
        if xs:
            x = np.stack(xs)
            if views and clf.mirror_average:
                x = np.concatenate([x, x[..., ::-1]])
            yield x


def probabilities(ref, runners: dict, files: Sequence[Path]) -> tuple[dict, dict, list[bool]]:
    """p_fake (and unfamiliarity scores, when the model has the check) of fp32 PyTorch and of every
    runner on the same preprocessed images, decoded once; plus which files could be read.

    `ref`: a Classifier on PyTorch fp32; `runners`: (engine, precision) -> GraphEngine, each scored
    through `ref` (same views, mirror averaging and unfamiliar check) with only the forward pass swapped.
    """

    p: dict = {("torch", "fp32"): [], **{k: [] for k in runners}}
    scores: dict = {k: [] for k in p} if ref.ood is not None else {}
    ok: list[bool] = []
    for i in range(0, len(files), 16):
        views = [_views(ref, f) for f in files[i:i + 16]]
        ok += [v is not None for v in views]
        counts = [len(v) for v in views if v is not None]
        if not counts:
            continue
        x = torch.cat([v for v in views if v is not None])
        for k in p:
            pk, sk = ref.scores(x, "fp32", runner=runners.get(k))
            # per image, as predict decides: the most suspicious view's p_fake and its unfamiliarity score
            for start, n in zip(np.cumsum([0, *counts[:-1]]), counts):
                best = start + deciding(pk[start:start + n])
                p[k].append(float(pk[best]))
                if k in scores:
                    scores[k].append(float(sk[best]))
    return ({k: np.asarray(v) for k, v in p.items()}, {k: np.asarray(v) for k, v in scores.items()}, ok)


def images_per_second(fn: Callable[[np.ndarray], object], x: np.ndarray, seconds: float = 1.5) -> float:
    """Throughput of `fn` on batch `x` after one warm-up call, over at least `seconds` and two calls."""
    fn(x)  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or n < 2:
        fn(x)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def _torch_logits(clf, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return clf.model(torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)).float().numpy()


def _softmax_fake(clf, logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True))[:, clf.fake_index]


# ---------------------------------------------------------------------------------------------
# `realitycheck export`: named steps, run in order by `export`
# ---------------------------------------------------------------------------------------------

def _versions() -> dict:
    out = {}
    for mod in ("torch", "onnx", "onnxruntime", "openvino"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def _model_to_export(checkpoint, model, card, ood):
    """(checkpoint path or None, model, card, unfamiliarity statistics, cache key) of what to export."""
    from realitycheck.model import checkpoints

    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        model, card, extras = checkpoints.load_checkpoint_extras(checkpoint)
        key = file_sha256(checkpoint)
        if "ood" in extras:
            from realitycheck.model.ood import OODStats

            ood = OODStats.from_tensors(extras["ood"])
    elif model is None or card is None:
        raise ValueError("export needs a checkpoint path, or a model and its card")
    else:
        key = model_sha256(model, card)
    return checkpoint, model, card, ood, key


def _export_fp32(model, card, folder: Path, checkpoint: Path | None, key: str, threshold: float, command: str,
                 log: Callable[[str], None]) -> tuple[dict, dict]:
    """Write the fp32 graph; the manifest's header and its files so far."""
    t0 = time.perf_counter()
    fp32 = export_onnx(model, card, folder / FP32_FILE)
    log(f"exported {fp32} ({fp32.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    manifest: dict = {
        "format": MANIFEST_FORMAT, "version": 1, "checkpoint": checkpoint.name if checkpoint else card.name,
        "checkpoint_sha256": key, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "versions": _versions(), "opset": OPSET,
        "gate": {"agreement_at_least": GATE_AGREEMENT, "abs_dauc_at_most": GATE_DAUC, "threshold": threshold},
    }
    return manifest, {FP32_FILE: file_entry(fp32)}


def _fp32_variants(engines: Sequence[str]) -> list[tuple[str, str, str]]:
    """(engine, precision, file) run from the fp32 graph: fp32 on each engine, bf16 on OpenVINO where the CPU has it."""
    variants = []
    for e in engines:
        variants.append((e, "fp32", FP32_FILE))
        if e == "openvino" and openvino_has_bf16():
            variants.append((e, "bf16", FP32_FILE))
    return variants


def _calibration(ref, folders: Sequence[str | os.PathLike], batches: Iterable[np.ndarray] | None, seed: int,
                 images: int, method: str) -> tuple[dict, Iterable[np.ndarray]]:
    """(the manifest's calibration entry, the batches INT8 is calibrated on): training-split images
    of `folders`, with their mirror images when the card averages them, unless the caller gave batches."""
    if batches is not None:
        return {"folders": [], "images": None, "method": method, "split": "batches given by the caller"}, batches
    if not folders:
        raise ValueError("--int8 needs --calibration FOLDER (training-split images are used)")
    rows = calibration_files(folders, seed, images)
    if not rows:
        raise ValueError(f"no training-split images in {', '.join(map(str, folders))}")
    info = {"folders": [str(c) for c in folders], "split": f"train (hash split, seed {seed})",
            "images": len(rows), "mirror_views": bool(ref.mirror_average), "method": method,
            "sources": {s: sum(r[2] == s for r in rows) for s in sorted({r[2] for r in rows})},
            "format": "QDQ, per-channel int8 weights, uint8 activations (onnxruntime.quantization); "
                      "first convolution and dense layers kept fp32"}
    return info, preprocessed_batches(ref, [r[0] for r in rows], views=True)


def _export_int8(model, card, folder: Path, batches: Iterable[np.ndarray], method: str,
                 log: Callable[[str], None]) -> dict:
    """Calibrate and write the INT8 graph; its entry in the manifest's files."""
    t0 = time.perf_counter()
    i8 = quantize_int8(model, card, folder / INT8_FILE, batches, method=method)
    log(f"calibrated {i8} ({i8.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return file_entry(i8)


def _load_runners(variants: Sequence[tuple[str, str, str]], folder: Path, log: Callable[[str], None]) -> dict:
    """(engine, precision) -> GraphEngine for every variant that loads; one that does not is logged and left out."""
    runners = {}
    for e, prec, fname in variants:
        try:
            runners[(e, prec)] = GraphEngine(e, prec, folder / fname)
        except EngineError as exc:
            log(f"{e} {prec}: {exc}")
    return runners


def _gate_on_validation(ref, runners: dict, check: Sequence[str | os.PathLike], seed: int,
                        check_limit: int | None, ood, log: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """(the manifest's check entry, one variant row per runner): each runner gated against fp32
    PyTorch on the validation split of `check`. Validation, not test: the gate decides which engine
    ships as the default, and nothing is chosen on the test split."""
    items = labelled_files(check, GATE_SPLIT, seed, check_limit)
    if not items:
        raise ValueError(f"no validation-split images in {', '.join(map(str, check))}")
    log(f"gate: {len(items)} validation-split images from {len({r[2] for r in items})} sources")
    info = {"folders": [str(c) for c in check], "split": f"{GATE_SPLIT} (hash split, seed {seed})",
            "images": len(items), "limit_per_source": check_limit}
    p, scores, ok = probabilities(ref, runners, [r[0] for r in items])
    labels, sources = [r[1] for r in items], [r[2] for r in items]
    kept = [i for i, good in enumerate(ok) if good]
    labels, sources = [labels[i] for i in kept], [sources[i] for i in kept]
    rows = []
    for (e, prec), pe in p.items():
        if e == "torch":
            continue
        res = gate(p["torch", "fp32"], pe, labels, sources, ref.threshold,
                   ood_reference=scores.get(("torch", "fp32")), ood_engine=scores.get((e, prec)),
                   ood_threshold=ood.threshold if ood is not None else None)
        rows.append({"engine": e, "precision": prec, "file": graph_file(prec), "passed": res.passed,
                     "failed": res.failed, "checks": [asdict(c) for c in res.checks]})
    return info, rows


def _parity_rows(ref, runners: dict) -> list[dict]:
    """Without labelled data only exact-precision graphs can be accepted, on a parity check of random inputs."""
    crop = ref.card.preprocessing.crop
    x = np.random.default_rng(0).normal(size=(4, 3, crop, crop)).astype(np.float32)
    pt = _softmax_fake(ref, _torch_logits(ref, x))
    rows = []
    for (e, prec), r in runners.items():
        dp = float(np.max(np.abs(_softmax_fake(ref, r.run(x)) - pt)))
        ok = prec == "fp32" and dp <= 1e-3
        rows.append({"engine": e, "precision": prec, "file": graph_file(prec), "passed": ok,
                     "failed": [] if ok else [f"not checked on labelled data (max |dp| {dp:.4f} on random inputs); "
                                              "pass --check FOLDER"], "checks": []})
    return rows


def _timing_batch(ref, check: Sequence[str | os.PathLike], seed: int) -> np.ndarray:
    """The batch speeds are measured on: up to 16 validation-split images of `check`, else random inputs."""
    x = next(iter(preprocessed_batches(ref, [r[0] for r in labelled_files(check, GATE_SPLIT, seed, 8)], 16)), None) \
        if check else None
    if x is None:
        crop = ref.card.preprocessing.crop
        x = np.random.default_rng(1).normal(size=(16, 3, crop, crop)).astype(np.float32)
    return x


def _measure_speed(ref, runners: dict, rows: list[dict], x: np.ndarray, seconds: float,
                   log: Callable[[str], None]) -> dict:
    """Views per second of fp32 PyTorch and of each gated variant (also written into its row)."""
    speed = {"torch fp32": images_per_second(lambda b: _torch_logits(ref, b), x, seconds)}
    for row in rows:
        r = runners[row["engine"], row["precision"]]
        row["images_per_second"] = speed[r.label] = images_per_second(r.run, x, seconds)
    log("forward speed (views/s, batch %d): " % len(x) + ", ".join(f"{k} {v:.0f}" for k, v in speed.items()))
    return speed


def _choose_default(manifest: dict, speed: dict) -> list[dict]:
    """Set the manifest's default: the fastest variant that passed the gate, else PyTorch; the passing variants."""
    best = passing_variants(manifest, None)
    if best:
        b = best[0]
        manifest["default"] = {"engine": b["engine"], "precision": b["precision"],
                               "why": f"fastest that passed the gate: {b['images_per_second']:.0f} views/s vs "
                                      f"{speed['torch fp32']:.0f} for fp32 PyTorch"}
    else:
        manifest["default"] = {"engine": "torch", "precision": "fp32", "why": "no exported engine passed the gate"}
    return best


def _prune(folder: Path, files: dict, best: list[dict]) -> None:
    """Delete every graph the default does not need (all of them when PyTorch stays the default)."""
    needed = graph_file(best[0]["precision"]) if best else None
    for fname in list(files):
        if fname != needed:
            (folder / fname).unlink(missing_ok=True)
            files.pop(fname)


def export(checkpoint: str | os.PathLike | None = None, *, model=None, card=None,
           out_dir: str | os.PathLike | None = None, engines: Sequence[str] = GRAPH_ENGINES, int8: bool = False,
           calibration: Sequence[str | os.PathLike] = (), calibration_images: int = 256, calibration_method: str = "minmax",
           calibration_batches: Iterable[np.ndarray] | None = None, check: Sequence[str | os.PathLike] = (),
           check_limit: int | None = None, prune: bool = False, threshold: float | None = None, ood=None,
           timing_seconds: float = 1.5, command: str = "", int8_weights: Callable | None = None,
           log: Callable[[str], None] = lambda m: None) -> dict:
    """Export a checkpoint's engines, gate each engine/precision against fp32 PyTorch, write the engine card.

    Returns the manifest. The default engine is the fastest variant that passed the gate (PyTorch
    when none did). `calibration_batches` replaces `calibration` folders (tests use it to feed a
    deliberately broken calibration). `prune` keeps only the files the default needs (what a model
    ships with; the fp32 graph is re-exported into the cache on first use when asked for).
    `threshold`: where labels are compared (default: the card's); `ood`: the unfamiliarity
    statistics of a model given as model + card (a checkpoint brings its own). `int8_weights`:
    (model, card, calibration views) -> (the model to quantize instead, what it is, for the card),
    e.g. `training.int8_distill.distiller`; the gate still compares with *this* model's fp32 answers.
    """
    from realitycheck.model.inference import Classifier

    checkpoint, model, card, ood, key = _model_to_export(checkpoint, model, card, ood)
    for e in engines:
        if e not in GRAPH_ENGINES:
            raise ValueError(f"engine must be one of {', '.join(GRAPH_ENGINES)}, not {e!r}")
    folder = Path(out_dir) if out_dir else (beside_dir(checkpoint) if checkpoint else cache_dir(key))
    seed = training_seed(card)
    ref = Classifier(model, card, precision="fp32", engine="torch", threshold=threshold, ood=ood)

    manifest, files = _export_fp32(model, card, folder, checkpoint, key, ref.threshold, command, log)
    variants = _fp32_variants(engines)
    if int8:
        manifest["calibration"], batches = _calibration(ref, calibration, calibration_batches, seed,
                                                        calibration_images, calibration_method)
        quantized = model
        if int8_weights is not None:
            batches = list(batches)
            quantized, manifest["calibration"]["weights"] = int8_weights(model, card, stack_views(batches))
        files[INT8_FILE] = _export_int8(quantized, card, folder, batches, calibration_method, log)
        variants += [(e, "int8", INT8_FILE) for e in engines]
    runners = _load_runners(variants, folder, log)

    if check:
        manifest["check"], rows = _gate_on_validation(ref, runners, check, seed, check_limit, ood, log)
    else:
        rows = _parity_rows(ref, runners)
    x = _timing_batch(ref, check, seed)
    speed = _measure_speed(ref, runners, rows, x, timing_seconds, log)
    for row in rows:
        log(f"{row['engine']} {row['precision']}: {'passed' if row['passed'] else 'FAILED ' + '; '.join(row['failed'])}")
    manifest["variants"] = rows
    manifest["speed_views_per_second"] = {"batch": len(x), **speed}
    best = _choose_default(manifest, speed)
    if prune:  # a model ships only what its default engine needs (nothing when PyTorch stays the default)
        _prune(folder, files, best)
    manifest["files"] = files
    write_manifest(folder, manifest)
    if checkpoint is not None and folder == beside_dir(checkpoint):
        _write_card_section(checkpoint, manifest)
    log(f"default engine: {manifest['default']['engine']} {manifest['default']['precision']} "
        f"({manifest['default']['why']}); engine card {folder / MANIFEST}")
    return manifest


# ---------------------------------------------------------------------------------------------
# The engine section of the human model card
# ---------------------------------------------------------------------------------------------

def _write_card_section(checkpoint: Path, manifest: dict) -> None:
    """Record the engines in the human model card (NAME.md), replacing an earlier engines section."""
    md = checkpoint.with_suffix(".md")
    if not md.exists():
        return
    start, end = "<!-- engines -->", "<!-- /engines -->"
    text = md.read_text()
    if start in text and end in text:
        text = text[:text.index(start)].rstrip("\n") + "\n" + text[text.index(end) + len(end):].lstrip("\n")
    text = text.rstrip("\n") + "\n\n" + start + "\n" + engines_markdown(manifest) + end + "\n"
    md.write_text(text)


def engines_markdown(manifest: dict) -> str:
    """The engine card as markdown: what `realitycheck export` prints and the model card's engines section."""
    d = manifest.get("default", {})
    lines = ["## Inference engines", "",
             f"- Default engine: **{d.get('engine')} {d.get('precision')}** ({d.get('why')})",
             f"- Exported {manifest.get('created')} with {json.dumps(manifest.get('versions', {}))}; files: "
             + ", ".join(f"`{k}` ({v['bytes'] / 1e6:.1f} MB)" for k, v in manifest.get("files", {}).items())]
    cal = manifest.get("calibration")
    if cal:
        lines.append(f"- INT8 calibration: {cal.get('images')} images of split {cal.get('split')} from "
                     f"{', '.join(cal.get('folders') or []) or 'caller-given batches'} ({cal.get('method')}; {cal.get('format', '')})")
        if cal.get("weights"):
            lines.append(f"- INT8 weights: {cal['weights']}")
    chk = manifest.get("check")
    g = manifest.get("gate", {})
    if chk:
        lines.append(f"- Gate (against fp32 PyTorch): label agreement >= {g.get('agreement_at_least'):.1%} and |dAUC| <= "
                     f"{g.get('abs_dauc_at_most')} on {chk['images']} images of split {chk['split']} from "
                     f"{', '.join(chk['folders'])}, overall and per source")
    lines += ["", "| engine | precision | views/s | passed | worst agreement | worst abs dAUC | max abs dp | failed checks |",
              "|---|---|---|---|---|---|---|---|"]
    for v in manifest.get("variants", []):
        cs = v.get("checks") or []
        agree = min((c["agreement"] for c in cs), default=None)
        dauc = max((abs(c["auc_engine"] - c["auc_reference"]) for c in cs
                    if c["auc_engine"] is not None and c["auc_reference"] is not None), default=None)
        dp = max((c["max_abs_dp"] for c in cs), default=None)
        lines.append(f"| {v['engine']} | {v['precision']} | {v.get('images_per_second', 0):.0f} | "
                     f"{'yes' if v['passed'] else 'no'} | {'-' if agree is None else f'{agree:.2%}'} | "
                     f"{'-' if dauc is None else f'{dauc:.4f}'} | {'-' if dp is None else f'{dp:.3f}'} | "
                     f"{'; '.join(v.get('failed') or []) or '-'} |")
    return "\n".join(lines) + "\n"
