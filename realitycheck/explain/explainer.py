"""Running a CAM method on a model without disturbing it: `Explainer` and the one-call `explain()`.

Things this module takes care of so callers need not:

* Frozen backbones (requires_grad=False everywhere, as in the original project) still give gradients:
  the target layer's output is turned into a fresh leaf tensor that requires grad, so the backward pass
  runs only through the layers after it (the head). No parameter needs grad and none gets a `.grad`.
* Callers may be inside `torch.no_grad()` / `torch.inference_mode()`: the work runs under
  `inference_mode(False)` + `enable_grad()`.
* The model may be shared (a Streamlit app caches one for all sessions). By default the CAM runs on a
  private deep copy (`PrivateCopy`), so hooks, eval mode, requires_grad changes and AblationCAM's layer
  swap never touch the caller's model, and concurrent predictions on it are never disturbed. The copy
  is refreshed when the shared model's weights change. A copy also makes models whose tensors were
  created under `inference_mode` usable (a deep copy yields normal tensors); with `copy_model=False`
  such models cannot be explained (autograd cannot save inference tensors) and a clear error says so.
* Hooks are always released (context managers, `finally`), also when a progress callback raises to
  cancel a slow run.

Who owns the private copy: an `Explainer` owns one and frees it with itself (or `close()`): hold one
explainer beside the model for as long as you explain it. The one-call `explain()` and
`estimate_seconds()` share one copy per live model (`shared_copy`), dropped when the model is.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from realitycheck.explain import faithfulness as faith
from realitycheck.explain import render
from realitycheck.explain.faithfulness import Faithfulness
from realitycheck.explain.methods import (
    DEFAULT_METHOD,
    Method,
    Progress,
    Ticker,
    get_method,
)
from realitycheck.model import models
from realitycheck.model.checkpoints import ModelCard
from realitycheck.model.views import (
    deciding,
    explained_image,
    face_geometry,
    find_views,
    mirror_margin,
    needs_mirror,
)

DEFAULT_BATCH_SIZE = 16
# Grad-CAM costs about this many forwards per image (forward + backward through the head only);
# measured on efficientnet_lite0 at 224 px, one thread (see the report in the docs).
_GRADIENT_COST = 1.3


@dataclass
class Explanation:
    """One image's heatmap and what it means."""

    heatmap: np.ndarray  # float32 HxW in [0, 1], same size as `region_image` (the crop the model saw)
    region: str  # "centre crop" or "full image": which part of the input the heatmap covers
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) of that region in the input image
    method: str
    target_class: str  # the class whose evidence is shown
    p_fake: float
    faithfulness: Faithfulness | None
    seconds: float  # wall time attributed to this image (its share of a batch)
    predicted_class: str = ""
    region_image: Image.Image | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    # aligned-face models: the face's detector box inside the heatmap's own pixels (x, y, w, h)
    view_face_box: tuple[int, int, int, int] | None = None
    view_landmarks: np.ndarray | None = None  # an aligned face's five landmarks in the view

    def describe(self, face_boxes=(), landmarks=None) -> str:
        """Where the evidence lies, in words, relative to the face and its parts (`heatmap_words`).

        face_boxes / landmarks: the detector's boxes and the largest face's five landmarks in the
        input image (both ignored for an aligned face, whose box and landmarks in the view are known).
        """
        from realitycheck.explain import heatmap_words

        if self.view_face_box is not None:
            h, w = self.heatmap.shape
            return heatmap_words.describe_evidence(self.heatmap, (0, 0, w, h), [self.view_face_box], self.target_class,
                                                   self.view_landmarks)
        return heatmap_words.describe_evidence(self.heatmap, self.crop_box, list(face_boxes), self.target_class,
                                               landmarks if len(face_boxes) else None)

    def where(self, image: Image.Image | None = None, faces=None) -> str:
        """`describe` relative to the largest face found in `image` (the input image) and its landmarks.

        An aligned face's box and landmarks travel with the explanation, so no detection runs then;
        image=None: no faces (the words are relative to the crop the model saw). `faces`: the
        `FaceReport` already found in `image` (a `Prediction`'s), so the detector does not run twice.
        """
        if self.view_face_box is not None or image is None:
            return self.describe()
        if faces is None:
            from realitycheck.intake.faces import find_faces

            faces = find_faces(image)
        return self.describe(faces.boxes, faces.faces[0].landmarks if faces.faces else None)

    def overlay(self, opacity: float = 0.45, colormap: str = "jet") -> Image.Image:
        return render.overlay(self._region(), self.heatmap, opacity, colormap)

    def panel(self, **kwargs) -> Image.Image:
        return render.render_panel(self._region(), self.heatmap, **kwargs)

    def _region(self) -> Image.Image:
        if self.region_image is None:
            raise ValueError("this explanation holds no image region")
        return self.region_image


# ---------------------------------------------------------------------------------------------
# The model the CAM runs on: a private copy (default) or the caller's, restored afterwards
# ---------------------------------------------------------------------------------------------

_registry_lock = threading.Lock()
_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock every explainer of `model` holds while it works on it (or on its private copy).

    With `copy_model=False`, code that runs `model` in other threads should hold it too: the CAM's
    hooks would otherwise record their activations.
    """
    with _registry_lock:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def _fingerprint(model: nn.Module) -> tuple:
    """Changes when weights are replaced or updated in place (optimizer steps, load_state_dict)."""
    fp = []
    for t in list(model.parameters()) + list(model.buffers()):
        try:
            version = t._version
        except RuntimeError:  # inference tensors keep no version counter
            version = -1
        fp.append((t.data_ptr(), version, tuple(t.shape)))
    return tuple(fp)


class PrivateCopy:
    """A deep copy of a model for explaining, reused until the model's weights change, and the
    forward times measured on it. Use it under `model_lock(model)`."""

    def __init__(self) -> None:
        self.work: nn.Module | None = None
        self.timings: dict[tuple, tuple[float, int]] = {}  # (size, batch, layer name) -> (seconds, channels)
        self._fingerprint: tuple | None = None

    def of(self, model: nn.Module) -> nn.Module:
        """The copy of `model`, made again if its weights changed since the last call."""
        fp = _fingerprint(model)
        if self.work is None or fp != self._fingerprint:
            with torch.inference_mode(False):
                work = copy.deepcopy(model)  # inference tensors come out as normal tensors
            work.eval()
            for p in work.parameters():
                p.requires_grad_(False)
                p.grad = None
            self.work, self._fingerprint, self.timings = work, fp, {}
        return self.work

    def clear(self) -> None:
        self.work, self._fingerprint, self.timings = None, None, {}


_shared_copies: "weakref.WeakKeyDictionary[nn.Module, PrivateCopy]" = weakref.WeakKeyDictionary()


def shared_copy(model: nn.Module) -> PrivateCopy:
    """The private copy the one-call functions use for `model`; it lives as long as the model does."""
    with _registry_lock:
        pc = _shared_copies.get(model)
        if pc is None:
            pc = _shared_copies[model] = PrivateCopy()
        return pc


def _same_module_in(work: nn.Module, model: nn.Module, layer: nn.Module) -> tuple[str, nn.Module]:
    """`layer` of `model`, found by name in `work` (its copy); a layer outside the model is an error
    (its hooks would never fire and the CAM would fail obscurely)."""
    for name, m in model.named_modules():
        if m is layer:
            return name, (work.get_submodule(name) if name else work)
    raise ValueError("target_layer is not a module of the model")


@contextlib.contextmanager
def _quiet_state(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter requiring grad, and everything put back afterwards.

    Eval: dropout off and batch-norm running statistics used (and not updated). requires_grad off:
    the backward pass stops at the target layer's output (see `_leaf_hook`), and no `.grad` is left.
    Existing `.grad`s are kept because pytorch-grad-cam calls `model.zero_grad()`.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag, g in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = g
        for m, mode in modes:
            m.training = mode


def _leaf_hook(module: nn.Module, inputs, output):
    """Make the target layer's output a leaf that requires grad, so gradients reach it even when
    no parameter (and not the input) requires grad, and the backward pass goes no further back.

    Registered before the CAM's own hooks, so they see (and hook the gradient of) this tensor.
    The clone lets later in-place operations (e.g. ReLU(inplace=True)) work on a non-leaf.
    """
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.detach().requires_grad_(True).clone()
    return None


@contextlib.contextmanager
def _released(cam) -> Iterator:
    """Like `with cam:` but without BaseCAM.__exit__'s habit of swallowing IndexError."""
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def _timed_forward(model: nn.Module, layer: nn.Module, x: torch.Tensor, repeats: int = 1) -> tuple[float, tuple]:
    """Best wall time of `repeats` forwards of `x`, and the shape of `layer`'s output."""
    shapes = []
    handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    best = float("inf")
    try:
        with torch.inference_mode(False), torch.no_grad():
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                best = min(best, time.perf_counter() - t0)
    finally:
        handle.remove()
    return best, shapes[0]


def _region_of(img: Image.Image, card: ModelCard) -> tuple[tuple[int, int, int, int], str]:
    pre = card.preprocessing
    if pre.align == "face":  # explain works on the view itself (see Explainer._deciding_view)
        return (0, 0, img.size[0], img.size[1]), "aligned face"
    box = tuple(int(v) for v in pre.crop_box(img.size))
    full = box == (0, 0, img.size[0], img.size[1])
    return box, "full image" if full else "centre crop"


# ---------------------------------------------------------------------------------------------
# Explainer
# ---------------------------------------------------------------------------------------------

class Explainer:
    """Heatmaps for one model (and its card), with the state that takes: a private copy and timings.

    target_layer: the layer to explain (default `models.target_layer(model, card.arch)`).
    copy_model: work on a private copy (default) so a shared model is never touched.
    private_copy: whose copy to use; default a new one owned by this explainer, freed with it or by
    `close()`. Usable as a context manager.
    """

    def __init__(self, model: nn.Module, card: ModelCard, *, target_layer: nn.Module | None = None,
                 copy_model: bool = True, private_copy: PrivateCopy | None = None):
        self.model, self.card = model, card
        self.target_layer, self.copy_model = target_layer, copy_model
        self.private_copy = PrivateCopy() if private_copy is None else private_copy
        self.lock = model_lock(model)

    def close(self) -> None:
        """Free the private copy (the next call makes a new one)."""
        with self.lock:
            self.private_copy.clear()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _layer(self) -> nn.Module:
        if self.target_layer is None:
            self.target_layer = models.target_layer(self.model, self.card.arch)
        return self.target_layer

    def _working_model(self) -> nn.Module:
        if self.copy_model:
            return self.private_copy.of(self.model)
        if any(t.is_inference() for t in list(self.model.parameters()) + list(self.model.buffers())):
            raise ValueError(
                "this model's weights were created under torch.inference_mode(), so autograd cannot "
                "use them; load the model outside inference_mode or call explain(..., copy_model=True)")
        return self.model

    def explain(self, images: Sequence[Image.Image] | Image.Image, method: str = DEFAULT_METHOD,
                target_class: str | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                faithfulness: bool = True, progress: Progress | None | bool = None,
                seed: int = 0, face: int | None = None) -> list[Explanation]:
        """Heatmaps of the evidence for `target_class` (default: each image's predicted class).

        batch_size: images per forward for the gradient methods; masked copies per forward for the
        slow ones (`SLOW_METHODS`). progress: `fn(done, total)` called after each batch; None: a tqdm
        bar for the slow methods only; False: silence. Raise from it to cancel (the model is restored
        either way). faithfulness: also run the check in `explain.faithfulness` (seeded by `seed`).
        face: for an aligned card, explain this face (0-based, the detector's largest-first order)
        instead of the deciding (most suspicious) one; a face the image does not have is a ValueError.
        """
        spec = get_method(method)
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        classes = list(self.card.classes)
        if target_class is not None and target_class not in classes:
            raise ValueError(f"target_class {target_class!r} is not one of the model's classes {classes}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not images:
            return []
        target_layer = self._layer()
        transform = self.card.preprocessing.transform()
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        view_faces = [(None, None)] * len(rgb)
        if self.card.preprocessing.align == "face":
            # what the model judged: the image's most suspicious aligned face (the whole image if none)
            # every view is then crop x crop pixels: an aligned face, or the whole image's centre crop
            views = [self._deciding_view(im, face) for im in rgb]
            rgb, view_faces = [v for v, _ in views], [f for _, f in views]
            transform = self.card.preprocessing.tensor_transform()

        chunk = 1 if spec.slow else batch_size
        out: list[Explanation] = []
        with self.lock:
            work = self._working_model()
            _, layer = _same_module_in(work, self.model, target_layer)
            if spec.slow:
                x0 = transform(rgb[0])[None].to(next(work.parameters()).device)
                n_channels = _timed_forward(work, layer, x0)[1][1]
                total = len(rgb) * math.ceil(n_channels / batch_size)
            else:
                total = math.ceil(len(rgb) / chunk)
            ticker = Ticker(total, progress, desc=spec.name, bar=spec.slow)
            try:
                with torch.inference_mode(False), _quiet_state(work):
                    for start in range(0, len(rgb), chunk):
                        out.extend(self._explain_batch(work, layer, transform, rgb[start:start + chunk], spec,
                                                       target_class, batch_size, faithfulness, ticker, seed))
                        if not spec.slow:
                            ticker.tick()
            finally:
                ticker.close()
        for exp, (box, landmarks) in zip(out, view_faces):
            exp.view_face_box, exp.view_landmarks = box, landmarks
            if self.card.preprocessing.align == "face" and box is None:
                exp.region = "whole image (centre crop; no face found)"  # what was scored, not a face
        return out

    def _deciding_view(self, im: Image.Image, face: int | None = None) -> tuple[Image.Image, tuple]:
        """(the view to explain at input size, (its face box, its five landmarks) in the view, or
        (None, None) when no face was found) for an aligned card.

        Which face: `face` when given (callers that predicted first pass `Prediction.deciding_face`, so
        the heatmap is of the view that decided the verdict); else the most suspicious face, scored here
        with the card's mirror rule (an explainer has no engine: an exported graph may differ in the 6th
        digit, which is why product paths pass the prediction's face).
        """
        pre = self.card.preprocessing
        views, report = find_views(im, pre, face_check=False)
        if face is not None and not 0 <= face < (report.count if views[0].face is not None else 0):
            raise ValueError(f"face {face + 1} was asked for, but {report.count} face(s) were found")
        if views[0].face is None:
            return explained_image(views[0], pre), (None, None)
        best = 0 if face is None else face
        if len(views) > 1 and face is None:
            fake = list(self.card.classes).index("fake")
            x = torch.stack([v.tensor for v in views]).to(next(self.model.parameters()).device)
            with torch.inference_mode():
                p = torch.softmax(self.model(x).float(), -1)[:, fake].cpu().numpy()
                if pre.mirror_average:  # the card's mirror rule, as predict applies it
                    idx = np.flatnonzero(needs_mirror(p, self.card.threshold, mirror_margin(self.card)))
                    if len(idx):
                        p[idx] = (p[idx] + torch.softmax(self.model(x[idx].flip(3)).float(), -1)[:, fake].cpu().numpy()) / 2
            best = deciding(p.tolist())
        return views[best].image, face_geometry(report.faces[best], pre)

    def _explain_batch(self, model, layer, transform, imgs, spec: Method, target_class, batch_size,
                       want_faith, ticker, seed) -> list[Explanation]:
        t0 = time.perf_counter()
        classes = list(self.card.classes)
        device = next(model.parameters()).device
        x = torch.stack([transform(im) for im in imgs]).to(device)
        targets = None if target_class is None else [ClassifierOutputTarget(classes.index(target_class))] * len(imgs)
        cam_obj = spec.factory(model, layer, batch_size, ticker)
        # The leaf hook must run before the CAM's own hooks (registered by its constructor): prepend it.
        handle = layer.register_forward_hook(_leaf_hook, prepend=True) if spec.needs_gradients else None
        try:
            with _released(cam_obj) as cam:
                grad_ctx = torch.enable_grad() if spec.needs_gradients else torch.no_grad()
                with grad_ctx:
                    maps = cam(input_tensor=x, targets=targets)
                feature_hw = tuple(cam.activations_and_grads.activations[0].shape[-2:]) \
                    if cam.activations_and_grads.activations else (7, 7)
                logits = cam.outputs.detach().float()
        finally:
            if handle is not None:
                handle.remove()
            del cam_obj
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        predicted = probs.argmax(axis=1)
        target_idx = predicted if target_class is None else np.full(len(imgs), classes.index(target_class))
        maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0)

        faiths: list[Faithfulness | None] = [None] * len(imgs)
        if want_faith:
            with torch.no_grad():
                faiths = faith.faithfulness(model, x, maps, target_idx, probs[np.arange(len(imgs)), target_idx],
                                            classes, feature_hw, seed)
        seconds = (time.perf_counter() - t0) / len(imgs)

        fake_idx = classes.index("fake") if "fake" in classes else 0
        result = []
        for i, im in enumerate(imgs):
            box, region = _region_of(im, self.card)
            region_img = im.crop(box)
            heat = cv2.resize(maps[i], region_img.size, interpolation=cv2.INTER_LINEAR)
            heat = np.clip(heat, 0.0, 1.0).astype(np.float32)
            notes = [spec.note] if spec.note else []
            if float(heat.max()) <= 0.0:
                notes.append(f"The heatmap is empty: {spec.name} found no positive evidence for "
                             f"{classes[int(target_idx[i])]} at this layer.")
                if faiths[i] is not None:  # nothing highlighted: no "hottest 20%" to speak of
                    faiths[i] = dataclasses.replace(faiths[i], empty=True)
            result.append(Explanation(
                heatmap=heat, region=region, crop_box=box, method=spec.name,
                target_class=classes[int(target_idx[i])], p_fake=float(probs[i, fake_idx]),
                faithfulness=faiths[i], seconds=seconds, predicted_class=classes[int(predicted[i])],
                region_image=region_img, notes=notes,
            ))
        return result

    def estimate_seconds(self, method: str, n_images: int = 1, *, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
        """Rough CAM time, from timing real forwards on this machine (kept per size, batch and layer).

        Slow methods: one forward of `batch_size` images x ceil(channels / batch_size) batches per
        image, timed at that batch size because per-image cost grows with the batch on a CPU
        (efficientnet_lite0, 224 px, one thread: 19 ms/image alone, 61 ms/image in a batch of 32).
        Gradient methods: about 1.3 forwards per image. The faithfulness check is not included.
        """
        spec = get_method(method)
        target_layer = self._layer()
        bs = batch_size if spec.slow else 1
        size = self.card.preprocessing.crop
        with self.lock:
            work = self.private_copy.of(self.model)
            name, layer = _same_module_in(work, self.model, target_layer)
            key = (size, bs, name)
            if key not in self.private_copy.timings:
                x = torch.zeros(bs, 3, size, size, device=next(work.parameters()).device)
                seconds, shape = _timed_forward(work, layer, x, repeats=2 if bs <= 4 else 1)
                self.private_copy.timings[key] = (seconds, shape[1])
            seconds, channels = self.private_copy.timings[key]
        if spec.slow:
            return n_images * math.ceil(channels / bs) * seconds
        return n_images * seconds * (_GRADIENT_COST if spec.needs_gradients else 1.0)


# ---------------------------------------------------------------------------------------------
# One-call functions (the model's shared private copy)
# ---------------------------------------------------------------------------------------------

_explainers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_explainers_lock = threading.Lock()


def explainer_for(clf) -> Explainer:
    """The `Explainer` of a loaded Classifier: one per classifier, so its private copy and timings live
    (and die) with it. Kept here, not on the Classifier, because explaining sits above the model layer."""
    with _explainers_lock:
        if clf not in _explainers:
            _explainers[clf] = Explainer(clf.model, clf.card)
        return _explainers[clf]


def explain(
    model: nn.Module,
    card: ModelCard,
    images: Sequence[Image.Image] | Image.Image,
    method: str = DEFAULT_METHOD,
    target_class: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    target_layer: nn.Module | None = None,
    faithfulness: bool = True,
    progress: Progress | None | bool = None,
    copy_model: bool = True,
    seed: int = 0,
) -> list[Explanation]:
    """`Explainer.explain` on `model` with the copy it shares with every one-call use (`shared_copy`)."""
    explainer = Explainer(model, card, target_layer=target_layer, copy_model=copy_model,
                          private_copy=shared_copy(model))
    return explainer.explain(images, method, target_class, batch_size=batch_size, faithfulness=faithfulness,
                             progress=progress, seed=seed)


def estimate_seconds(method: str, model: nn.Module, card: ModelCard, n_images: int = 1, *,
                     batch_size: int = DEFAULT_BATCH_SIZE, target_layer: nn.Module | None = None) -> float:
    """`Explainer.estimate_seconds` on `model`, timed on (and kept with) its shared private copy."""
    explainer = Explainer(model, card, target_layer=target_layer, private_copy=shared_copy(model))
    return explainer.estimate_seconds(method, n_images, batch_size=batch_size)
