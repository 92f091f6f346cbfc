"""`Classifier`: load a checkpoint once, then predict images one by one or in streamed batches.

This is the one path from an image to a verdict used by the CLI, the dashboard and evaluation:
load_image -> find_faces -> (optional face crop) -> card preprocessing -> batched forward.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from realitycheck.intake.faces import FaceReport
from realitycheck.intake.images import ImageError, LoadedImage, load_image
from realitycheck.intake.images import _describe as describe_name
from realitycheck.model import checkpoints, engines
from realitycheck.model.checkpoints import CheckpointError, ModelCard, Preprocessing
from realitycheck.model.decision import is_unfamiliar, verdict
from realitycheck.model.registry import (  # noqa: F401  (where the CLI, app and tests have long found them)
    DEFAULT_WEIGHTS_NAME,
    NoWeightsError,
    default_weights_path,
    list_weights,
    weights_dir,
)
from realitycheck.model.views import (
    deciding,
    find_views,
    mirror_margin,
    needs_faces,
    needs_mirror,
)

if TYPE_CHECKING:
    from realitycheck.intake.provenance import Provenance



class ThresholdError(ValueError):
    """A decision threshold outside [0, 1]: p_fake is a probability, so such a threshold would call
    every image fake (below 0) or every image real (above 1) without saying so."""


def check_threshold(threshold) -> float:
    """`threshold` as a float in [0, 1], or ThresholdError with one line saying why (every front end's rule)."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ThresholdError(f"threshold {threshold!r} is not a number; give one between 0 and 1") from None
    if not 0.0 <= t <= 1.0:  # also refuses NaN
        raise ThresholdError(f"threshold {threshold} is outside 0..1: p_fake is a probability, so it would "
                             f"call every image {'fake' if t < 0 else 'real'}; give one between 0 and 1")
    return t


VIEW_RULES = ("auto", "all")


def check_views(views) -> str:
    """`views` as one of VIEW_RULES, or ValueError with one line saying what is allowed."""
    if views not in VIEW_RULES:
        raise ValueError(f"views {views!r}: give 'auto' (the card's rule: the mirror view only near the threshold) "
                         "or 'all' (the mirror of every view)")
    return views


@dataclass
class Prediction:
    """The verdict on one image, or the reason there is none (`error`)."""

    name: str
    label: str | None = None  # "real" | "fake"
    p_fake: float | None = None
    p_real: float | None = None
    threshold: float = 0.5  # the one `label` was read at; every Prediction is made with its Classifier's (the card's)
    faces: int | None = None
    face_boxes: list = field(default_factory=list)
    face_message: str = ""
    region: str = "centre crop"  # the part of the image the model saw
    face_p_fake: list = field(default_factory=list)  # aligned models: p_fake of each face (boxes' order)
    face_unfamiliar: list = field(default_factory=list)  # aligned models with the check: each face's flag (same order)
    deciding_face: int | None = None  # aligned models: the face whose p_fake is the verdict (what explain shows)
    unfamiliar: bool | None = None  # True: outside what the model trained on (None: the model has no such check)
    # which generator family the deciding face looks like ({"name", "probabilities"}; None: the model has no
    # attribution head). Said of every image, read only for a fake verdict; never part of p_fake
    generator: dict | None = None
    ood_score: float | None = None  # distance to the training features; compared with the card's threshold
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    image: Image.Image | None = field(default=None, repr=False)  # kept only when asked (the app)
    face_report: FaceReport | None = field(default=None, repr=False)  # the faces found in `image`, kept with it
    # What the file declares (provenance.Provenance), when the stage that read the file's bytes read it
    # too (Ray's decode tasks: the driver may not reach a remote file); None: the caller reads it
    provenance: Provenance | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def at_threshold(self, threshold: float) -> "Prediction":
        """The same prediction read at another threshold (no model run); failed ones unchanged."""
        if not self.ok:
            return self
        threshold = check_threshold(threshold)
        return replace(self, threshold=threshold, label=verdict(self.p_fake, threshold))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("image")
        d.pop("face_report")
        if self.provenance is None:
            d.pop("provenance")
        else:
            d["provenance"] = self.provenance.to_dict()
        d["path"] = d.pop("name")
        return d


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """bf16 autocast pays off only with native bf16 matmul (AVX-512 BF16 / AMX). Asked once."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str) -> str:
    """The precision a batch runs at. "auto" is fp32 whatever the batch size.

    One image must get one p_fake whichever path scores it (predict, explain, evaluate, the
    dashboard; alone or in a batch): bf16 batches moved p_fake by up to 0.03 against fp32 single
    images. bf16 stays available when asked for by name (faster folder runs, slightly different numbers).
    """
    if precision == "auto":
        return "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return precision


@dataclass(slots=True)
class Prepared:
    """What decoding one image yields: its views' tensor + face info, or an error. Picklable for workers;
    public for pipelines that decode in one place and predict in another (distributed)."""

    name: str
    tensor: object = None  # (views, 3, H, W): one view per aligned face, or one whole-image view
    faces: int | None = None
    boxes: list = field(default_factory=list)
    face_message: str = ""
    region: str = "centre crop"
    notes: list = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    image: Image.Image | None = None  # kept only when asked (the app)
    per_face: bool = False
    face_report: FaceReport | None = None



def prepare(source, name: str | None, pre: Preprocessing, *, face_check: bool = True, crop_face: bool = False,
            keep_image: bool = False) -> Prepared:
    """Decode + face check + the card's views (`views.find_views`), never raising for a bad image.

    Decoding is always full-size (no JPEG draft): a draft decode moved p_fake by up to 0.015, and every
    path (local, Ray, explain, training) must see the same pixels."""
    t0 = time.perf_counter()
    label = describe_name(name or (str(source) if isinstance(source, (str, os.PathLike)) else "image"))
    try:
        if isinstance(source, LoadedImage):
            loaded = source
        elif isinstance(source, Image.Image):
            loaded = LoadedImage(image=source.convert("RGB"), name=label, format=None)
        else:
            loaded = load_image(source, name=name)
        views, report = find_views(loaded.image, pre, face_check=face_check, crop_face=crop_face)
        tensor = torch.from_numpy(np.stack([v.tensor.numpy() for v in views]))  # numpy: see preprocess.to_tensor
        aligned = pre.align == "face"
        per_face = views[0].face is not None
        message = report.message if needs_faces(pre, face_check) else "face check off"
        if aligned and report.count > 1:
            message += ": each face is scored; the image's verdict is its most suspicious face"
        elif aligned and report.available and not report.count:
            message += " (the whole image was scored)"
        region = f"{len(views)} aligned faces" if len(views) > 1 else views[0].region
        img = views[0].image if views[0].region == "face crop" else loaded.image
        return Prepared(loaded.name, tensor, report.count if report.available else None, list(report.boxes),
                         message, region, list(loaded.notes), seconds=time.perf_counter() - t0,
                         image=img if keep_image else None, per_face=per_face,
                         face_report=report if keep_image and report.available and not (crop_face and report.count) else None)
    except ImageError as exc:
        return Prepared(label, error=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # an unexpected decoder failure must not end a folder run
        return Prepared(label, error=f"{label}: could not process the image ({type(exc).__name__}: {exc})",
                         seconds=time.perf_counter() - t0)


class _PathDataset(torch.utils.data.Dataset):
    def __init__(self, items: Sequence, pre, face_check, crop_face):
        self.items, self.pre = items, pre
        self.face_check, self.crop_face = face_check, crop_face

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        pr = prepare(self.items[i], None, self.pre, face_check=self.face_check,
                     crop_face=self.crop_face)
        if pr.tensor is not None:
            # Plain bytes through the pipe, not a shared-memory tensor: torch's fd sharing runs a
            # resource-sharer thread that prints tracebacks when a run is interrupted mid-transfer.
            pr.tensor = pr.tensor.numpy()
        return pr


def _identity_collate(batch):
    return batch


class Classifier:
    """A loaded model plus everything needed to use it: card, threshold, precision, batching.

    Holds no per-request state, so one instance can serve every dashboard session.
    """

    def __init__(self, model: nn.Module, card: ModelCard, *, threshold: float | None = None, precision: str = "auto",
                 batch_size: int = 16, face_check: bool = True, crop_face: bool = False,
                 mirror_average: bool | None = None, path: str | os.PathLike | None = None, ood=None,
                 engine: str = "auto", device: str = "cpu", attribution=None, views: str = "auto"):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # inference needs no autograd; explain re-enables what it needs
        self.card = card
        self.threshold = check_threshold(card.threshold if threshold is None else threshold)  # None: the card's
        self.precision = precision
        self.batch_size = max(1, int(batch_size))
        self.face_check = face_check
        self.crop_face = crop_face
        self.path = Path(path) if path else None
        self.fake_index = card.fake_index
        # None: as the card says (the setting was chosen on validation with the weights)
        self.mirror_average = card.preprocessing.mirror_average if mirror_average is None else bool(mirror_average)
        # "auto": the card's rule for the mirror view (computed only near the threshold, `views.needs_mirror`);
        # "all": the mirror of every view, as cards without the rule always did
        self.views = check_views(views)
        self.mirror_margin = mirror_margin(card) if self.views == "auto" else None
        self.ood = ood  # ood.OODStats from the checkpoint, or None: then no unfamiliarity verdicts
        self.attribution = attribution  # attribution.AttributionHead, or None: nothing said about the generator
        # "cuda" (e.g. a Ray actor given a GPU) moves the PyTorch forward there; decoding stays on the CPU
        self.device = torch.device(device)
        # channels_last is faster on CPU for fp32 and bf16 alike; done once here, never per request
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        # the forward pass: None = PyTorch (also for Grad-CAM, always), else an exported graph engine
        choice = engines.select(engine if self.device.type == "cpu" else "torch", model=self.model, card=card,
                                path=self.path)
        self.engine, self.engine_note = choice.engine, choice.note
        if self.engine is not None and self.needs_features and not self.engine.has_features:
            # the unfamiliar check and the attribution head need the penultimate features, which older
            # exported graphs lack
            self.engine = None
            self.engine_note = ((choice.note + "; ") if choice.note else "") + \
                "PyTorch runs the forward pass: the exported graph has no features output for the unfamiliar-image " \
                f"check (re-export it with `realitycheck export {self.path or 'CKPT'}`)"

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> "Classifier":
        from realitycheck.model.attribution import AttributionHead
        from realitycheck.model.ood import OODStats

        model, card, extras = checkpoints.load_checkpoint_extras(path)
        ood = attribution = None
        try:
            if "ood" in extras:
                ood = OODStats.from_tensors(extras["ood"])
            if "attribution" in extras and card.attribution:
                attribution = AttributionHead.from_checkpoint(extras["attribution"], card.attribution)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return cls(model, card, path=path, ood=ood, attribution=attribution, **kwargs)

    @classmethod
    def from_default(cls, **kwargs) -> "Classifier":
        path = default_weights_path()
        if not path.exists():
            raise NoWeightsError(
                f"no trained weights at {path}: train a model (realitycheck train) or pass --weights FILE "
                "(the original project's RealityCheck.pth works too)"
            )
        return cls.from_file(path, **kwargs)

    @property
    def arch(self) -> str:
        return self.card.arch

    @property
    def needs_features(self) -> bool:
        """The penultimate features are read by the unfamiliar check and the attribution head."""
        return self.ood is not None or self.attribution is not None

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def engine_label(self) -> str:
        """What runs the forward pass, e.g. "torch" or "onnxruntime int8" (Grad-CAM always uses torch)."""
        return self.engine.label if self.engine is not None else "torch"

    # -- the model -----------------------------------------------------------------------------
    def probabilities(self, x: torch.Tensor, precision: str | None = None) -> np.ndarray:
        """p_fake for a batch of preprocessed tensors (averaged with the mirror image if the card says so)."""
        return self.scores(x, precision)[0]

    def scores(self, x: torch.Tensor, precision: str | None = None, *,
               runner: engines.GraphEngine | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(p_fake, unfamiliarity score or None) for a batch of preprocessed tensors.

        `runner`: another exported graph to run the forward pass instead of this Classifier's own
        engine, with everything around it (mirror views, softmax, unfamiliar check) unchanged; what
        `realitycheck export` compares engines with. None: this Classifier's own forward pass.
        """
        p, ood, _ = self.view_scores(x, precision, runner=runner)
        return p, ood

    def view_scores(self, x: torch.Tensor, precision: str | None = None, *,
                    runner: engines.GraphEngine | None = None):
        """(p_fake, unfamiliarity score or None, generator probabilities (N, K) or None) per view.

        With mirror averaging, a view's mirror image is scored only where `views.needs_mirror` says
        it could matter, and both are averaged there (p_fake and the generator probabilities). The
        unfamiliar check reads the first view's features only, so the mirror never changes it."""
        n = x.shape[0]
        logits, features = self._forward(x, precision, runner)
        p = self._p_fake(logits)
        gen = self.attribution.probabilities(features) if self.attribution is not None else None
        if self.mirror_average and n:
            idx = np.flatnonzero(needs_mirror(p, self.threshold, self.mirror_margin))
            if len(idx):
                flipped = np.asarray(x, dtype=np.float32)[idx][..., ::-1]
                logits_m, features_m = self._forward(np.ascontiguousarray(flipped), precision, runner)
                p[idx] = (p[idx] + self._p_fake(logits_m)) / 2
                if gen is not None:  # as p_fake: the image and its mirror image averaged
                    gen[idx] = (gen[idx] + self.attribution.probabilities(features_m)) / 2
        ood = self.ood.score(features) if self.ood is not None else None
        return p, ood, gen

    def _p_fake(self, logits: torch.Tensor) -> np.ndarray:
        """p_fake of each row of logits (softmax over the two classes, float32)."""
        return logits.float().softmax(1)[:, self.fake_index].cpu().numpy()

    def _forward(self, x, precision: str | None, runner: engines.GraphEngine | None):
        """(logits as a torch tensor, penultimate features or None) of a batch of views, on the engine
        (or `runner`) when there is one, else PyTorch at `precision`."""
        from realitycheck.model.ood import FeatureTap

        engine = self.engine if runner is None else runner
        if engine is not None:  # an exported graph runs at the precision it was exported and gated at
            # numpy, not torch: torch's thread pool would fight the engine's own threads for the cores
            out, features = engine.run_with_features(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
            return torch.from_numpy(out), features
        precision = resolve_precision(precision or self.precision)
        x = torch.as_tensor(np.asarray(x)).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if not self.needs_features:
                return self.model(x), None
            with FeatureTap(self.model, self.arch) as tap:
                logits = self.model(x)
            return logits, tap.features.float().cpu().numpy()

    def _finish(self, prepared: list[Prepared], p_fake: np.ndarray | None, forward_s: float,
                ood: np.ndarray | None = None, gen: np.ndarray | None = None) -> list[Prediction]:
        good = [pr for pr in prepared if pr.error is None]
        share = forward_s / max(1, len(good))
        out, k = [], 0
        for pr in prepared:
            if pr.error is not None:
                out.append(Prediction(name=pr.name, error=pr.error, seconds=pr.seconds, threshold=self.threshold))
                continue
            n_views = int(pr.tensor.shape[0])
            views = [float(v) for v in p_fake[k:k + n_views]]
            best = deciding(views)
            pf = views[best]
            deciding_view = k + best
            score = float(ood[deciding_view]) if ood is not None else None  # of the deciding face
            generator = self.attribution.guess(gen[deciding_view]) if gen is not None else None
            each = ([is_unfamiliar(v, self.ood.threshold) for v in ood[k:k + n_views]]
                    if ood is not None and pr.per_face else [])
            k += n_views
            out.append(Prediction(
                name=pr.name, label=verdict(pf, self.threshold), p_fake=pf, p_real=1.0 - pf,
                threshold=self.threshold, faces=pr.faces, face_boxes=pr.boxes, face_message=pr.face_message,
                region=pr.region, face_p_fake=views if pr.per_face else [], face_unfamiliar=each,
                deciding_face=best if pr.per_face else None,
                seconds=pr.seconds + share,
                unfamiliar=None if score is None else is_unfamiliar(score, self.ood.threshold), ood_score=score,
                generator=generator, notes=pr.notes, image=pr.image, face_report=pr.face_report))
        return out

    def _run_batch(self, prepared: list[Prepared], precision: str | None = None) -> list[Prediction]:
        good = [np.asarray(pr.tensor) for pr in prepared if pr.error is None]
        if not good:
            return self._finish(prepared, None, 0.0)
        t0 = time.perf_counter()
        p, ood, gen = self.view_scores(torch.from_numpy(np.concatenate(good)), precision)
        return self._finish(prepared, p, time.perf_counter() - t0, ood, gen)

    # -- public API ----------------------------------------------------------------------------
    def predict_prepared(self, prepared: list[Prepared], precision: str | None = None) -> list[Prediction]:
        """One batch of already-decoded inputs (`prepare` ran elsewhere, e.g. a Ray task) -> Predictions."""
        return self._run_batch(prepared, precision)

    def predict(self, inputs: Sequence, names: Sequence[str] | None = None, *, keep_images: bool = False,
                precision: str | None = None) -> list[Prediction]:
        """Predict a list of paths, bytes, file objects or PIL images; bad ones get `error`."""
        names = list(names) if names is not None else [None] * len(inputs)
        results: list[Prediction] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = [prepare(src, nm, self.card.preprocessing, face_check=self.face_check, crop_face=self.crop_face,
                             keep_image=keep_images)
                     for src, nm in zip(inputs[start:start + self.batch_size], names[start:start + self.batch_size])]
            results += self._run_batch(chunk, precision)
        return results

    def predict_one(self, source, name: str | None = None, **kwargs) -> Prediction:
        return self.predict([source], [name] if name else None, **kwargs)[0]

    def iter_predict(self, items: Iterable, *, total: int | None = None, workers: int | None = None,
                     precision: str | None = None,
                     progress: Callable[[int, int | None], None] | None = None) -> Iterator[Prediction]:
        """Stream predictions over many paths: decoding in worker processes overlaps the forward pass.

        Memory stays flat: only `batch_size * (workers + 2)` images are in flight at any time.
        """
        items = items if isinstance(items, Sequence) else list(items)
        total = len(items) if total is None else total
        workers = default_workers() if workers is None else workers
        ds = _PathDataset(items, self.card.preprocessing, self.face_check, self.crop_face)
        loader = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, num_workers=workers,
                                             collate_fn=_identity_collate, prefetch_factor=2 if workers else None)
        done = 0
        for chunk in loader:
            for pred in self._run_batch(chunk, precision):
                yield pred
            done += len(chunk)
            if progress:
                progress(done, total)


    def _prepared_chunks(self, items: Sequence, workers: int | None) -> Iterator[list[Prepared]]:
        """Decoded batches of `items` (the same decoding, faces and views as a prediction), in order."""
        workers = default_workers() if workers is None else workers
        ds = _PathDataset(list(items), self.card.preprocessing, self.face_check, self.crop_face)
        yield from torch.utils.data.DataLoader(ds, batch_size=self.batch_size, num_workers=workers,
                                               collate_fn=_identity_collate, prefetch_factor=2 if workers else None)

    def iter_features(self, items: Sequence, *, workers: int | None = None) -> Iterator[tuple[str, np.ndarray | None]]:
        """(name, penultimate features of the image's first view) for many paths; None for a failed image.

        What the unfamiliarity check is fitted on: the same decoding, faces and views as a prediction.
        """
        from realitycheck.model.ood import FeatureTap

        for chunk in self._prepared_chunks(items, workers):
            good = [pr for pr in chunk if pr.error is None]
            feats = iter(())
            if good:
                x = torch.stack([torch.as_tensor(pr.tensor)[0] for pr in good]).to(self.device)
                with FeatureTap(self.model, self.arch) as tap, torch.inference_mode():
                    self.model(x.contiguous(memory_format=torch.channels_last))
                feats = iter(tap.features.cpu().numpy())
            for pr in chunk:
                yield pr.name, (next(feats) if pr.error is None else None)

    def iter_view_pairs(self, items: Sequence, *, workers: int | None = None
                        ) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None]]:
        """(name, p_fake of each view, p_fake of each view's mirror image) for many paths; Nones for a
        failed image. What the mirror rule is chosen on (`analysis.view_rule`)."""
        for chunk in self._prepared_chunks(items, workers):
            good = [pr for pr in chunk if pr.error is None]
            firsts = mirrors = iter(())
            if good:
                x = np.concatenate([np.asarray(pr.tensor, dtype=np.float32) for pr in good])
                p = [self._p_fake(self._forward(v, None, None)[0]) for v in (x, np.ascontiguousarray(x[..., ::-1]))]
                cut = np.cumsum([len(pr.tensor) for pr in good])[:-1]
                firsts, mirrors = iter(np.split(p[0], cut)), iter(np.split(p[1], cut))
            for pr in chunk:
                yield (pr.name, None, None) if pr.error is not None else (pr.name, next(firsts), next(mirrors))


def default_workers() -> int:
    """Decoding processes for folder runs: one per spare core, none on a single-core machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 1 else min(4, max(1, cores // 2))


def load_classifier(weights: str | os.PathLike | None = None, **kwargs) -> Classifier:
    """The checkpoint given, or the shipped default; raises CheckpointError / NoWeightsError."""
    if weights:
        return Classifier.from_file(weights, **kwargs)
    return Classifier.from_default(**kwargs)


__all__ = ["Classifier", "Prediction", "NoWeightsError", "CheckpointError", "load_classifier",
           "default_weights_path", "list_weights", "weights_dir"]
