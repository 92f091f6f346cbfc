"""The CAM methods by name: one registry entry says how to build each, and what callers must know.

Built on pytorch-grad-cam. The two slow methods (one masked forward per channel of the target layer)
are subclassed here to build their batches lazily, report progress and always put the model back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
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
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from torch import nn

Progress = Callable[[int, int], None]


class Ticker:
    """Counts finished steps for a progress callback, or a tqdm bar when asked for one."""

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

    def __init__(self, model, target_layers, batch_size: int, ticker: Ticker):
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

    def __init__(self, model, target_layers, batch_size: int, ticker: Ticker):
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


def _library(cls: type) -> Callable:
    """Factory for a library method that needs neither batching nor progress."""
    return lambda model, layer, batch_size, ticker: cls(model=model, target_layers=[layer])


def _slow(cls: type) -> Callable:
    return lambda model, layer, batch_size, ticker: cls(model, [layer], batch_size, ticker)


@dataclass(frozen=True)
class Method:
    """One CAM method: how to build it and what a caller must know before running it.

    slow: one masked forward per channel of the target layer (ResNet50: 2048, EfficientNet-Lite0: 1280),
    minutes per image on a CPU; callers should show `estimate_seconds` and a progress bar, and it runs
    one image at a time. needs_gradients: a backward pass through the layers after the target layer.
    note: shown to users beside every heatmap of this method.
    """

    name: str
    factory: Callable  # (model, target_layer, batch_size, ticker) -> a pytorch-grad-cam object
    slow: bool = False
    needs_gradients: bool = True
    note: str | None = None


_REGISTRY = (
    Method("gradcam", _library(GradCAM)),
    Method("gradcam++", _library(GradCAMPlusPlus)),
    Method("hirescam", _library(HiResCAM)),
    Method("xgradcam", _library(XGradCAM)),
    Method("layercam", _library(LayerCAM)),
    Method("eigencam", _library(EigenCAM), needs_gradients=False,
           note="EigenCAM shows the main component of the features, whatever the class: "
                "it is the same map for 'fake' and 'real'."),
    Method("scorecam", _slow(_ScoreCAM), slow=True, needs_gradients=False),
    Method("ablationcam", _slow(_AblationCAM), slow=True, needs_gradients=False,
           note="AblationCAM scores channels by the drop in the class probability (not the raw logit), "
                "so a negative logit cannot flip the map."),
)
METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}
DEFAULT_METHOD = "gradcam"
SLOW_METHODS = frozenset(m.name for m in _REGISTRY if m.slow)
METHOD_NOTES = {m.name: m.note for m in _REGISTRY if m.note}

_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


def get_method(name: str) -> Method:
    """The registry entry for `name`, spelled loosely ("Grad-CAM++", "score_cam"), or a ValueError."""
    key = name.lower().replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown CAM method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[key]
