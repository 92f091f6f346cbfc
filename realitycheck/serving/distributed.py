"""Scoring folders on a Ray cluster (Ray Data) with the same per-image work as the local path.

The pipeline is the local one cut at its natural seam: `inference.prepare` (read, decode, face
check, card preprocessing) runs as stateless CPU tasks, and `Classifier.predict_prepared` (the
forward pass and the card's threshold) runs in a pool of actors that load the checkpoint once each.
The driver turns the streamed results into the same `Prediction`s, in input order, so
`evaluate.evaluate_items(predict_stream=predict_stream(clf))` writes the same CSV, resumes from it
and computes the same metrics as a local run.

Faults: Ray Data restarts a model actor that dies and retries its batches (`max_restarts=-1`,
`max_task_retries=-1` by default); the output of a failed batch is discarded, so every image is
scored once. An unreadable image is a row with its error, never a failed task.

Training with torchrun lives in `ddp` (process groups) and `train` (the steps).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from realitycheck.intake.provenance import Provenance, read_provenance
from realitycheck.model.inference import (
    Classifier,
    Prediction,
    Prepared,
    prepare,
)

URI_MARK = "://"
DECODE_TASK_MEMORY = 1 << 30  # bytes reserved per decode task (measured: see build_dataset)


class RayUnavailableError(RuntimeError):
    """Ray is not installed or the cluster cannot be reached; the message says which."""


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------

def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray; reuse one already up."""
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is in requirements.txt
        raise RayUnavailableError("--ray needs the ray[data] package (pip install -r requirements.txt)") from None
    if ray.is_initialized():
        return
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS"):
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)  # a local Ray on this machine
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise RayUnavailableError(f"cannot start or join Ray at {where}: {str(exc).splitlines()[0]}") from None
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own bar from the driver
    ctx.print_on_execution_start = False


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nobody listens at (Ray itself waits minutes for its GCS)."""
    import socket

    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailableError(f"no Ray cluster answers at {address} ({exc}); start one with `ray start --head` "
                                  "or leave out --ray-address for a local Ray") from None


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def read_listing(path: str | os.PathLike) -> list[str]:
    """Paths or URIs, one a line (blank lines and # comments skipped): a listing file for `predict --ray`."""
    out = []
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def is_uri(path: str) -> bool:
    return URI_MARK in path and not Path(path).exists()


def _read_uri(uri: str) -> bytes:
    """Bytes of `s3://`, `gs://`, `hdfs://`... through pyarrow's filesystems (what Ray Data reads with)."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    with fs.open_input_file(inner) as fh:
        return fh.read()


# ---------------------------------------------------------------------------------------------
# The two stages
# ---------------------------------------------------------------------------------------------

# A Prepared travels between the stages as one row: its tensor as raw float32 bytes (so images with
# different numbers of views share one column), its other fields as JSON, derived from the dataclass so
# a field added to Prepared travels without an edit here. Pictures stay where they were decoded.
_NOT_SENT = ("tensor", "image", "face_report")


def _json_value(o):
    return o.item() if isinstance(o, np.generic) else list(o)


def prepared_row(pr: Prepared, path: str, declared: Provenance) -> dict:
    meta = {f.name: getattr(pr, f.name) for f in fields(Prepared) if f.name not in _NOT_SENT}
    return {"path": path, "tensor": pr.tensor.numpy().astype(np.float32).tobytes() if pr.error is None else b"",
            "prepared": json.dumps(meta, default=_json_value), "provenance": json.dumps(declared.to_dict())}


def prepared_from_row(tensor: bytes, meta: str, view_shape: tuple) -> Prepared:
    pr = Prepared(**json.loads(meta))
    pr.boxes = [tuple(b) for b in pr.boxes]
    if pr.error is None:
        pr.tensor = np.frombuffer(tensor, dtype=np.float32).reshape(-1, *view_shape).copy()
    return pr


def decode_batch(batch: dict, *, preprocessing, face_check: bool, crop_face: bool) -> dict:
    """CPU stage: `inference.prepare` on each path; a bad image becomes a row with its error."""
    rows = []
    for path in batch["path"]:
        path = str(path)
        if is_uri(path):
            try:
                data = _read_uri(path)
            except (OSError, ValueError) as exc:  # pyarrow: missing object, no access, unknown scheme
                pr = Prepared(path, error=f"{path}: cannot read ({str(exc).splitlines()[0]})")
                declared = read_provenance(path)  # says the file cannot be read
            else:
                pr = prepare(data, path, preprocessing, face_check=face_check, crop_face=crop_face)
                declared = read_provenance(data)  # here, where the bytes are: the driver may not reach them
        else:  # exactly what the local loader does with a path
            pr = prepare(path, None, preprocessing, face_check=face_check, crop_face=crop_face)
            declared = read_provenance(path)
        rows.append(prepared_row(pr, path, declared))
    return {k: np.array([r[k] for r in rows], dtype=object) for k in ("path", "tensor", "prepared", "provenance")}


class ModelActor:
    """Model stage: loads the checkpoint once per actor, then scores batches of decoded images."""

    def __init__(self, weights: str, classifier_kwargs: dict):
        self.clf = Classifier.from_file(weights, **classifier_kwargs)
        crop = self.clf.card.preprocessing.crop
        self.view_shape = (3, crop, crop)

    def __call__(self, batch: dict) -> dict:
        prepared = [prepared_from_row(tensor, meta, self.view_shape)
                    for tensor, meta in zip(batch["tensor"], batch["prepared"])]
        preds = self.clf.predict_prepared(prepared)
        for pred, declared in zip(preds, batch["provenance"]):
            pred.provenance = Provenance.from_dict(json.loads(declared))
        return {
            "path": batch["path"],
            "row": np.array([json.dumps(p.to_dict()) for p in preds], dtype=object),
        }


def _prediction_from_row(row: str) -> Prediction:
    d = json.loads(row)
    d["name"] = d.pop("path")
    d["face_boxes"] = [tuple(b) for b in d.get("face_boxes") or []]
    if d.get("provenance") is not None:
        d["provenance"] = Provenance.from_dict(d["provenance"])
    return Prediction(**d)


def classifier_kwargs(clf: Classifier) -> dict:
    """What every actor needs to rebuild `clf` from its checkpoint file: the same settings, not guessed."""
    return {"threshold": clf.threshold, "precision": clf.precision, "batch_size": clf.batch_size,
            "face_check": clf.face_check, "crop_face": clf.crop_face, "mirror_average": clf.mirror_average,
            "views": clf.views}


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------

def build_dataset(clf: Classifier, paths: Sequence[str], *, actors: int = 1, cpus_per_actor: float = 1.0,
                  gpus_per_actor: float = 0.0, decode_cpus: float = 1.0, fuse_decode: bool = False):
    """The Ray Data pipeline for `paths`: list -> decode tasks -> model actor pool. Lazy (nothing runs yet)."""
    import ray
    import ray.data

    if clf.path is None:
        raise ValueError("Ray scoring needs a checkpoint file (each actor loads it); this classifier has none")
    weights = str(Path(clf.path).resolve())
    n = len(paths)
    batch = clf.batch_size
    # blocks of about two model batches: small enough to spread over the decode tasks, and a dead
    # actor only loses (and redoes) a little work
    blocks = max(1, min(n, -(-n // (2 * batch))))
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
    # A decode worker holds about 1 GiB (torch imported: 0.7 GiB; a batch of 768 px portraits being
    # decoded: 0.25 GiB), reserved so a node is not oversubscribed. Declaring it also keeps decoding
    # its own stage of CPU tasks, scaling with the CPUs rather than with the model copies: Ray fuses
    # stages with equal resource arguments (one-CPU tasks into one-CPU actors) into the actors.
    # Actors that would hold every CPU would starve the decode tasks: then each actor decodes its own.
    fuse_decode = fuse_decode or (not gpus_per_actor and
                                  actors * cpus_per_actor + decode_cpus > ray.cluster_resources().get("CPU", 0))
    decode_args = {} if fuse_decode else {"memory": DECODE_TASK_MEMORY}
    ds = ds.map_batches(decode_batch, batch_format="numpy", batch_size=batch, num_cpus=decode_cpus,
                        fn_kwargs={"preprocessing": clf.card.preprocessing, "face_check": clf.face_check,
                                   "crop_face": clf.crop_face},
                        **decode_args)
    return ds.map_batches(ModelActor, batch_format="numpy", batch_size=batch,
                          compute=ray.data.ActorPoolStrategy(size=actors),
                          num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
                          fn_constructor_kwargs={"weights": weights, "classifier_kwargs": {
                              **classifier_kwargs(clf), **({"device": "cuda"} if gpus_per_actor else {})}})


def iter_predict(clf: Classifier, paths: Sequence[str], *, progress: Callable[[int, int], None] | None = None,
                 address: str | None = None, **pipeline) -> Iterator[Prediction]:
    """Predictions for `paths`, one per path, in their order, as Ray finishes them. `pipeline`: see build_dataset."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    connect(address)
    ds = build_dataset(clf, paths, **pipeline)
    # input order (as a local run writes its CSV): Ray still works ahead, only the hand-over waits
    ds.context.execution_options.preserve_order = True
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for row in batch["row"]:
            yield _prediction_from_row(str(row))
        done += len(batch["row"])
        if progress:
            progress(done, len(paths))


def predict_stream(clf: Classifier, *, address: str | None = None, **pipeline) -> Callable[..., Iterator[Prediction]]:
    """`clf.iter_predict`'s stand-in for `evaluate.evaluate_items(predict_stream=...)`: the same rows, CSV,
    resume and metrics as a local evaluation, the images scored on Ray."""
    def stream(paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> Iterator[Prediction]:
        return iter_predict(clf, paths, progress=progress, address=address, **pipeline)

    return stream


__all__ = [
    "ModelActor",
    "RayUnavailableError",
    "build_dataset",
    "connect",
    "decode_batch",
    "iter_predict",
    "predict_stream",
    "read_listing",
]
