"""Why did the model say "fake"? Class-activation heatmaps, checked for faithfulness, drawn for people.

Built on pytorch-grad-cam. `explain()` returns one `Explanation` per image: a heatmap in [0, 1] at the
size of the image region the model actually saw (`Preprocessing.crop_box`), the class it explains
(the predicted one unless asked otherwise), and a faithfulness check (does removing the hottest 20% of
pixels hurt the model's confidence more than removing a random 20%?).

Things this module takes care of so callers need not:

* Frozen backbones (requires_grad=False everywhere, as in the original project) still give gradients:
  the target layer's output is turned into a fresh leaf tensor that requires grad, so the backward pass
  runs only through the layers after it (the head). No parameter needs grad and none gets a `.grad`.
* Callers may be inside `torch.no_grad()` / `torch.inference_mode()`: the work runs under
  `inference_mode(False)` + `enable_grad()`.
* The model may be shared (a Streamlit app caches one for all sessions). By default the CAM runs on a
  private, cached deep copy, so hooks, eval mode, requires_grad changes and AblationCAM's layer swap
  never touch the caller's model, and concurrent predictions on it are never disturbed. The copy is
  refreshed when the shared model's weights change. A copy also makes models whose tensors were created
  under `inference_mode` usable (a deep copy yields normal tensors); with `copy_model=False` such models
  cannot be explained (autograd cannot save inference tensors) and a clear error says so.
* Hooks are always released (context managers, `finally`), also when a progress callback raises to
  cancel a slow run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from pytorch_grad_cam import (
    AblationCAM,
    AblationLayer,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from realitycheck import models
from realitycheck.checkpoints import ModelCard

__all__ = [
    "METHODS", "SLOW_METHODS", "DEFAULT_METHOD", "METHOD_NOTES", "Explanation", "Faithfulness",
    "explain", "estimate_seconds", "model_lock", "describe_regions", "hot_regions", "HotRegion",
    "overlay", "outline_hot_regions", "side_by_side", "colorbar_image", "render_panel", "to_png_bytes",
]

METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
DEFAULT_METHOD = "gradcam"
# One masked forward pass per channel of the target layer (ResNet50: 2048, EfficientNet-Lite0: 1280):
# minutes per image on a CPU. Callers should show `estimate_seconds` and a progress bar.
SLOW_METHODS = frozenset({"scorecam", "ablationcam"})
GRADIENT_FREE = frozenset({"eigencam", "scorecam", "ablationcam"})
METHOD_NOTES = {
    "eigencam": "EigenCAM shows the main component of the features, whatever the class: "
                "it is the same map for 'fake' and 'real'.",
    "ablationcam": "AblationCAM scores channels by the drop in the class probability (not the raw logit), "
                   "so a negative logit cannot flip the map.",
}
DEFAULT_BATCH_SIZE = 16
REMOVE_FRACTION = 0.2  # the faithfulness check removes this share of the pixels
# Grad-CAM costs about this many forwards per image (forward + backward through the head only);
# measured on efficientnet_lite0 at 224 px, one thread (see the report in the docs).
_GRADIENT_COST = 1.3

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Faithfulness:
    """Confidence drops (probability, 0-1) when the hottest vs a random 20% of pixels are removed.

    Pixels are removed with ROAD's noisy linear imputation (pytorch-grad-cam), which fills them in
    from their neighbours so the model is not just reacting to black holes.
    """

    drop_hot: float
    drop_random: float
    target_class: str = field(default="fake", kw_only=True)
    fraction: float = field(default=REMOVE_FRACTION, kw_only=True)

    @property
    def score(self) -> float:
        """Positive: the heatmap's hot pixels matter more to the model than random ones."""
        return self.drop_hot - self.drop_random

    @property
    def meaning(self) -> str:
        """One plain-language sentence for people."""
        pct = f"{self.fraction:.0%}"
        cls = self.target_class
        hot, rnd = _points(self.drop_hot), _points(self.drop_random)
        if self.drop_hot >= 0:
            head = f"Removing the hottest {pct} of pixels lowers confidence in {cls} by {hot} points"
        else:
            head = f"Removing the hottest {pct} of pixels raises confidence in {cls} by {_points(-self.drop_hot)} points"
        tail = f"vs {rnd} for random pixels" if self.drop_random >= 0 else \
            f"vs a {_points(-self.drop_random)}-point rise for random pixels"
        if max(abs(self.drop_hot), abs(self.drop_random)) < 0.02:
            verdict = "neither removal moves the model, so this check cannot confirm the heatmap"
        elif self.score >= 0.05:
            verdict = "the heatmap points at evidence the model uses"
        elif self.score > 0.01:
            verdict = "only slightly more than random: weak support for this heatmap"
        else:
            verdict = "no more than random: treat this heatmap with caution"
        return f"{head} {tail}: {verdict}."


def _points(p: float) -> str:
    return f"{round(abs(p) * 100):d}"


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

    def describe(self) -> str:
        return describe_regions(self.heatmap, self.target_class)

    def overlay(self, opacity: float = 0.45, colormap: str = "jet") -> Image.Image:
        if self.region_image is None:
            raise ValueError("this explanation holds no image region")
        return overlay(self.region_image, self.heatmap, opacity, colormap)

    def panel(self, **kwargs) -> Image.Image:
        if self.region_image is None:
            raise ValueError("this explanation holds no image region")
        return render_panel(self.region_image, self.heatmap, **kwargs)


# ---------------------------------------------------------------------------------------------
# The model the CAM runs on: a private copy (default) or the caller's, restored afterwards
# ---------------------------------------------------------------------------------------------

_registry_lock = threading.Lock()
_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_copies: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()
_forward_seconds: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock `explain` holds while it works on `model` (or its private copy).

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


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` for explaining, reused until the model's weights change."""
    fp = _fingerprint(model)
    with _registry_lock:
        cached = _copies.get(model)
    if cached is not None and cached[0] == fp:
        return cached[1]
    with torch.inference_mode(False):
        work = copy.deepcopy(model)  # inference tensors come out as normal tensors
    work.eval()
    for p in work.parameters():
        p.requires_grad_(False)
        p.grad = None
    with _registry_lock:
        _copies[model] = (fp, work)
    return work


def _same_module_in(work: nn.Module, model: nn.Module, layer: nn.Module) -> nn.Module:
    """`layer` of `model`, found by name in `work` (its copy); a layer outside the model is an error
    (its hooks would never fire and the CAM would fail obscurely)."""
    for name, m in model.named_modules():
        if m is layer:
            return work.get_submodule(name) if name else work
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


# ---------------------------------------------------------------------------------------------
# The slow methods, with batches built lazily, progress reports and a guaranteed layer restore
# ---------------------------------------------------------------------------------------------

class _Ticker:
    def __init__(self, total: int, progress: Progress | None | bool, desc: str, bar: bool):
        self.done, self.total, self.bar, self.fn = 0, total, None, None
        if progress is None and bar:
            import tqdm

            self.bar = tqdm.tqdm(total=total, desc=desc, leave=False)
        elif callable(progress):
            self.fn = progress

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.fn is not None:
            self.fn(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _ScoreCAM(ScoreCAM):
    """ScoreCAM that builds each batch of masked inputs on demand.

    The library materialises all masked copies at once (ResNet50: 2048 x 3 x 224 x 224 floats,
    1.2 GB per image) and prints its own tqdm bars. Same weights otherwise: softmax over channels
    of the target score of the input multiplied by each upsampled, min-max normalised channel.
    """

    def __init__(self, model, target_layers, batch_size: int, ticker: _Ticker):
        super().__init__(model, target_layers)
        self.batch_size, self.ticker = batch_size, ticker

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        with torch.no_grad():
            acts = torch.from_numpy(np.asarray(activations)).to(self.device)
            size = input_tensor.shape[-2:]
            weights = []
            for i, target in enumerate(targets):
                scores = []
                for c0 in range(0, acts.shape[1], self.batch_size):
                    c1 = min(c0 + self.batch_size, acts.shape[1])
                    up = nn.functional.interpolate(acts[i:i + 1, c0:c1], size=size, mode="bilinear",
                                                   align_corners=True)[0]
                    flat = up.flatten(1)  # min-max normalise each upsampled channel, as the library does
                    lo, hi = flat.min(-1).values[:, None, None], flat.max(-1).values[:, None, None]
                    up = (up - lo) / (hi - lo + 1e-8)
                    batch = input_tensor[i][None] * up[:, None]
                    scores.append(target(self.model(batch)).float().cpu())
                    self.ticker.tick()
                weights.append(torch.softmax(torch.cat(scores), dim=-1))
            return torch.stack(weights).numpy()


class _AblationCAM(AblationCAM):
    """AblationCAM with a fresh AblationLayer per instance and the target layer always put back.

    The library's default `ablation_layer=AblationLayer()` is one object shared by every instance,
    and an exception mid-run would leave it inside the model. Targets are scored as probabilities:
    the library divides by the original score, so a negative logit would flip the map's sign.
    """

    def __init__(self, model, target_layers, batch_size: int, ticker: _Ticker):
        super().__init__(model, target_layers, ablation_layer=AblationLayer(), batch_size=batch_size)
        self.ticker = ticker

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        targets = [ClassifierOutputSoftmaxTarget(t.category) if isinstance(t, ClassifierOutputTarget) else t
                   for t in targets]
        acts = torch.from_numpy(np.asarray(activations)).to(self.device)
        n_channels = acts.shape[1]
        layer = self.ablation_layer
        with torch.no_grad():
            # BaseCAM.forward already ran the unablated model on this input: reuse its outputs.
            original = np.float32([target(o).cpu().item() for target, o in zip(targets, self.outputs.detach())])
            if not replace_layer_recursive(self.model, target_layer, layer):
                raise ValueError("AblationCAM could not find the target layer among the model's children")
            try:
                weights = []
                for i, target in enumerate(targets):
                    scores = []
                    for c0 in range(0, n_channels, self.batch_size):
                        n = min(self.batch_size, n_channels - c0)
                        layer.indices = np.arange(c0, c0 + n, dtype=np.int64)
                        layer.set_next_batch(input_batch_index=i, activations=acts, num_channels_to_ablate=n)
                        out = self.model(input_tensor[i][None].expand(n, *input_tensor.shape[1:]))
                        scores.append(target(out).float().cpu().numpy())
                        self.ticker.tick()
                    weights.append(np.concatenate(scores))
            finally:
                replace_layer_recursive(self.model, layer, target_layer)
                layer.activations = None
        weights = np.float32(weights)
        return (original[:, None] - weights) / original[:, None]


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------

def _check_method(method: str) -> str:
    key = method.lower().replace("_", "").replace("-", "")
    key = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    return key


def _region_of(img: Image.Image, card: ModelCard) -> tuple[tuple[int, int, int, int], str]:
    box = tuple(int(v) for v in card.preprocessing.crop_box(img.size))
    full = box == (0, 0, img.size[0], img.size[1])
    return box, "full image" if full else "centre crop"


def _rank_map(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks in [0, 1), ties broken at random, so "the top 20%" is exactly 20% of the pixels.

    CAMs are often 0 over more than 80% of the image; thresholding the raw map at its 80th
    percentile (as ROAD does) would then remove every pixel instead of a fifth of them.
    """
    flat = values.ravel()
    order = np.lexsort((rng.random(flat.size), flat))
    ranks = np.empty(flat.size, dtype=np.float32)
    ranks[order] = np.arange(flat.size, dtype=np.float32) / flat.size
    return ranks.reshape(values.shape)


def _faithfulness(model, x, cams, target_idx, p_before, class_names, feature_hw, seed) -> list[Faithfulness]:
    """ROAD (remove most relevant first, 20%) on the CAM vs on a random map of the same blob size.

    The random map is noise at the feature-map resolution, upsampled like a CAM, so both removals
    take out blobs of similar size and the imputation is equally hard for both.
    """
    rng = np.random.default_rng(seed)
    h, w = x.shape[-2:]
    hot = np.stack([_rank_map(c, rng) for c in cams])
    rand = np.stack([_rank_map(cv2.resize(rng.random(feature_hw).astype(np.float32), (w, h)), rng)
                     for _ in cams])
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target_idx] * 2
    metric = ROADMostRelevantFirst(percentile=round(100 * (1 - REMOVE_FRACTION)))
    with torch.random.fork_rng(devices=[]):  # the imputer's noise: reproducible, caller's RNG untouched
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # road.py calls np.argwhere on a tensor (NumPy 2 deprecation)
            warnings.simplefilter("ignore", DeprecationWarning)
            after = metric(torch.cat([x, x]), np.concatenate([hot, rand]), targets, model, return_diff=False)
    after = np.asarray(after, dtype=np.float64).reshape(-1)
    n = len(cams)
    return [Faithfulness(float(p_before[i] - after[i]), float(p_before[i] - after[n + i]),
                         target_class=class_names[int(target_idx[i])]) for i in range(n)]


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
    """Heatmaps of the evidence for `target_class` (default: each image's predicted class).

    batch_size: images per forward for the gradient methods; masked copies per forward for the slow
    ones (`SLOW_METHODS`). progress: `fn(done, total)` called after each batch; None: a tqdm bar for
    the slow methods only; False: silence. Raise from it to cancel (the model is restored either way).
    target_layer: the layer to explain (default `models.target_layer(model, card.arch)`).
    copy_model: work on a cached private copy (default) so a shared model is never touched.
    """
    method = _check_method(method)
    if isinstance(images, Image.Image):
        images = [images]
    images = list(images)
    classes = list(card.classes)
    if target_class is not None and target_class not in classes:
        raise ValueError(f"target_class {target_class!r} is not one of the model's classes {classes}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not images:
        return []
    if target_layer is None:
        target_layer = models.target_layer(model, card.arch)
    fake_idx = classes.index("fake") if "fake" in classes else 0
    transform = card.preprocessing.transform()
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]

    slow = method in SLOW_METHODS
    chunk = 1 if slow else batch_size
    out: list[Explanation] = []
    with model_lock(model):
        if copy_model:
            work = _private_copy(model)
        else:
            if any(t.is_inference() for t in list(model.parameters()) + list(model.buffers())):
                raise ValueError(
                    "this model's weights were created under torch.inference_mode(), so autograd cannot "
                    "use them; load the model outside inference_mode or call explain(..., copy_model=True)")
            work = model
        layer = _same_module_in(work, model, target_layer)
        n_channels = None
        if slow:
            n_channels = _channels(work, layer, rgb[0], transform)
            total = len(rgb) * math.ceil(n_channels / batch_size)
        else:
            total = math.ceil(len(rgb) / chunk)
        ticker = _Ticker(total, progress, desc=method, bar=slow)
        try:
            with torch.inference_mode(False), _quiet_state(work):
                for start in range(0, len(rgb), chunk):
                    batch_imgs = rgb[start:start + chunk]
                    out.extend(_explain_batch(work, layer, card, classes, fake_idx, transform, batch_imgs,
                                              method, target_class, batch_size, faithfulness, ticker, seed))
                    if not slow:
                        ticker.tick()
        finally:
            ticker.close()
    return out


def _channels(model, layer, img, transform) -> int:
    shapes = []
    handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    try:
        with torch.inference_mode(False), torch.no_grad():
            model(transform(img)[None].to(next(model.parameters()).device))
    finally:
        handle.remove()
    return shapes[0][1]


def _explain_batch(model, layer, card, classes, fake_idx, transform, imgs, method, target_class,
                   batch_size, want_faith, ticker, seed) -> list[Explanation]:
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    x = torch.stack([transform(im) for im in imgs]).to(device)
    targets = None if target_class is None else [ClassifierOutputTarget(classes.index(target_class))] * len(imgs)
    cls = METHODS[method]
    if method == "scorecam":
        cam_obj = _ScoreCAM(model, [layer], batch_size, ticker)
    elif method == "ablationcam":
        cam_obj = _AblationCAM(model, [layer], batch_size, ticker)
    else:
        cam_obj = cls(model=model, target_layers=[layer])
    uses_grad = method not in GRADIENT_FREE
    # The leaf hook must run before the CAM's own hooks (registered by its constructor): prepend it.
    handle = layer.register_forward_hook(_leaf_hook, prepend=True) if uses_grad else None
    try:
        with _released(cam_obj) as cam:
            grad_ctx = torch.enable_grad() if uses_grad else torch.no_grad()
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
            faiths = _faithfulness(model, x, maps, target_idx, probs[np.arange(len(imgs)), target_idx],
                                   classes, feature_hw, seed)
    seconds = (time.perf_counter() - t0) / len(imgs)

    result = []
    for i, im in enumerate(imgs):
        box, region = _region_of(im, card)
        region_img = im.crop(box)
        heat = cv2.resize(maps[i], region_img.size, interpolation=cv2.INTER_LINEAR)
        heat = np.clip(heat, 0.0, 1.0).astype(np.float32)
        notes = [METHOD_NOTES[method]] if method in METHOD_NOTES else []
        if float(heat.max()) <= 0.0:
            notes.append(f"The heatmap is empty: {method} found no positive evidence for "
                         f"{classes[int(target_idx[i])]} at this layer.")
        result.append(Explanation(
            heatmap=heat, region=region, crop_box=box, method=method,
            target_class=classes[int(target_idx[i])], p_fake=float(probs[i, fake_idx]),
            faithfulness=faiths[i], seconds=seconds, predicted_class=classes[int(predicted[i])],
            region_image=region_img, notes=notes,
        ))
    return result


def estimate_seconds(method: str, model: nn.Module, card: ModelCard, n_images: int = 1, *,
                     batch_size: int = DEFAULT_BATCH_SIZE, target_layer: nn.Module | None = None) -> float:
    """Rough CAM time, from timing real forwards on this machine (cached per model, size, batch).

    Slow methods: one forward of `batch_size` images x ceil(channels / batch_size) batches per image,
    timed at that batch size because per-image cost grows with the batch on a CPU (efficientnet_lite0,
    224 px, one thread: 19 ms/image alone, 61 ms/image in a batch of 32). Gradient methods: about
    1.3 forwards per image. The faithfulness check is not included.
    """
    method = _check_method(method)
    if target_layer is None:
        target_layer = models.target_layer(model, card.arch)
    slow = method in SLOW_METHODS
    bs = batch_size if slow else 1
    size = card.preprocessing.crop
    with model_lock(model):
        work = _private_copy(model)
        layer = _same_module_in(work, model, target_layer)
        with _registry_lock:
            cache = _forward_seconds.setdefault(model, {})
        key = (size, bs, id(layer))
        if key not in cache:
            shapes = []
            handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
            x = torch.zeros(bs, 3, size, size, device=next(work.parameters()).device)
            best = float("inf")
            try:
                with torch.inference_mode(False), torch.no_grad():
                    for _ in range(2 if bs <= 4 else 1):
                        t0 = time.perf_counter()
                        work(x)
                        best = min(best, time.perf_counter() - t0)
            finally:
                handle.remove()
            cache[key] = (best, shapes[0][1])
        seconds, channels = cache[key]
    if slow:
        return n_images * math.ceil(channels / bs) * seconds
    return n_images * seconds * (1.0 if method in GRADIENT_FREE else _GRADIENT_COST)


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------

# 3x3 grid of a centred face crop (as in the training data): (what is usually there, where).
# Left/right are the image's left/right, i.e. the viewer's.
_CELLS = {
    (0, 0): ("the hair or background", "upper left"),
    (0, 1): ("the forehead and hairline", "upper centre"),
    (0, 2): ("the hair or background", "upper right"),
    (1, 0): ("the ear, cheek or background", "left edge"),
    (1, 1): ("the eyes and nose", "centre"),
    (1, 2): ("the ear, cheek or background", "right edge"),
    (2, 0): ("the jaw, neck or background", "lower left"),
    (2, 1): ("the mouth and chin", "lower centre"),
    (2, 2): ("the jaw, neck or background", "lower right"),
}


def _grid_shares(heatmap: np.ndarray) -> np.ndarray:
    h, w = heatmap.shape
    ys, xs = np.linspace(0, h, 4).round().astype(int), np.linspace(0, w, 4).round().astype(int)
    sums = np.array([[heatmap[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].sum() for c in range(3)] for r in range(3)])
    total = sums.sum()
    return sums / total if total > 0 else sums


def describe_regions(heatmap: np.ndarray, target_class: str | None = None, max_regions: int = 2) -> str:
    """Where the evidence concentrates, in words, by a 3x3 grid of the face crop.

    The anatomical names assume a centred face filling the crop, as in the training data.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    whose = f"the model's evidence for {target_class}" if target_class else "the model's evidence"
    if heat.ndim != 2 or heat.size == 0 or heat.max() <= 0:
        return f"{whose} is empty: no region stands out"
    shares = _grid_shares(heat)
    if shares.max() < 1.5 / 9:  # nothing well above an even spread
        return f"{whose} is spread across the whole crop: no single region stands out"
    order = sorted(_CELLS, key=lambda rc: -shares[rc])
    top = [rc for rc in order[:max_regions] if shares[rc] >= 0.6 * shares[order[0]]]
    parts = [f"{_CELLS[rc][0]} ({_CELLS[rc][1]})" for rc in top]
    return f"{whose} concentrated around " + " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def _colormap(name: str) -> int:
    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if code is None:
        raise ValueError(f"unknown colormap {name!r} (OpenCV names: jet, turbo, inferno, viridis, magma, hot...)")
    return code


def _colorize(values: np.ndarray, colormap: str) -> np.ndarray:
    u8 = np.uint8(np.clip(values, 0, 1) * 255)
    return cv2.cvtColor(cv2.applyColorMap(u8, _colormap(colormap)), cv2.COLOR_BGR2RGB)


def _fit(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if heat.shape != (size[1], size[0]):
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0, 1)


def overlay(image_region: Image.Image, heatmap: np.ndarray, opacity: float = 0.45,
            colormap: str = "jet") -> Image.Image:
    """The heatmap blended over the image region it explains (resized to fit if needed)."""
    if not 0 <= opacity <= 1:
        raise ValueError("opacity must be between 0 and 1")
    base = np.asarray(image_region.convert("RGB"), dtype=np.float32)
    colour = _colorize(_fit(heatmap, image_region.size), colormap).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip((1 - opacity) * base + opacity * colour, 0, 255)))


@dataclass(frozen=True)
class HotRegion:
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in heatmap pixels
    area: float  # share of the heatmap's pixels
    heat: float  # share of the total heat inside the region


def hot_regions(heatmap: np.ndarray, top_k: int = 3, percentile: float = 90) -> list[HotRegion]:
    """The top-k connected components above the heatmap's `percentile`, by heat they hold."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, 1)
    if heat.size == 0 or heat.max() <= 0:
        return []
    thr = max(float(np.percentile(heat, percentile)), 1e-6)
    mask = np.uint8(heat >= thr)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    total = float(heat.sum())
    comps = []
    for lab in range(1, n):
        x, y, w, h, area = stats[lab]
        comps.append(HotRegion((int(x), int(y), int(x + w), int(y + h)), float(area) / heat.size,
                               float(heat[labels == lab].sum()) / total))
    return sorted(comps, key=lambda r: -r.heat)[:top_k]


def outline_hot_regions(img: Image.Image, heatmap: np.ndarray, top_k: int = 3, percentile: float = 90,
                        color: tuple[int, int, int] = (255, 255, 255), width: int = 2) -> Image.Image:
    """A copy of `img` with the contours of the top-k hottest connected regions drawn on it."""
    heat = _fit(heatmap, img.size)
    regions = hot_regions(heat, top_k, percentile)
    out = np.ascontiguousarray(np.asarray(img.convert("RGB")).copy())
    if not regions:
        return Image.fromarray(out)
    thr = max(float(np.percentile(heat, percentile)), 1e-6)
    mask = np.uint8(heat >= thr)
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.zeros_like(mask)
    for r in regions:  # find each kept component by a pixel inside its box
        l, t, rr, b = r.box
        sub = labels[t:b, l:rr]
        vals, counts = np.unique(sub[sub > 0], return_counts=True)
        if len(vals):
            keep[labels == vals[counts.argmax()]] = 1
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, int(width)))
    return Image.fromarray(out)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def side_by_side(original: Image.Image, overlay_img: Image.Image, gap: int = 8,
                 background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Original and overlay next to each other at the same height."""
    a = original.convert("RGB")
    b = overlay_img.convert("RGB")
    if b.height != a.height:
        b = b.resize((max(1, round(b.width * a.height / b.height)), a.height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (a.width + gap + b.width, a.height), background)
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    return canvas


def colorbar_image(length: int, thickness: int = 12, colormap: str = "jet", vertical: bool = False,
                   label: str = "low  to  high evidence") -> Image.Image:
    """A colour bar with its label; horizontal (label below) or vertical (high at the top)."""
    length = max(16, int(length))
    ramp = np.linspace(0, 1, length, dtype=np.float32)
    font = _font(11)
    if vertical:
        bar = _colorize(ramp[::-1, None].repeat(thickness, 1), colormap)
        tw = max(font.getbbox(s)[2] for s in ("high", "low")) + 4
        canvas = Image.new("RGB", (thickness + 4 + tw, length), (255, 255, 255))
        canvas.paste(Image.fromarray(bar), (0, 0))
        d = ImageDraw.Draw(canvas)
        d.text((thickness + 4, 0), "high", fill=(0, 0, 0), font=font)
        d.text((thickness + 4, length - 14), "low", fill=(0, 0, 0), font=font)
        return canvas
    bar = _colorize(ramp[None, :].repeat(thickness, 0), colormap)
    canvas = Image.new("RGB", (length, thickness + 16), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    d = ImageDraw.Draw(canvas)
    tw = d.textbbox((0, 0), label, font=font)[2]
    d.text((max(0, (length - tw) // 2), thickness + 2), label, fill=(0, 0, 0), font=font)
    return canvas


def render_panel(image_region: Image.Image, heatmap: np.ndarray, *, opacity: float = 0.45,
                 colormap: str = "jet", outline: bool = True, top_k: int = 3, caption: str | None = None,
                 max_side: int | None = 512) -> Image.Image:
    """Original | overlay (with the hottest regions outlined), a colour bar and an optional caption."""
    img = image_region.convert("RGB")
    heat = _fit(heatmap, img.size)
    if max_side and max(img.size) > max_side:  # keep panels light for the browser
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        heat = _fit(heat, size)
    ov = overlay(img, heat, opacity, colormap)
    if outline:
        ov = outline_hot_regions(ov, heat, top_k=top_k)
    pair = side_by_side(img, ov)
    bar = colorbar_image(ov.width, colormap=colormap)
    font = _font(12)
    cap_h = 18 if caption else 0
    canvas = Image.new("RGB", (pair.width, pair.height + 4 + bar.height + cap_h), (255, 255, 255))
    canvas.paste(pair, (0, 0))
    canvas.paste(bar, (pair.width - ov.width, pair.height + 4))
    if caption:
        ImageDraw.Draw(canvas).text((2, pair.height + 4 + bar.height + 2), caption, fill=(0, 0, 0), font=font)
    return canvas


def to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
