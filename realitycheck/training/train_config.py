"""The training options: one table (`TrainConfig`) from which the CLI and a card's command are derived.

No torch import here, so `realitycheck --help` stays fast. Each field's metadata holds its help
text and choices; `add_train_arguments` turns the table into argparse options and
`command_args` turns a config back into the arguments that rebuild it exactly.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import MISSING, dataclass, field, fields

# models.ARCHITECTURES by name (a test keeps the two equal); spelled out so this module needs no torch
ARCH_NAMES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "npr_resnet", "resnet50"]
AUGMENTS = ("none", "flip", "crop", "full", "robust")
# --augment robust: share of training photos rescaled before the rest (the option's default, and the
# default of the transforms that take it)
RESCALE_P = 0.8


def opt(help: str, **kw) -> dict:
    """Field metadata that becomes a CLI option (`flag=None`: not on the command line)."""
    return {"help": help, **kw}


@dataclass
class TrainConfig:
    data: list = field(default_factory=list, metadata=opt(
        "labelled source: a folder with real/ and fake/, NAME=FOLDER, a CSV of path,label, or a .toml manifest "
        "of named sources (repeatable)", positional=True))
    arch: str = field(default="efficientnet_lite0", metadata=opt("architecture", choices=ARCH_NAMES))
    mode: str = field(default="finetune", metadata=opt("finetune trains everything; feature-extract only the head",
                                                       choices=["finetune", "feature-extract"]))
    out: str = field(default="weights/model", metadata=opt("checkpoint path (NAME.pt, NAME.md, NAME.log.csv ...)"))
    epochs: int = field(default=15, metadata=opt("training epochs"))
    batch_size: int = field(default=32, metadata=opt("images per step"))
    lr: float = field(default=1e-3, metadata=opt("head learning rate; the backbone gets lr x backbone-lr-scale"))
    backbone_lr_scale: float = field(default=0.3, metadata=opt("learning-rate factor for a pretrained backbone"))
    weight_decay: float = field(default=0.05, metadata=opt("AdamW weight decay"))
    label_smoothing: float = field(default=0.1, metadata=opt("cross-entropy label smoothing"))
    patience: int = field(default=4, metadata=opt("epochs without validation-AUC improvement before stopping"))
    seed: int = field(default=0, metadata=opt("seed of the split and of training"))
    resize: int = field(default=256, metadata=opt(
        "whole-image models: shorter side before the crop; 0 = no resizing (crops at native scale)"))
    crop: int = field(default=224, metadata=opt("model input size (random crop in training, centre crop at test)"))
    align: str = field(default="none", metadata=opt(
        "face: each face found by YuNet aligned to a fixed FFHQ-like framing at the input size", choices=["none", "face"]))
    zoom: float = field(default=0.7, metadata=opt("with --align face: framing scale (1 = FFHQ's, smaller = tighter)"))
    augment: str = field(default="full", metadata=opt(
        "none | flip | crop (shifts, no resampling) | full (+ JPEG, blur, colour) | robust (random down/up-scaling "
        "and JPEG of the whole photo for both classes, then the test-time pipeline)", choices=list(AUGMENTS)))
    rescale_p: float = field(default=RESCALE_P, metadata=opt(
        "with --augment robust: share of training photos randomly down/up-scaled (x0.35-x2) before the rest"))
    ema: float = field(default=0.0, metadata=opt("exponential moving average of the weights (e.g. 0.998); 0 = off"))
    extra_real: list = field(default_factory=list, metadata=opt("real-only folder added to training (its train share; repeatable)"))
    source_weight: list = field(default_factory=list, metadata=opt(
        "NAME=W: sampling weight of a source relative to the others of its class (repeatable; default 1 = by size)"))
    max_per_source: int | None = field(default=None, metadata=opt(
        "use at most N images per source (a fixed hash-chosen subset; recorded)"))
    max_side: int | None = field(default=None, metadata=opt(
        "downscale images whose longer side exceeds N px when loading (training and validation)"))
    init_weights: str | None = field(default=None, metadata=opt(
        "start from this file: a RealityCheck checkpoint, or for resnet50 an ImageNet file / RealityCheck.pth"))
    precision: str = field(default="auto", metadata=opt("bf16 autocast where supported, else fp32",
                                                        choices=["auto", "fp32", "bf16"]))
    device: str = field(default="auto", metadata=opt("auto (cuda if present), cpu or cuda"))
    limit: int | None = field(default=None, metadata=opt("at most N images per class (quick tries)"))
    max_steps: int | None = field(default=None, metadata=opt("at most N steps per epoch (smoke tests)"))
    resume: bool = field(default=False, metadata=opt("continue an interrupted run from its last epoch", stored=False))
    test_only: bool = field(default=False, metadata=opt(
        "score the test split of a finished run (same other options) and update its card", stored=False))
    workers: int = field(default=1, metadata=opt("data-loading processes"))
    half: bool = field(default=True, metadata=opt("store the shipped weights in fp16 (half the size, same predictions)"))
    teacher: str | None = field(default=None, metadata=opt("distil from this checkpoint's soft labels"))
    distill_weight: float = field(default=0.7, metadata=opt("share of the loss from the teacher's soft labels"))
    distill_temperature: float = field(default=2.0, metadata=opt("distillation temperature"))

    def __post_init__(self):
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        self.extra_real = [str(e) for e in (self.extra_real or [])]
        self.source_weight = [str(s) for s in (self.source_weight or [])]


def _flag(f) -> str:
    return "--" + f.name.replace("_", "-")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: same name, type, default, choices and help."""
    for f in fields(TrainConfig):
        meta = dict(f.metadata)
        default = f.default if f.default is not MISSING else f.default_factory()
        kw = {"help": meta["help"]}
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("positional"):
            p.add_argument(f.name, nargs="*", default=[], metavar="DATA", help=kw["help"])
            p.add_argument("--data", dest="data_opt", action="append", default=[], help="same as DATA (repeatable)")
            continue
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            kw["action"] = "append"
            default = []
        else:
            kw["type"] = {"int": int, "int | None": int, "float": float, "float | None": float}.get(str(f.type), str)
        kw["default"] = default
        p.add_argument(_flag(f), dest=f.name, **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["data"] = list(getattr(args, "data", []) or []) + list(getattr(args, "data_opt", []) or [])
    return TrainConfig(**values)


def command_args(cfg: TrainConfig) -> list[str]:
    """The arguments that rebuild `cfg` exactly: every stored field that differs from its default."""
    args: list[str] = []
    for f in fields(TrainConfig):
        if not f.metadata.get("stored", True):
            continue
        value = getattr(cfg, f.name)
        default = f.default if f.default is not MISSING else f.default_factory()
        if f.metadata.get("positional"):
            for d in value:
                args += ["--data", str(d)]
            continue
        if value == default:
            continue
        if isinstance(value, bool):
            args.append(_flag(f) if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            for v in value:
                args += [_flag(f), str(v)]
        elif value is not None:
            args += [_flag(f), repr(value) if isinstance(value, float) else str(value)]
    return args


def command_line(cfg: TrainConfig) -> str:
    return "realitycheck train " + " ".join(shlex.quote(a) for a in command_args(cfg))
