"""Quantization-aware distillation: weights whose INT8 graph gives the fp32 model's answers.

Post-training INT8 of the Lite2 default flipped verdicts on 1-2% of StyleGAN and FFHQ faces at
every calibration and every choice of fp32 layers tried (benchmarks/results-int8-sensitivity.md):
p_fake near the threshold moved by up to 0.2. Here a copy of the model (the student) is fine-tuned
with the quantization simulated where onnxruntime's static QDQ quantization puts it (per-channel
symmetric int8 weights on every convolution except the first, per-tensor asymmetric uint8 on every
activation, residual sum and the pooled features; the dense head stays fp32), to reproduce the fp32 model's (the teacher's) outputs on
training-split views: its fake-vs-real logit margin, which is p_fake, and its penultimate features,
which the unfamiliar check and the generator head read. Labels are never used: the aim is the same
answers, not better ones. The student's weights are then quantized by `export --int8` as any
checkpoint's would be, and the gate compares that graph with the *teacher's* fp32 PyTorch.

    realitycheck export weights/m.pt --int8 --int8-distill --calibration manifests/shared-data.toml ...

The simulated grid is the export's own: weight scales by onnxruntime's rule (max |w| / 127 per
channel), activation ranges read from an INT8 graph onnxruntime calibrates on the student before
every epoch (an approximate grid decorrelates the rounding and teaches the wrong noise).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from realitycheck.model.export import (
    calibration_files,
    preprocessed_batches,
    quantize_int8,
    stack_views,
    training_seed,
)
from realitycheck.model.ood import FeatureTap


@dataclass(frozen=True)
class DistillSettings:
    epochs: int = 3
    lr: float = 2e-5
    batch: int = 32
    feature_weight: float = 0.1  # the features' share of the loss (the margin carries the verdict)
    near_threshold_weight: float = 4.0  # extra weight of views whose margin lies near the card's threshold
    seed: int = 0


def _fake_quant_uint8(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per-tensor asymmetric uint8 on [min(lo, 0), max(hi, 0)], as onnxruntime's MinMax calibration does."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zero = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (zero point 0). Per-channel scales commute with a folded
    batch norm's per-channel factor, so quantizing the unfolded weight simulates the exported one."""
    amax = w.detach().abs().flatten(1).amax(1).float()
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))  # onnxruntime's: +-127, scale 1 for a dead channel
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127)


class _WeightQuant(nn.Module):
    """A convolution whose weight is fake-quantized (int8 per channel)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, _fake_quant_weight(c.weight), c.bias, c.stride, c.padding, c.dilation, c.groups)


class _OutputQuant:
    """A forward hook that fake-quantizes a module's output (uint8), with its own range per call within
    one forward (a block's shared activation runs twice). While `order` is a list, it records the
    order of calls instead (to pair each with the graph's quantized tensor in the same place)."""

    def __init__(self):
        self.ranges: list[tuple[float, float]] = []
        self.calls = 0
        self.order: list | None = None

    def __call__(self, module, args, out):
        i, self.calls = self.calls, self.calls + 1
        if self.order is not None:
            self.order.append((self, i))
            return out
        lo, hi = self.ranges[i]
        return _fake_quant_uint8(out, lo, hi)


@dataclass
class Simulation:
    """What `simulate_int8` put into a model: the weight wrappers, the output hooks and their handles."""

    model: nn.Module
    weights: list[_WeightQuant]
    outputs: list[_OutputQuant]
    handles: list

    def set_ranges(self, ranges: list[tuple[float, float]], example: torch.Tensor) -> None:
        """Give the quantized tensors, in the order the model computes them, the (min, max) of the
        exported graph's quantized tensors in graph order (`graph_ranges`)."""
        order: list = []
        for q in self.outputs:
            q.order = order
        try:
            with torch.no_grad():
                self._reset()
                self.model(example[:1])
        finally:
            for q in self.outputs:
                q.order = None
        if len(order) != len(ranges):
            raise ValueError(f"the INT8 graph quantizes {len(ranges)} tensors, the simulation {len(order)}: "
                             "this architecture's quantized tensors are not all known to the simulation")
        for q in self.outputs:
            q.ranges = [(0.0, 0.0)] * q.calls
        for (q, i), r in zip(order, ranges):
            q.ranges[i] = r
        self._reset()

    def _reset(self) -> None:
        for q in self.outputs:
            q.calls = 0

    def remove(self) -> nn.Module:
        """The plain model back (convolutions unwrapped, hooks gone), ready to save and export."""
        for h in self.handles:
            h.remove()
        return _unwrapped(self.model)

    def plain_copy(self) -> nn.Module:
        """A plain copy of the model as it is now (the simulation stays in place)."""
        plain = copy.deepcopy(self.model)
        for m in plain.modules():  # the copies of our hooks (a deep copy carries them along)
            m._forward_pre_hooks.clear()
            m._forward_hooks.clear()
        return _unwrapped(plain)


def _put(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted) by `module`."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def _unwrapped(model: nn.Module) -> nn.Module:
    """`model` with every `_WeightQuant` replaced by its convolution, in place."""
    for name, m in list(model.named_modules()):
        if isinstance(m, _WeightQuant):
            _put(model, name, m.conv)
    return model


def graph_ranges(graph) -> list[tuple[float, float]]:
    """(min, max) of every activation tensor an onnxruntime QDQ graph quantizes, in graph order; a
    Flatten's (the same values as the pooling before it) left out."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(graph)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    out = []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in init:
            continue
        src = producer.get(n.input[0])
        if src is not None and src.op_type == "Flatten":
            continue
        scale, zero = float(init[n.input[1]]), int(init[n.input[2]])
        out.append((-zero * scale, (255 - zero) * scale))
    return out


def _quantized_outputs(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs onnxruntime's QDQ graph quantizes: every activation (convolution,
    batch norm and ReLU6 fuse into one quantized node), pooling, and for EfficientNet-Lite blocks the
    projection (no activation) and the residual sum."""
    from realitycheck.model.models import MBConv

    out = []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.AdaptiveAvgPool2d)):
            out.append(m)
        elif isinstance(m, MBConv):
            out.append(m._bn2)
            if m.residual:
                out.append(m)
    return out


def simulate_int8(model: nn.Module) -> Simulation:
    """Put onnxruntime's INT8 quantization into `model` in place: int8 weights on every convolution but
    the first (left fp32 by `export.default_keep_fp32`), uint8 on every tensor the QDQ graph quantizes.
    Call `calibrate` before use (the ranges), `remove` after."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    weights = []
    for name, conv in convs[1:]:
        weights.append(_WeightQuant(conv))
        _put(model, name, weights[-1])
    outputs, handles = [], []
    for m in _quantized_outputs(model):
        q = _OutputQuant()
        outputs.append(q)
        handles.append(m.register_forward_hook(q))
    sim = Simulation(model, weights, outputs, handles)
    handles.append(model.register_forward_pre_hook(lambda mod, args: sim._reset()))
    return sim


def _margin_and_features(model, arch: str, x: torch.Tensor, fake: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit of fake minus the other's, the head's input), gradients kept."""
    with FeatureTap(model, arch, detach=False) as tap:
        logits = model(x).float()
    return logits[:, fake] - logits[:, 1 - fake], tap.features


@torch.no_grad()
def _targets(teacher, arch: str, views: torch.Tensor, fake: int, mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's margins and features on every view (or its mirror image), 64 at a time."""
    out = [_margin_and_features(teacher, arch, views[i:i + 64].flip(3) if mirror else views[i:i + 64], fake)
           for i in range(0, len(views), 64)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def calibrate(sim: Simulation, card, calibration: torch.Tensor) -> None:
    """The ranges `export --int8` would calibrate for the model as it is now (onnxruntime's own
    calibration of a plain copy), set into the simulation."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        graph = quantize_int8(sim.plain_copy(), card, Path(tmp) / "int8.onnx",
                              (calibration[i:i + 16].numpy() for i in range(0, len(calibration), 16)))
        sim.set_ranges(graph_ranges(graph), calibration)


def distill_for_int8(teacher: nn.Module, card, views: torch.Tensor, calibration: torch.Tensor,
                     settings: DistillSettings = DistillSettings(),
                     log: Callable[[str], None] = lambda m: None) -> nn.Module:
    """A student of `teacher` whose fake-quantized outputs match the teacher's fp32 ones on `views`
    (training-split views, N x 3 x H x W); `calibration`: the views the export calibrates on.

    Batch norm stays in eval mode (its statistics are what the export folds into the convolutions).
    """
    fake = list(card.classes).index("fake")
    teacher = teacher.float().eval()
    t_margin, t_feat = _targets(teacher, card.arch, views, fake)
    # the mirror image is a free second view to match (training augmentation flips too)
    t_margin_flip, t_feat_flip = _targets(teacher, card.arch, views, fake, mirror=True)
    feat_scale = t_feat.var(0).mean().clamp_min(1e-8)
    t = min(max(card.threshold, 1e-6), 1 - 1e-6)
    t_cut = math.log(t / (1 - t))  # the threshold as a fake-minus-real logit margin

    student = copy.deepcopy(teacher)
    sim = simulate_int8(student)
    params = list(student.parameters())
    for p in params:  # a loaded checkpoint may come frozen
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    steps = settings.epochs * math.ceil(len(views) / settings.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    for epoch in range(settings.epochs):
        student.eval()
        calibrate(sim, card, calibration)
        order = torch.randperm(len(views), generator=g)
        t0, total, n = time.perf_counter(), 0.0, 0
        for i in range(0, len(views), settings.batch):
            idx = order[i:i + settings.batch]
            flip = bool(torch.rand(1, generator=g) < 0.5)
            x = views[idx].flip(3) if flip else views[idx]
            tm, tf = (t_margin_flip[idx], t_feat_flip[idx]) if flip else (t_margin[idx], t_feat[idx])
            margin, feat = _margin_and_features(student, card.arch, x, fake)
            near = 1 + settings.near_threshold_weight * torch.exp(-(tm - t_cut) ** 2)  # flips happen there
            loss = (near * (margin - tm) ** 2).mean() + settings.feature_weight * F.mse_loss(feat, tf) / feat_scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        log(f"int8 distillation epoch {epoch + 1}/{settings.epochs}: loss {total / max(n, 1):.5f} "
            f"({time.perf_counter() - t0:.0f} s)")
    return sim.remove().eval()


def distiller(folders, images: int = 2000, settings: DistillSettings = DistillSettings(),
              log: Callable[[str], None] = lambda m: None) -> Callable:
    """`export(int8_weights=...)`: distil on `images` training-split images of `folders` (as --data
    takes them, split as train splits them) and return (the student, what it is in words)."""
    from realitycheck.model.inference import Classifier

    def make(model, card, calibration: torch.Tensor):
        rows = calibration_files(folders, training_seed(card), images)
        if not rows:
            raise ValueError(f"no training-split images in {', '.join(map(str, folders))}")
        ref = Classifier(model, card, precision="fp32", engine="torch")
        t0 = time.perf_counter()
        views = stack_views(preprocessed_batches(ref, [r[0] for r in rows], views=True))
        log(f"int8 distillation: {len(views)} training-split views in {time.perf_counter() - t0:.0f} s")
        student = distill_for_int8(model, card, views, calibration, settings, log)
        note = (f"distilled for INT8 from this checkpoint (quantization simulated, no labels): {len(views)} "
                f"training-split views of {', '.join(map(str, folders))}, {settings.epochs} epochs, lr {settings.lr:g}, "
                f"batch {settings.batch}, feature weight {settings.feature_weight:g}")
        return student, note

    return make
