"""Self-describing checkpoints: weights + a card (architecture, classes, preprocessing, data, metrics).

A RealityCheck checkpoint is one `.pt` file holding only tensors and plain data, written by
`torch.save` and read with `torch.load(weights_only=True)`, so loading never runs code:

    {"format": "realitycheck-checkpoint", "format_version": 1,
     "card": "<JSON text of ModelCard>", "state_dict": {name: tensor}}

A Markdown model card for people sits beside it (`NAME.md`).

The original project's `RealityCheck.pth` (a bare ResNet50 state_dict with the head keys
fc.0/fc.2/fc.4) is recognised and given the card it implies, so it loads unchanged.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from realitycheck.model import models

FORMAT = "realitycheck-checkpoint"
FORMAT_VERSION = 1
IMAGENET_MEAN, IMAGENET_STD = models.IMAGENET_MEAN, models.IMAGENET_STD  # Preprocessing's defaults


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and what was expected."""


@dataclass
class Preprocessing:
    """What turns an RGB image into the model's input: resize shorter side, centre crop, normalise.

    resize = 0: no resizing (crop-never-resize): the crop is taken at the image's native scale, so the
    pixel grid a generator left is never resampled (an image smaller than the crop is zero-padded).
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # average the probabilities of the image and its mirror image (test-time flip); a faces model
    # should not care which way a face looks, and averaging the two views steadies its score
    mirror_average: bool = False
    # "none": the whole image (resize + centre crop); "face": each detected face aligned to a fixed
    # FFHQ-like framing of crop x crop pixels (faces.align_face with `zoom`), the whole image only
    # when no face is found
    align: str = "none"
    zoom: float = 1.0

    def transform(self) -> Callable:
        """Whole image -> tensor (resize shorter side, centre crop, normalise; `preprocess.WholeImage`)."""
        from realitycheck.intake.preprocess import WholeImage

        return WholeImage(self.resize, self.crop, self.mean, self.std, self.interpolation)

    def resize_steps(self) -> list:
        """Training's torchvision form of the resize step: [Resize(shorter side)], or [] when resize == 0
        (native scale). Prediction uses `preprocess.WholeImage`, which gives the same pixels."""
        from torchvision import transforms as T

        if self.resize == 0:
            return []
        return [T.Resize(self.resize, interpolation=T.InterpolationMode(self.interpolation), antialias=True)]

    def tensor_transform(self) -> Callable:
        """An image already at the model's input size -> tensor (normalise only)."""
        from realitycheck.intake.preprocess import Normalized

        return Normalized(self.mean, self.std)

    def crop_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The (left, top, right, bottom) region of an image of `size` that the model actually sees."""
        w, h = size
        scale = self.resize / min(w, h) if self.resize else 1.0
        side_w = min(w, round(self.crop / scale))  # square unless the crop is larger than the image
        side_h = min(h, round(self.crop / scale))
        left = max(0, (w - side_w) // 2)
        top = max(0, (h - side_h) // 2)
        return (left, top, left + side_w, top + side_h)


@dataclass
class ModelCard:
    """Everything needed to use and judge a checkpoint, so nothing has to be guessed."""

    name: str
    arch: str
    classes: list[str] = field(default_factory=lambda: list(models.CLASSES))
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    init: str = "unknown"  # where the weights started from (ImageNet file, scratch, ...)
    source: str = "realitycheck"  # or "original-reality-check" for a bare seed state_dict
    training: dict[str, Any] = field(default_factory=dict)  # data, split, settings, time
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"test": {...}, "val": {...}}
    notes: list[str] = field(default_factory=list)
    # unfamiliar-image check: threshold, what it was fitted and chosen on, measured flag rates (statistics
    # themselves are tensors in the checkpoint under "ood")
    ood: dict[str, Any] = field(default_factory=dict)
    # generator attribution head (attribution.AttributionHead): family names, min_confidence, how it was
    # fitted and measured; its weights are tensors in the checkpoint under "attribution". Empty: no head.
    attribution: dict[str, Any] = field(default_factory=dict)
    # which views are scored: {"mirror_margin": m, ...how it was chosen and measured}: with mirror
    # averaging, a view's mirror image is scored only when its first p_fake lies within m of the
    # threshold (`realitycheck views` chooses m on validation). Empty: every view and its mirror
    views: dict[str, Any] = field(default_factory=dict)
    # the decision threshold on p_fake this model ships with (chosen on validation by `realitycheck threshold`;
    # 0.5, the neutral cut, only in a card written before one was chosen). Every caller reads it from here
    threshold: float = 0.5
    created: str = ""
    realitycheck_version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        d = dict(d)
        pre = d.pop("preprocessing", {}) or {}
        pre = {k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: d.pop(k) for k in list(d) if k not in known}
        card = cls(preprocessing=Preprocessing(**pre), **d)
        if extra:
            card.training.setdefault("extra_card_fields", extra)
        return card

    @property
    def fake_index(self) -> int:
        return self.classes.index("fake")

    def test_summary(self) -> str:
        t = (self.metrics or {}).get("test") or {}
        if not t:
            return "no test metrics recorded"
        parts = []
        if t.get("accuracy") is not None:
            parts.append(f"accuracy {t['accuracy']:.1%}")
        if t.get("roc_auc") is not None:
            parts.append(f"ROC-AUC {t['roc_auc']:.3f}")
        if t.get("n"):
            parts.append(f"n={t['n']}")
        return ", ".join(parts)


def default_preprocessing(arch: str, **sizes) -> Preprocessing:
    """Preprocessing for a model of `arch`: the normalisation its pretrained weights expect (the
    architecture's spec) and `sizes` (resize=, crop=) or Preprocessing's defaults."""
    spec = models.get_arch(arch)
    return Preprocessing(mean=spec.mean, std=spec.std, **sizes)


def default_card(name: str, arch: str, **fields) -> ModelCard:
    """A card for a model of `arch` with the class order and preprocessing its spec implies."""
    fields.setdefault("preprocessing", default_preprocessing(arch))
    return ModelCard(name=name, arch=arch, classes=list(models.get_arch(arch).classes), **fields)


def original_card(path: str | Path = "RealityCheck.pth") -> ModelCard:
    """The card implied by the original project's bare state_dict (torchvision's IMAGENET1K_V2 sizes)."""
    return default_card(
        Path(path).stem,
        "resnet50",
        preprocessing=default_preprocessing("resnet50", resize=232, crop=224),
        init="torchvision ResNet50 IMAGENET1K_V2 (as trained by the original project)",
        source="original-reality-check",
        training={"data": "140k Real and Fake Faces (Kaggle), per the original project"},
        notes=[
            "Recognised as the original Reality Check state_dict (head keys fc.0/fc.2/fc.4).",
            "The original project reported 93.9% test accuracy; RealityCheck has not measured it: "
            "run `realitycheck evaluate` to get numbers on your data.",
        ],
    )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _read(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a .pt/.pth weights file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty; expected a PyTorch weights file (.pt/.pth)")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch zip format or legacy pickle
        kind = "an HTML page (a failed download?)" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) \
            else "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "unrecognised binary data"
        raise CheckpointError(f"{path}: not a PyTorch weights file (it holds {kind}); expected a .pt/.pth state_dict")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol-version chatter; refusals arrive as exceptions
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported (?:global|class)[: ]+([\w.]+)", text)
        what = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused: the file contains pickled Python objects, not just weights{what}. "
            "RealityCheck never runs code from weight files; save weights with torch.save(model.state_dict(), PATH)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError,
            TypeError, IndexError, UnicodeDecodeError, MemoryError) as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch weights file (corrupt or truncated: {msg})"
        ) from None


def _clean_state_dict(sd: dict) -> dict[str, torch.Tensor]:
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise TypeError("not a mapping of names to tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _state_dict_in(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    try:
        return _clean_state_dict(obj)
    except TypeError:
        raise CheckpointError(f"{path}: holds a dict that is not a state_dict (values are not all tensors)") from None


def _is_original_layout(sd: dict) -> bool:
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    return (
        shapes.get("fc.0.weight") == (1000, 2048)
        and shapes.get("fc.2.weight") == (500, 1000)
        and shapes.get("fc.4.weight") == (2, 500)
        and "conv1.weight" in shapes
        and "layer4.2.conv3.weight" in shapes
    )


def _guess_bare(sd: dict, path: Path) -> ModelCard:
    if _is_original_layout(sd):
        return original_card(path)
    lite = models.lite_arch_of(sd)
    if lite and "_fc.weight" in sd and sd["_fc.weight"].shape[0] == 2:
        card = default_card(path.stem, lite, init="unknown", source="bare-state-dict")
        card.notes.append("Bare state_dict without a card: class order assumed [fake, real] and default preprocessing.")
        return card
    fc = sd.get("fc.weight")
    if fc is not None:
        expected = "a ResNet50 state_dict with the original head fc.0/fc.2/fc.4 ending in 2 classes"
        raise CheckpointError(f"{path}: has a single-layer fc head of shape {tuple(fc.shape)}; expected {expected}")
    raise CheckpointError(
        f"{path}: a state_dict of {len(sd)} tensors that matches no known model; expected a RealityCheck "
        "checkpoint or the original RealityCheck.pth (ResNet50 with head fc.0/fc.2/fc.4, 2 classes)"
    )


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read weights and card without building a model (cheap: used to list models)."""
    sd, card, _ = read_checkpoint_extras(path)
    return sd, card


def stored_half(path: str | Path) -> bool:
    """Whether the file keeps its weights in fp16, so a card-only rewrite can save it the same way."""
    return next(iter(read_checkpoint(path)[0].values())).dtype == torch.float16


def read_checkpoint_extras(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard, dict]:
    """Weights, card and the extra tensors a checkpoint carries (e.g. "ood": unfamiliarity statistics)."""
    path = Path(path)
    obj = _read(path)
    extras = {}
    for key in ("ood", "attribution"):
        if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get(key), dict):
            extras[key] = obj[key]
    sd, card = _interpret(obj, path)
    return sd, card, _one_ood_threshold(card, extras)


def _one_ood_threshold(card: ModelCard, extras: dict) -> dict:
    """`extras` whose unfamiliar threshold is the card's: `card.ood["threshold"]` is the one in force.

    The "threshold" tensor under "ood" stays in the file as a copy of it (older versions, and code that
    reads the tensors alone, find it there). A checkpoint with the tensor but no card entry (an old or
    hand-made one) gets the entry from the tensor, so it flags what it flagged before. Changes `card`.
    """
    ood = extras.get("ood")
    if not isinstance(ood, dict):
        return extras
    if card.ood.get("threshold") is not None:
        ood = {**ood, "threshold": torch.tensor([float(card.ood["threshold"])], dtype=torch.float64)}
    elif isinstance(ood.get("threshold"), torch.Tensor) and ood["threshold"].numel() == 1:
        card.ood["threshold"] = float(ood["threshold"].reshape(-1)[0])
    return {**extras, "ood": ood}


def _interpret(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Weights and card from what `_read` found in `path`: a RealityCheck checkpoint or a bare state_dict."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        version = obj.get("format_version", 0)
        if not isinstance(version, int):
            raise CheckpointError(f"{path}: RealityCheck checkpoint with a damaged header (format_version {version!r})")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer RealityCheck (format {version}); upgrade RealityCheck")
        try:
            card = ModelCard.from_dict(json.loads(obj["card"]))
            sd = _clean_state_dict(obj["state_dict"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: RealityCheck checkpoint with a damaged card or weights ({exc})") from None
        problem = card_problem(card)
        if problem:
            raise CheckpointError(f"{path}: RealityCheck checkpoint with a damaged card: {problem}")
        return sd, card
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # common {"state_dict": ..., "epoch": ...} training dumps
    if isinstance(obj, dict):
        sd = _state_dict_in(obj, path)
        if not sd:
            raise CheckpointError(f"{path}: holds an empty state_dict")
        return sd, _guess_bare(sd, path)
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a state_dict or a RealityCheck checkpoint")


def card_problem(card: ModelCard) -> str | None:
    """What is wrong with a card read from an untrusted file, or None: checked before any use."""
    if not isinstance(card.arch, str) or card.arch not in models.ARCHITECTURES:
        return f"unknown architecture {card.arch!r}; known: {sorted(models.ARCHITECTURES)}"
    if not isinstance(card.classes, (list, tuple)) or sorted(map(str, card.classes)) != ["fake", "real"] \
            or len(card.classes) != 2:
        return f"classes {card.classes!r}; expected the two classes 'fake' and 'real'"
    p = card.preprocessing
    for name in ("resize", "crop"):
        v = getattr(p, name)
        if not isinstance(v, int) or isinstance(v, bool) or not (8 <= v <= 4096 or (name == "resize" and v == 0)):
            return f"preprocessing {name}={v!r}; expected a whole number of pixels between 8 and 4096"
    if p.resize and p.crop > p.resize:
        return f"preprocessing crop {p.crop} is larger than resize {p.resize}"
    for name in ("mean", "std"):
        v = getattr(p, name)
        if not (isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            return f"preprocessing {name}={v!r}; expected three numbers"
    if any(x <= 0 for x in p.std):
        return f"preprocessing std={p.std!r} must be positive"
    if p.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming", "nearest-exact"):
        return f"preprocessing interpolation {p.interpolation!r} is not known"
    if not isinstance(p.mirror_average, bool):
        return f"preprocessing mirror_average={p.mirror_average!r}; expected true or false"
    if p.align not in ("none", "face"):
        return f"preprocessing align={p.align!r}; expected none or face"
    if not isinstance(p.zoom, (int, float)) or isinstance(p.zoom, bool) or not 0.3 <= p.zoom <= 3.0:
        return f"preprocessing zoom={p.zoom!r}; expected a number between 0.3 and 3"
    if not isinstance(card.threshold, (int, float)) or isinstance(card.threshold, bool) or not 0 < card.threshold < 1:
        return f"threshold {card.threshold!r}; expected a number between 0 and 1"
    if not isinstance(card.name, str):
        return f"name {card.name!r} is not text"
    if not isinstance(card.ood, dict):
        return f"ood {card.ood!r}; expected a table of the unfamiliar-image check's settings"
    t = card.ood.get("threshold")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or t != t):  # t != t: NaN
        return f"unfamiliar-image threshold {t!r}; expected a number"
    if not isinstance(card.views, dict):
        return f"views {card.views!r}; expected a table of the view rule's settings"
    m = card.views.get("mirror_margin")
    if m is not None and (not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 <= m <= 1):
        return f"views mirror_margin {m!r}; expected a number between 0 and 1 (a distance in p_fake)"
    return None


def read_card(path: str | Path) -> ModelCard:
    return read_checkpoint(path)[1]


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Build the architecture the card names and load the weights strictly; model in eval mode."""
    model, card, _ = load_checkpoint_extras(path)
    return model, card


def load_checkpoint_extras(path: str | Path) -> tuple[nn.Module, ModelCard, dict]:
    """`load_checkpoint` plus the extra tensors the file carries (see `read_checkpoint_extras`)."""
    path = Path(path)
    sd, card, extras = read_checkpoint_extras(path)
    return _build(sd, card, path), card, extras


def _build(sd: dict[str, torch.Tensor], card: ModelCard, path: Path) -> nn.Module:
    problem = card_problem(card)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    model = models.build_model(card.arch, num_classes=len(card.classes), pretrained=False)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        bits = []
        if wrong:
            bits.append(f"{len(wrong)} wrong shapes (e.g. {wrong[0]})")
        if missing:
            bits.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            bits.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{path}: weights do not fit a {card.arch} with {len(card.classes)} classes: " + "; ".join(bits)
        )
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model


def _is_torchvision_imagenet(obj: Any) -> bool:
    """A torchvision ResNet50 ImageNet state_dict: a single-layer `fc` head instead of the original's."""
    return isinstance(obj, dict) and obj.get("format") != FORMAT and "fc.weight" in obj and "fc.0.weight" not in obj


def load_initial_weights(path: str | Path, arch: str) -> tuple[nn.Module, str]:
    """A model of `arch` to start training from the file `path`, and where its weights came from.

    `path` is a RealityCheck checkpoint, the original RealityCheck.pth, a bare EfficientNet-Lite
    state_dict, or (resnet50) a torchvision ImageNet state_dict, whose `fc` head is replaced by the
    original project's untrained head. Read like every other weights file (weights_only, the same
    refusals and messages); weights of another architecture are refused.
    """
    path = Path(path)
    obj = _read(path)
    if arch == "resnet50" and _is_torchvision_imagenet(obj):
        sd = _state_dict_in(obj, path)
        model = models.build_model("resnet50", pretrained=False)
        missing, unexpected = model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")},
                                                    strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise CheckpointError(f"{path}: not a ResNet50 backbone")
        return model, f"ImageNet backbone from {path.name}"
    sd, card = _interpret(obj, path)
    if card.arch != arch:
        raise CheckpointError(f"{path}: holds {card.arch} weights; expected {arch} weights to start a {arch} from")
    model = _build(sd, card, path)
    if card.source == "original-reality-check":
        return model, f"original Reality Check weights {path.name}"
    return model, f"RealityCheck checkpoint {path.name}"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard, *, half: bool = False,
                    extras: dict | None = None) -> Path:
    """Write weights + card (+ extra tensors, e.g. "ood") atomically, and the Markdown card beside them."""
    import datetime

    from realitycheck import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    card.created = card.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    card.realitycheck_version = __version__
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    extras = _one_ood_threshold(card, extras or {})  # before the card is written: it may fill card.ood
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "card": card.to_json(), "state_dict": sd}
    for key, tensors in extras.items():
        obj[key] = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    torch.save(obj, tmp)
    tmp.replace(path)
    path.with_suffix(".md").write_text(card_markdown(card, path.name))
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.4f}, {v[1]:.4f}]"
    return str(v)


def card_markdown(card: ModelCard, filename: str = "") -> str:
    """The human-readable model card written beside each checkpoint."""
    p = card.preprocessing
    lines = [
        f"# Model card: {card.name}",
        "",
        f"- File: `{filename}`" if filename else "",
        f"- Architecture: `{card.arch}`; classes (index order): {card.classes}",
        f"- Initial weights: {card.init}",
        (f"- Preprocessing: each face found by YuNet aligned from its landmarks to a {p.crop} px FFHQ-like "
         f"framing (zoom {p.zoom}); the whole image (resize {p.resize or 'none'}, centre-crop {p.crop}) when no face "
         "is found; " if p.align == "face" else
         f"- Preprocessing: no resizing, centre-crop {p.crop} px at native scale, " if not p.resize else
         f"- Preprocessing: resize shorter side to {p.resize} px ({p.interpolation}), centre-crop {p.crop} px, ")
        + f"normalise mean={list(p.mean)} std={list(p.std)}"
        + ("; prediction = average over the image and its mirror image" if p.mirror_average else ""),
        f"- Decision threshold: fake when p_fake >= {card.threshold:g}",
        f"- Created: {card.created} by RealityCheck {card.realitycheck_version}",
        "",
    ]
    if card.ood:
        lines += ["## Unfamiliar images", ""] + [f"- {k}: {_fmt(v)}" for k, v in card.ood.items()] + [""]
    if card.views:
        lines += ["## Views (which mirror images are scored)", ""] + [f"- {k}: {_fmt(v)}" for k, v in card.views.items()] + [""]
    if card.attribution:
        lines += ["## Generator attribution (a second head; never part of p_fake)", ""] + \
                 [f"- {k}: {_fmt(v)}" for k, v in card.attribution.items()] + [""]
    if card.training:
        lines += ["## Training", ""]
        for k, v in card.training.items():
            if k == "test_files":
                lines.append(f"- {k}: {len(v)} files (listed in the checkpoint's card JSON)")
            else:
                lines.append(f"- {k}: {_fmt(v) if not isinstance(v, dict) else json.dumps(v)}")
        lines.append("")
    for split, m in (card.metrics or {}).items():
        lines += [f"## Metrics: {split}", "", "| metric | value |", "|---|---|"]
        for k, v in m.items():
            if k == "per_source":
                continue
            if isinstance(v, dict):
                v = json.dumps(v)
            lines.append(f"| {k} | {_fmt(v)} |")
        lines.append("")
        if m.get("per_source"):
            lines += [f"### {split}: per source", "", "| source | class | images | rate | 95% CI | unfamiliar |",
                      "|---|---|---|---|---|---|"]
            for r in m["per_source"]:
                unf = f"{r['unfamiliar_rate']:.1%}" if r.get("unfamiliar_rate") is not None else "n/a"
                lines.append(f"| {r['source']} | {r['label']} | {r['n']} | {r['rate_name']} {r['rate']:.1%} | "
                             f"{r['ci95_low']:.1%}-{r['ci95_high']:.1%} | {unf} |")
            lines.append("")
    if card.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in card.notes] + [""]
    return "\n".join(l for l in lines if l is not None) + "\n"
