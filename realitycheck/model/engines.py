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
|dAUC| <= 0.002 on the validation split and on every source); a missing or corrupt file means
PyTorch with a note, never a crash.

This module is what a Classifier needs at run time: read the card, pick and load a graph, export
the fp32 graph on first use. `realitycheck export` (INT8 calibration, the gate, the card) lives in
`realitycheck.model.export`, which scores through the Classifier and so sits above it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
GRAPH_ENGINES = ("onnxruntime", "openvino")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "realitycheck-engines"
FP32_FILE = "fp32.onnx"
INT8_FILE = "int8.onnx"
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


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write the engine card through a temporary file, so a reader never sees half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=float))
    tmp.replace(folder / MANIFEST)


def file_entry(path: Path) -> dict:
    """A graph's line in the card's `files`: the checksum `select` verifies before loading it."""
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------
# The fp32 graph (also exported on first use)
# ---------------------------------------------------------------------------------------------

def export_onnx(model, card, out: Path) -> Path:
    """Write the fp32 graph (dynamic batch, opset 17) of `model`; weights stored as fp16 when lossless.

    The shipped checkpoints hold fp16 weights, so storing them as fp16 + one Cast each halves the
    file at no cost in accuracy; both engines fold the casts away when they load the graph.
    """
    proto = export_proto(model, card)
    _compact_weights(proto)
    return save_proto(proto, out)


def export_proto(model, card):
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


def save_proto(proto, out: Path) -> Path:
    """Save an ONNX graph through a temporary file, so a crash never leaves a half-written graph."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out)
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


def graph_file(precision: str) -> str:
    """The file of a precision's graph: bf16 runs the fp32 graph (OpenVINO's precision hint)."""
    return INT8_FILE if precision == "int8" else FP32_FILE


def openvino_has_bf16() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (a bf16 variant is exported and chosen only then)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


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


def engine_folders(key: str, path: Path | None) -> list[Path]:
    """Where a model's engine card may be, in the order looked in: beside its file, then the cache."""
    return ([beside_dir(path)] if path else []) + [cache_dir(key)]


def passing_variants(manifest: dict, engine: str | None) -> list[dict]:
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
    found = [(f, m) for f in engine_folders(key, path) if (m := read_manifest(f)) and m.get("checkpoint_sha256") == key]
    stale = [f for f in engine_folders(key, path) if (m := read_manifest(f)) and m.get("checkpoint_sha256") != key]

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
            wanted += [(v["engine"], v["precision"]) for _, m in found for v in passing_variants(m, None)
                       if v["precision"] != "bf16"]
            if not wanted:
                return Choice(None, "engine: the default engine runs in bf16, which this CPU lacks; using PyTorch")
        else:
            wanted.append((default["engine"], default["precision"]))
    else:
        for _, m in found:
            wanted += [(v["engine"], v["precision"]) for v in passing_variants(m, engine)]
        wanted.append((engine, "fp32"))

    skipped: list[str] = []
    for eng, precision in dict.fromkeys(wanted):  # keep order, drop repeats
        fname = graph_file(precision)
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
            m.setdefault("files", {})[FP32_FILE] = file_entry(f)
            write_manifest(folder, m)
            ge = GraphEngine(eng, precision, f)
            return Choice(ge, f"engine: exported the {precision} graph on first use in {time.perf_counter() - t0:.1f} s "
                              f"(cached in {folder})")
        except Exception as exc:  # export needs onnx and a writable cache; neither may be there
            return Choice(None, f"engine: {eng} unavailable ({type(exc).__name__}: {str(exc)[:200]}); using PyTorch")
    return Choice(None, f"engine: {engine} unavailable ({'; '.join(skipped)}); using PyTorch")
