"""The forward pass only: PyTorch, or an exported graph run by ONNX Runtime or OpenVINO.

Why: on a CPU a graph engine runs the same network several times faster than PyTorch eager
(EfficientNets' depthwise layers most of all), and INT8 doubles that again. An engine never
decides anything: the Classifier still decodes, checks faces, preprocesses, averages mirror
views and applies the threshold; the engine only turns a batch of tensors into logits.

Engine files live in a folder beside the checkpoint (`NAME.engines/`, what a shipped model
carries) or in a cache keyed by the checkpoint's SHA-256 (`~/.cache/realitycheck/engines/`,
what first use writes). `manifest.json` there is the engine card: which graphs were exported,
the calibration data of the INT8 one, and what each engine/precision measured against fp32
PyTorch. An INT8 or bf16 engine is used only if it passed the gate (label agreement >= 99.5% and
|dAUC| <= 0.002 on the held-out test split and on every source); a missing or corrupt file means
PyTorch with a note, never a crash.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
GRAPH_ENGINES = ("onnxruntime", "openvino")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "realitycheck-engines"
FP32_FILE = "fp32.onnx"
INT8_FILE = "int8.onnx"
GATE_AGREEMENT = 0.995  # label agreement with fp32 PyTorch, at least
GATE_DAUC = 0.002  # |ROC-AUC change| against fp32 PyTorch, at most
OPSET = 17
OUTPUTS = ("logits", "features")  # older graphs (e.g. realitycheck-lite2.engines) have "logits" only


class EngineError(RuntimeError):
    """An engine file that cannot be used (missing package, missing or corrupt file)."""


# ---------------------------------------------------------------------------------------------
# Where engine files live
# ---------------------------------------------------------------------------------------------

_hash_cache: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so a process hashes a checkpoint once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def model_sha256(model, card) -> str:
    """The cache key of a model that has no file: its card and every tensor of its state_dict."""
    h = hashlib.sha256(card.to_json().encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def beside_dir(checkpoint: str | os.PathLike) -> Path:
    """`weights/NAME.engines/`: where `realitycheck export` puts the engine files of `weights/NAME.pt`."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".engines")


def cache_dir(key: str) -> Path:
    """The per-checkpoint cache folder ($REALITYCHECK_ENGINE_CACHE or ~/.cache/realitycheck/engines)."""
    env = os.environ.get("REALITYCHECK_ENGINE_CACHE")
    root = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "realitycheck" / "engines"
    return root / key[:16]


def read_manifest(folder: Path) -> dict | None:
    """The engine card in `folder`, or None when there is none or it is unreadable."""
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT else None


def _write_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=float))
    tmp.replace(folder / MANIFEST)


def _file_entry(path: Path) -> dict:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def export_onnx(model, card, out: Path) -> Path:
    """Write the fp32 graph (dynamic batch, opset 17) of `model`; weights stored as fp16 when lossless.

    The shipped checkpoints hold fp16 weights, so storing them as fp16 + one Cast each halves the
    file at no cost in accuracy; both engines fold the casts away when they load the graph.
    """
    proto = _export_proto(model, card)
    _compact_weights(proto)
    return _save_proto(proto, out)


def _export_proto(model, card):
    """The graph of `model` with two outputs: the logits and the penultimate features (the classifier
    head's input), which the unfamiliar-image check scores (`ood.OODStats`); both dynamic in batch."""
    import io

    import onnx
    import torch

    from realitycheck.model.ood import FeatureTap, head_module

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            with FeatureTap(self.net, card.arch) as tap:
                logits = self.net(x)
            return logits, tap.features

    m = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    try:
        head_module(m, card.arch)
        net, outputs = LogitsAndFeatures(m), OUTPUTS
    except (AttributeError, ValueError):  # not laid out as its architecture says: no features to give
        net, outputs = m, OUTPUTS[:1]
    crop = card.preprocessing.crop
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, crop, crop), buf, input_names=["input"], output_names=list(outputs),
                          dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _compact_weights(proto) -> None:
    """fp32 initializers -> fp16 + Cast, only when every value survives the round trip exactly."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    floats = {n: a for n, a in arrays.items() if a.dtype == np.float32 and a.size > 16}
    if not floats or any(not np.array_equal(a.astype(np.float16).astype(np.float32), a) for a in floats.values()):
        return
    keep = [init for init in graph.initializer if init.name not in floats]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    casts = []
    for name, a in floats.items():
        graph.initializer.append(numpy_helper.from_array(a.astype(np.float16), name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT, name=name + "_cast"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)


def _save_proto(proto, out: Path) -> Path:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


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

    `calibration` must come from training-split images: the gate measures on the test split.
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
    proto = _export_proto(model, card)
    with tempfile.TemporaryDirectory() as tmp:
        raw, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        _save_proto(proto, raw)
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
# Running an exported graph
# ---------------------------------------------------------------------------------------------

def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


class GraphEngine:
    """One exported graph loaded into ONNX Runtime or OpenVINO: `run(x)` -> logits, both float32 NCHW.

    `run_with_features(x)` also gives the penultimate features when the graph has that output
    (`has_features`), so a model with the unfamiliar-image check can run on the engine too.
    """

    def __init__(self, engine: str, precision: str, path: Path):
        self.engine, self.precision, self.path = engine, precision, Path(path)
        self._local = threading.local()
        try:
            if engine == "onnxruntime":
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = _threads()
                opts.inter_op_num_threads = 1
                # Idle intra-op threads sleep instead of spinning: a folder run decodes and finds faces in
                # another process on the same cores, and spinning threads took its CPU (end to end on 2
                # cores: 66 vs 60 img/s, `benchmarks/run.py --engines`)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.log_severity_level = 3
                self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
                names = [o.name for o in self._session.get_outputs()]
            elif engine == "openvino":
                import openvino as ov

                hint = "bf16" if precision == "bf16" else "f32"
                self._compiled = ov.Core().compile_model(str(self.path), "CPU", {
                    "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": _threads(),
                    "PERFORMANCE_HINT": "LATENCY"})
                names = [n for o in self._compiled.outputs for n in o.get_names()]  # an output may have several
            else:
                raise EngineError(f"unknown engine {engine!r}; choose from {', '.join(GRAPH_ENGINES)}")
        except ImportError as exc:
            raise EngineError(f"{engine} is not installed ({exc})") from None
        except EngineError:
            raise
        except Exception as exc:  # a damaged graph: each engine raises its own error types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"{self.path}: not a loadable {engine} graph ({first})") from None
        self.has_features = "features" in names
        self._outputs = ["logits", "features"] if self.has_features else ["logits"]
        if "logits" not in names:
            raise EngineError(f"{self.path}: the graph has no 'logits' output (outputs: {', '.join(names) or 'none'})")

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_with_features(x)[0]

    def run_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, penultimate features or None when the graph lacks them) for a batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.engine == "onnxruntime":
            out = self._session.run(self._outputs, {"input": x})
        else:
            req = getattr(self._local, "request", None)  # an infer request serves one thread at a time
            if req is None:
                req = self._local.request = self._compiled.create_infer_request()
            req.infer({0: x})
            out = [np.array(req.get_tensor(self._compiled.output(name)).data, dtype=np.float32, copy=True)
                   for name in self._outputs]
        return out[0], (out[1] if self.has_features else None)


def _graph_file(precision: str) -> str:
    return INT8_FILE if precision == "int8" else FP32_FILE


# ---------------------------------------------------------------------------------------------
# Choosing the engine for a Classifier
# ---------------------------------------------------------------------------------------------

@dataclass
class Choice:
    """What `select` picked: a graph engine (or None for PyTorch) and a note for the user, if any."""

    engine: GraphEngine | None
    note: str = ""

    @property
    def label(self) -> str:
        return self.engine.label if self.engine else "torch"


def _export_hint(path: Path | None) -> str:
    return f"rebuild it with `realitycheck export {path}`" if path else "rebuild it with `realitycheck export CKPT`"


def _folders(key: str, path: Path | None) -> list[Path]:
    return ([beside_dir(path)] if path else []) + [cache_dir(key)]


def _passing(manifest: dict, engine: str | None) -> list[dict]:
    """The manifest's variants that passed the gate, fastest first (only those of `engine` if given)."""
    rows = [v for v in manifest.get("variants", []) if v.get("passed") and (engine is None or v.get("engine") == engine)]
    return sorted(rows, key=lambda v: -(v.get("images_per_second") or 0))


def select(engine: str, *, model, card, path: str | os.PathLike | None = None,
           export_on_first_use: bool = True) -> Choice:
    """The forward pass a Classifier should use; never raises for a missing or damaged engine file.

    auto: the default the checkpoint's engine card chose by measurement, PyTorch if it has none.
    onnxruntime/openvino: the fastest variant of that engine that passed the gate, else its fp32
    graph, exported into the cache on first use.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "torch":
        return Choice(None)
    path = Path(path) if path else None
    if engine == "auto" and not (beside_dir(path) if path else cache_dir("x").parent).is_dir():
        return Choice(None)  # nothing was exported: no need to hash the weights to know it
    try:
        key = file_sha256(path) if path and path.exists() else model_sha256(model, card)
    except OSError as exc:
        return Choice(None, f"engine: cannot read {path} ({exc}); using PyTorch")
    found = [(f, m) for f in _folders(key, path) if (m := read_manifest(f)) and m.get("checkpoint_sha256") == key]
    stale = [f for f in _folders(key, path) if (m := read_manifest(f)) and m.get("checkpoint_sha256") != key]

    wanted: list[tuple[str, str]] = []
    if engine == "auto":
        default = next((m.get("default") for _, m in found if m.get("default")), None)
        if not default or default.get("engine") == "torch":
            if stale and not found:
                return Choice(None, f"engine: {stale[0]} was exported from a different checkpoint; using PyTorch "
                                    f"({_export_hint(path)})")
            return Choice(None)
        if default.get("precision") == "bf16" and not openvino_has_bf16():
            # chosen on a CPU with bf16; this one has none: the fastest variant that passed and runs here
            wanted += [(v["engine"], v["precision"]) for _, m in found for v in _passing(m, None)
                       if v["precision"] != "bf16"]
            if not wanted:
                return Choice(None, "engine: the default engine runs in bf16, which this CPU lacks; using PyTorch")
        else:
            wanted.append((default["engine"], default["precision"]))
    else:
        for _, m in found:
            wanted += [(v["engine"], v["precision"]) for v in _passing(m, engine)]
        wanted.append((engine, "fp32"))

    skipped: list[str] = []
    for eng, precision in dict.fromkeys(wanted):  # keep order, drop repeats
        fname = _graph_file(precision)
        listed = [(f, m) for f, m in found if fname in (m.get("files") or {})]
        for folder, m in listed:
            f = folder / fname
            if not f.exists():
                return Choice(None, f"engine file {f} is missing; using PyTorch ({_export_hint(path)})")
            if file_sha256(f) != m["files"][fname].get("sha256"):
                return Choice(None, f"engine file {f} is corrupt (checksum differs from its manifest); using PyTorch "
                                    f"({_export_hint(path)})")
            try:
                return Choice(GraphEngine(eng, precision, f))
            except EngineError as exc:
                return Choice(None, f"engine file {f} could not be loaded: {exc}; using PyTorch ({_export_hint(path)})")
        if precision == "int8":
            skipped.append(f"{eng} int8 (no INT8 graph exported)")
            continue
        if not export_on_first_use:
            skipped.append(f"{eng} {precision} (not exported)")
            continue
        try:
            t0 = time.perf_counter()
            folder = cache_dir(key)
            f = export_onnx(model, card, folder / FP32_FILE)
            m = read_manifest(folder) or {"format": MANIFEST_FORMAT, "version": 1, "checkpoint": str(path or card.name),
                                          "checkpoint_sha256": key, "files": {}, "variants": []}
            m.setdefault("files", {})[FP32_FILE] = _file_entry(f)
            _write_manifest(folder, m)
            ge = GraphEngine(eng, precision, f)
            return Choice(ge, f"engine: exported the {precision} graph on first use in {time.perf_counter() - t0:.1f} s "
                              f"(cached in {folder})")
        except Exception as exc:  # export needs onnx and a writable cache; neither may be there
            return Choice(None, f"engine: {eng} unavailable ({type(exc).__name__}: {str(exc)[:200]}); using PyTorch")
    return Choice(None, f"engine: {engine} unavailable ({'; '.join(skipped)}); using PyTorch")


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
    agree = float(np.mean((ref >= threshold) == (new >= threshold))) if len(ref) else 1.0
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
    checks = [_check("held-out test split (all sources)", ref, new, y, threshold)]
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
    agree = float(np.mean((ref > threshold) == (new > threshold))) if len(ref) else 1.0
    why = f"unfamiliar-flag agreement {agree:.2%} < {GATE_AGREEMENT:.1%}" if agree < GATE_AGREEMENT else ""
    return Check("unfamiliar flag (all sources)", int(len(ref)), agree, None, None,
                 float(np.max(np.abs(ref - new))) if len(ref) else 0.0, not why, why)


# ---------------------------------------------------------------------------------------------
# Data for calibration and checks
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
            out += _spread(rows, limit_per_source) if limit_per_source else rows
    return out


def calibration_files(data: Sequence[str | os.PathLike], seed: int, n: int) -> list[tuple[Path, str, str]]:
    """The n training-split images INT8 is calibrated on, spread evenly over `data` (never test images)."""
    return _spread(labelled_files(data, "train", seed), n)


def _spread(rows: list, n: int) -> list:
    """n of `rows`, evenly spaced (all of them when there are no more than n)."""
    if len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def preprocessed_batches(clf, files: Sequence[Path], batch: int = 16, *, views: bool = False) -> Iterable[np.ndarray]:
    """Batches of the Classifier's own preprocessing (decode, draft, transform; face check off).

    views=True adds the mirror images when the card averages them, because the engine sees both.
    """
    from realitycheck.model.inference import prepare

    for i in range(0, len(files), batch):
        xs = []
        for f in files[i:i + batch]:
            pr = prepare(f, None, clf.card.preprocessing, face_check=False, crop_face=clf.crop_face)
            if pr.error is None:
                xs.append(pr.tensor[0].numpy())  # the first view (an aligned card's largest face)
        if xs:
            x = np.stack(xs)
            if views and clf.mirror_average:
                x = np.concatenate([x, x[..., ::-1]])
            yield x


def _images_per_second(fn: Callable[[np.ndarray], object], x: np.ndarray, seconds: float = 1.5) -> float:
    fn(x)  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or n < 2:
        fn(x)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# `realitycheck export`
# ---------------------------------------------------------------------------------------------

def _versions() -> dict:
    out = {}
    for mod in ("torch", "onnx", "onnxruntime", "openvino"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def openvino_has_bf16() -> bool:
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def export(checkpoint: str | os.PathLike | None = None, *, model=None, card=None,
           out_dir: str | os.PathLike | None = None, engines: Sequence[str] = GRAPH_ENGINES, int8: bool = False,
           calibration: Sequence[str | os.PathLike] = (), calibration_images: int = 256, calibration_method: str = "minmax",
           calibration_batches: Iterable[np.ndarray] | None = None, check: Sequence[str | os.PathLike] = (),
           check_limit: int | None = None, prune: bool = False, threshold: float | None = None, ood=None,
           timing_seconds: float = 1.5, command: str = "", log: Callable[[str], None] = lambda m: None) -> dict:
    """Export a checkpoint's engines, gate each engine/precision against fp32 PyTorch, write the engine card.

    Returns the manifest. The default engine is the fastest variant that passed the gate (PyTorch
    when none did). `calibration_batches` replaces `calibration` folders (tests use it to feed a
    deliberately broken calibration). `prune` keeps only the files the default needs (what a model
    ships with; the fp32 graph is re-exported into the cache on first use when asked for).
    `threshold`: where labels are compared (default: the card's); `ood`: the unfamiliarity
    statistics of a model given as model + card (a checkpoint brings its own).
    """
    from realitycheck.model import checkpoints
    from realitycheck.model.inference import Classifier

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
    for e in engines:
        if e not in GRAPH_ENGINES:
            raise ValueError(f"engine must be one of {', '.join(GRAPH_ENGINES)}, not {e!r}")
    folder = Path(out_dir) if out_dir else (beside_dir(checkpoint) if checkpoint else cache_dir(key))
    seed = int(((card.training or {}).get("settings") or {}).get("seed", 0) or 0)
    ref = Classifier(model, card, precision="fp32", engine="torch", threshold=threshold, ood=ood)
    threshold = ref.threshold

    t0 = time.perf_counter()
    fp32 = export_onnx(model, card, folder / FP32_FILE)
    log(f"exported {fp32} ({fp32.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    files = {FP32_FILE: _file_entry(fp32)}
    manifest: dict = {
        "format": MANIFEST_FORMAT, "version": 1, "checkpoint": checkpoint.name if checkpoint else card.name,
        "checkpoint_sha256": key, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "versions": _versions(), "opset": OPSET, "gate": {"agreement_at_least": GATE_AGREEMENT, "abs_dauc_at_most": GATE_DAUC,
                                                        "threshold": threshold},
    }
    variants = []
    for e in engines:
        variants.append((e, "fp32", FP32_FILE))
        if e == "openvino" and openvino_has_bf16():
            variants.append((e, "bf16", FP32_FILE))

    if int8:
        if calibration_batches is None:
            if not calibration:
                raise ValueError("--int8 needs --calibration FOLDER (training-split images are used)")
            rows = calibration_files(calibration, seed, calibration_images)
            if not rows:
                raise ValueError(f"no training-split images in {', '.join(map(str, calibration))}")
            calibration_batches = preprocessed_batches(ref, [r[0] for r in rows], views=True)
            manifest["calibration"] = {
                "folders": [str(c) for c in calibration], "split": f"train (hash split, seed {seed})",
                "images": len(rows), "mirror_views": bool(ref.mirror_average), "method": calibration_method,
                "sources": {s: sum(r[2] == s for r in rows) for s in sorted({r[2] for r in rows})},
                "format": "QDQ, per-channel int8 weights, uint8 activations (onnxruntime.quantization); "
                          "first convolution and dense layers kept fp32"}
        else:
            manifest["calibration"] = {"folders": [], "images": None, "method": calibration_method,
                                       "split": "batches given by the caller"}
        t0 = time.perf_counter()
        i8 = quantize_int8(model, card, folder / INT8_FILE, calibration_batches, method=calibration_method)
        log(f"calibrated {i8} ({i8.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        files[INT8_FILE] = _file_entry(i8)
        variants += [(e, "int8", INT8_FILE) for e in engines]

    runners = {}
    for e, prec, fname in variants:
        try:
            runners[(e, prec)] = GraphEngine(e, prec, folder / fname)
        except EngineError as exc:
            log(f"{e} {prec}: {exc}")

    rows = []
    if check:
        items = labelled_files(check, "test", seed, check_limit)
        if not items:
            raise ValueError(f"no test-split images in {', '.join(map(str, check))}")
        log(f"gate: {len(items)} test-split images from {len({r[2] for r in items})} sources")
        manifest["check"] = {"folders": [str(c) for c in check], "split": f"test (hash split, seed {seed})",
                             "images": len(items), "limit_per_source": check_limit}
        p, scores, ok = _probabilities(ref, runners, [r[0] for r in items])
        labels, sources = [r[1] for r in items], [r[2] for r in items]
        kept = [i for i, good in enumerate(ok) if good]
        labels, sources = [labels[i] for i in kept], [sources[i] for i in kept]
        for (e, prec), pe in p.items():
            if e == "torch":
                continue
            res = gate(p["torch", "fp32"], pe, labels, sources, threshold,
                       ood_reference=scores.get(("torch", "fp32")), ood_engine=scores.get((e, prec)),
                       ood_threshold=ood.threshold if ood is not None else None)
            rows.append({"engine": e, "precision": prec, "file": _graph_file(prec), "passed": res.passed,
                         "failed": res.failed, "checks": [asdict(c) for c in res.checks]})
    else:
        # no labelled data: only exact-precision graphs can be accepted, on a parity check of random inputs
        x = np.random.default_rng(0).normal(size=(4, 3, card.preprocessing.crop, card.preprocessing.crop)).astype(np.float32)
        pt = _softmax_fake(ref, _torch_logits(ref, x))
        for (e, prec), r in runners.items():
            dp = float(np.max(np.abs(_softmax_fake(ref, r.run(x)) - pt)))
            ok = prec == "fp32" and dp <= 1e-3
            rows.append({"engine": e, "precision": prec, "file": _graph_file(prec), "passed": ok,
                         "failed": [] if ok else [f"not checked on labelled data (max |dp| {dp:.4f} on random inputs); "
                                                  "pass --check FOLDER"], "checks": []})

    x = next(iter(preprocessed_batches(ref, [r[0] for r in labelled_files(check, "test", seed, 8)], 16)), None) \
        if check else None
    if x is None:
        x = np.random.default_rng(1).normal(size=(16, 3, card.preprocessing.crop, card.preprocessing.crop)).astype(np.float32)
    speed = {"torch fp32": _images_per_second(lambda b: _torch_logits(ref, b), x, timing_seconds)}
    for row in rows:
        r = runners[row["engine"], row["precision"]]
        row["images_per_second"] = speed[r.label] = _images_per_second(r.run, x, timing_seconds)
    log("forward speed (views/s, batch %d): " % len(x) + ", ".join(f"{k} {v:.0f}" for k, v in speed.items()))
    for row in rows:
        log(f"{row['engine']} {row['precision']}: {'passed' if row['passed'] else 'FAILED ' + '; '.join(row['failed'])}")
    manifest["variants"] = rows
    manifest["speed_views_per_second"] = {"batch": len(x), **speed}
    best = _passing(manifest, None)
    if best:
        b = best[0]
        manifest["default"] = {"engine": b["engine"], "precision": b["precision"],
                               "why": f"fastest that passed the gate: {b['images_per_second']:.0f} views/s vs "
                                      f"{speed['torch fp32']:.0f} for fp32 PyTorch"}
    else:
        manifest["default"] = {"engine": "torch", "precision": "fp32", "why": "no exported engine passed the gate"}
    if prune:  # a model ships only what its default engine needs (nothing when PyTorch stays the default)
        needed = _graph_file(best[0]["precision"]) if best else None
        for fname in list(files):
            if fname != needed:
                (folder / fname).unlink(missing_ok=True)
                files.pop(fname)
    manifest["files"] = files
    _write_manifest(folder, manifest)
    if checkpoint is not None and folder == beside_dir(checkpoint):
        _write_card_section(checkpoint, manifest)
    log(f"default engine: {manifest['default']['engine']} {manifest['default']['precision']} "
        f"({manifest['default']['why']}); engine card {folder / MANIFEST}")
    return manifest


def _torch_logits(clf, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return clf.model(torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)).float().numpy()


def _softmax_fake(clf, logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True))[:, clf.fake_index]


def _probabilities(ref, runners: dict, files: Sequence[Path]) -> tuple[dict, dict, list[bool]]:
    """p_fake (and unfamiliarity scores, when the model has the check) of fp32 PyTorch and of every
    runner on the same preprocessed images, decoded once; plus which files could be read."""
    import torch

    from realitycheck.model.inference import prepare

    p: dict = {("torch", "fp32"): [], **{k: [] for k in runners}}
    scores: dict = {k: [] for k in p} if ref.ood is not None else {}
    ok: list[bool] = []
    clones = {("torch", "fp32"): ref}
    for k in runners:
        clones[k] = copy.copy(ref)
        clones[k].engine = runners[k]
    for i in range(0, len(files), 16):
        xs = []
        for f in files[i:i + 16]:
            pr = prepare(f, None, ref.card.preprocessing, face_check=False, crop_face=ref.crop_face)
            ok.append(pr.error is None)
            if pr.error is None:
                xs.append(torch.as_tensor(pr.tensor)[0])  # the first view (an aligned card's largest face)
        if not xs:
            continue
        x = torch.stack(xs)
        for k, c in clones.items():
            pk, sk = c.scores(x, "fp32")
            p[k] += pk.tolist()
            if k in scores:
                scores[k] += sk.tolist()
    return ({k: np.asarray(v) for k, v in p.items()}, {k: np.asarray(v) for k, v in scores.items()}, ok)


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
    d = manifest.get("default", {})
    lines = ["## Inference engines", "",
             f"- Default engine: **{d.get('engine')} {d.get('precision')}** ({d.get('why')})",
             f"- Exported {manifest.get('created')} with {json.dumps(manifest.get('versions', {}))}; files: "
             + ", ".join(f"`{k}` ({v['bytes'] / 1e6:.1f} MB)" for k, v in manifest.get("files", {}).items())]
    cal = manifest.get("calibration")
    if cal:
        lines.append(f"- INT8 calibration: {cal.get('images')} images of split {cal.get('split')} from "
                     f"{', '.join(cal.get('folders') or []) or 'caller-given batches'} ({cal.get('method')}; {cal.get('format', '')})")
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
