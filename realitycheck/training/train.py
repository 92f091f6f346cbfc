"""Training: feature extraction (frozen backbone) and fine-tuning, reproducible and resumable.

`fit` reads top to bottom like torchvision's references/classification/train.py:
build data (named sources, a leak-free recorded split, class-balanced sampling) -> build model ->
build optimiser and schedule -> per epoch: train one epoch, score validation through the same
`Classifier` path the product uses, save state -> keep the best epoch by validation AUC, stop
early -> score the test split ONCE with the best weights -> write checkpoint + card.

`train_config.TrainConfig` is the one table of training options (the CLI and the command stored
in a card are both derived from it).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from realitycheck.intake.data import (
    DataError,
    Item,
    collate_skip_errors,
    collect_sources,
    parse_data_arg,
    sample_weights,
    split_items,
    split_of,
)
from realitycheck.intake.images import ImageError, load_image
from realitycheck.model import checkpoints, models
from realitycheck.model.checkpoints import ModelCard, Preprocessing
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import resolve_precision
from realitycheck.training import ddp
from realitycheck.training.train_config import (  # noqa: F401
    RESCALE_P,
    TrainConfig,
    add_train_arguments,
    command_args,
    command_line,
    config_from_args,
)

# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

class JpegRecompress:
    """Re-encode as JPEG at a random quality: the model must not key on compression."""

    def __init__(self, quality=(60, 95), p=0.5):
        self.quality, self.p = quality, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=random.randint(*self.quality))
        buf.seek(0)
        return Image.open(buf).convert("RGB")


class RandomBlur:
    def __init__(self, sigma=(0.1, 1.0), p=0.15):
        self.sigma, self.p = sigma, p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(random.uniform(*self.sigma)))


class RandomRescale:
    """Down- or up-scale the whole photo by a random factor with a random filter, for both classes.

    Sources differ in resolution (200 px UTKFace, 768 px diffusion portraits): after this, "how
    many pixels the face had" and "how it was resampled" no longer tell the class.
    """

    FILTERS = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX)

    def __init__(self, scale=(0.35, 2.0), p=RESCALE_P, min_side=64, max_side=1600):
        self.scale, self.p, self.min_side, self.max_side = scale, p, min_side, max_side

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        s = math.exp(random.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        w, h = img.size
        s = min(max(s, self.min_side / min(w, h)), self.max_side / max(w, h))
        return img.resize((max(1, round(w * s)), max(1, round(h * s))), random.choice(self.FILTERS))


def photo_augmentation(rescale_p: float = RESCALE_P) -> list:
    """The photo-level steps of --augment robust, applied to the whole photo before any crop or face
    alignment, for both classes alike: random rescaling, then JPEG re-compression."""
    return [RandomRescale(p=rescale_p), JpegRecompress(quality=(50, 95), p=0.7)]


def train_transform(pre: Preprocessing, augment: str, rescale_p: float = RESCALE_P) -> Callable:
    """Whole-image training transform (align == "none")."""
    from torchvision import transforms as T

    steps: list = []
    if augment == "robust":
        steps += photo_augmentation(rescale_p)
    steps += pre.resize_steps()
    # Random crops move the image by whole pixels and never resample it, so the high-frequency traces
    # a generator leaves survive; with crop == resize the crop pads by reflection to still shift.
    # resize == 0 (native scale): no resampling at all; an image smaller than the crop is zero-padded
    # as the test-time centre crop pads it.
    if pre.resize == 0:
        crop = T.RandomCrop(pre.crop, pad_if_needed=True)
    else:
        crop = T.RandomCrop(pre.crop, padding=pre.crop // 16 if pre.crop >= pre.resize else None, padding_mode="reflect")
    if augment == "full":
        steps += [JpegRecompress(), RandomBlur(), crop, T.RandomHorizontalFlip(), T.ColorJitter(0.1, 0.1, 0.05, 0.0)]
    elif augment in ("crop", "robust"):
        steps += [crop, T.RandomHorizontalFlip()]
    elif augment == "flip":
        steps += [T.CenterCrop(pre.crop), T.RandomHorizontalFlip()]
    else:
        steps += [T.CenterCrop(pre.crop)]
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class AlignedTrainTransform:
    """Face-aligned training view: photo-level augmentation, then the test-time detector and alignment.

    The largest face is found on the augmented photo itself (as at test time), aligned with a
    little jitter of scale and position, and mirrored half the time. No face: the whole image.
    """

    def __init__(self, pre: Preprocessing, augment: str, rescale_p: float = RESCALE_P):
        from torchvision import transforms as T

        self.pre = pre
        self.photo = photo_augmentation(rescale_p) if augment in ("robust", "full") else []
        self.flip = augment != "none"
        self.whole = T.Compose([*pre.resize_steps(), T.CenterCrop(pre.crop)])
        self.tensor = pre.tensor_transform()

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from realitycheck.intake.faces import find_faces
        from realitycheck.model.views import face_view

        for step in self.photo:
            img = step(img)
        report = find_faces(img)
        if report.count:
            lm = report.faces[0].landmarks.copy()
            if self.flip:  # jitter: +-6% scale, +-3% shift of the framing
                centre = lm.mean(0)
                lm = centre + (lm - centre) * random.uniform(0.94, 1.06)
                eye_dist = float(np.hypot(*(lm[1] - lm[0])))
                lm = lm + np.array([random.uniform(-1, 1), random.uniform(-1, 1)]) * 0.03 * 4 * eye_dist * self.pre.zoom
            view = face_view(img, lm, self.pre)  # the framing prediction uses (model.views)
        else:
            view = self.whole(img)
        if self.flip and random.random() < 0.5:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        return self.tensor(view)


class TrainDataset(torch.utils.data.Dataset):
    """(path, label, ...) items decoded and augmented on demand; an unreadable file becomes an error entry."""

    def __init__(self, items: list, transform: Callable, max_side: int | None = None, classes=models.CLASSES):
        self.items, self.transform, self.max_side = list(items), transform, max_side
        self.class_index = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i][0], self.items[i][1]
        try:
            img = load_image(path).image
            if self.max_side and max(img.size) > self.max_side:
                img = shrink_to(img, self.max_side)
            return self.transform(img), self.class_index[label], i
        except ImageError as exc:
            return str(exc), self.class_index[label], i


def shrink_to(img: Image.Image, max_side: int) -> Image.Image:
    s = max_side / max(img.size)
    return img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))), Image.BOX)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


# ---------------------------------------------------------------------------------------------
# Step 1: data
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainData:
    splits: dict  # "train" / "val" / "test" -> list[Item]
    description: str
    n_extra: int
    sources: list  # source names
    weights: list  # per train item sampling weight
    families: dict = None  # source -> generator family, for the fake sources that name one (manifest `family`)


def _subset(items: list[Item], n: int, seed: int) -> list[Item]:
    """A fixed subset of n items chosen by a hash of the file name (the same on every machine)."""
    import hashlib

    key = lambda it: hashlib.sha1(f"subset:{seed}:{it[0].name}".encode()).digest()  # noqa: E731
    return sorted(items, key=key)[:n]


def build_data(cfg: TrainConfig) -> TrainData:
    """Named sources -> items -> a leak-free split (group-aware) -> class-balanced sampling weights."""
    if not cfg.data:
        raise DataError("no training data: give a folder, NAME=FOLDER or a .toml manifest")
    specs = [s for d in cfg.data for s in parse_data_arg(d)]
    items = collect_sources(specs)
    if cfg.max_per_source:
        by_source: dict[str, list] = {}
        for it in items:
            by_source.setdefault(it[2], []).append(it)
        items = [it for src in by_source.values() for it in _subset(src, cfg.max_per_source, cfg.seed)]
    if cfg.limit:
        by = {"real": [], "fake": []}
        for it in items:
            by[it[1]].append(it)
        items = by["real"][: cfg.limit] + by["fake"][: cfg.limit]
    splits = split_items(items, seed=cfg.seed)
    extra = []
    for folder in cfg.extra_real:
        # Only the train share of an extra folder (same hash split): its val/test share stays unseen,
        # so false alarms on that kind of photo can be measured honestly afterwards.
        for spec in parse_data_arg(folder):
            extra += [it for it in spec.items() if it[1] == "real" and split_of(it[0], seed=cfg.seed) == "train"]
    if cfg.limit:
        extra = extra[: cfg.limit]
    splits["train"] = splits["train"] + extra
    weights = {}
    for sw in cfg.source_weight:
        name, sep, w = sw.partition("=")
        try:
            weights[name] = float(w)
        except ValueError:
            raise DataError(f"--source-weight {sw!r}: expected NAME=NUMBER") from None
    sources = sorted({it[2] for it in items + extra})
    unknown = set(weights) - set(sources)
    if unknown:
        raise DataError(f"--source-weight names unknown source(s) {sorted(unknown)}; sources: {sources}")
    desc = "; ".join(f"{s.name}: {s.path}" for s in specs)
    families = {s.name: s.family for s in specs if s.family and s.label != "real"}
    return TrainData(splits, desc, len(extra), sources, sample_weights(splits["train"], weights), families)


def _loader(ds, batch_size, workers, seed, weights=None, sampler=None):
    g = torch.Generator()
    g.manual_seed(seed)
    if sampler is None and weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=g)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=workers,
        collate_fn=collate_skip_errors, generator=g, persistent_workers=workers > 0, drop_last=False,
        worker_init_fn=_worker_init)


# ---------------------------------------------------------------------------------------------
# Step 2: model
# ---------------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig) -> tuple[nn.Module, str]:
    """Build the model and say where its weights came from (recorded in the card).

    A start-from file goes through the checkpoint reader (its safety checks and messages).
    """
    if cfg.init_weights:
        return checkpoints.load_initial_weights(cfg.init_weights, cfg.arch)
    if models.get_arch(cfg.arch).from_scratch:
        return models.build_model(cfg.arch, pretrained=False), f"random (from scratch): {cfg.arch} has no pretrained weights"
    if cfg.arch in models.LITE_STAGES:
        return models.build_model(cfg.arch, pretrained=True), f"ImageNet ({models.lite_weights_package(cfg.arch)} package)"
    try:
        return models.build_model("resnet50", pretrained=True), "torchvision ResNet50 IMAGENET1K_V2"
    except models.WeightsUnavailable as exc:
        print(f"note: {exc}; training ResNet50 from scratch", file=sys.stderr)
        return models.build_model("resnet50", pretrained=False), "random (from scratch): ImageNet weights unavailable offline"


def preprocessing_of(cfg: TrainConfig) -> Preprocessing:
    """The architecture's normalisation (its spec) with this run's sizes and framing."""
    return checkpoints.default_preprocessing(cfg.arch, resize=cfg.resize, crop=cfg.crop, align=cfg.align,
                                             zoom=cfg.zoom if cfg.align == "face" else 1.0)


# ---------------------------------------------------------------------------------------------
# Step 3: optimiser and schedule
# ---------------------------------------------------------------------------------------------

def param_groups(model: nn.Module, cfg: TrainConfig, init: str) -> list[dict]:
    """Head at cfg.lr; a pretrained backbone slower (it should move little), a random one at full rate."""
    head_prefixes = models.get_arch(cfg.arch).head_prefixes
    head = [p for n, p in model.named_parameters() if n.startswith(head_prefixes) and p.requires_grad]
    body = [p for n, p in model.named_parameters() if not n.startswith(head_prefixes) and p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr}]
    if body:
        scale = 1.0 if init.startswith("random") else cfg.backbone_lr_scale
        groups.append({"params": body, "lr": cfg.lr * scale})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, init: str, steps_per_epoch: int):
    """AdamW + linear warm-up + cosine decay over the whole run."""
    groups = param_groups(model, cfg, init)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, max(1, total_steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))))
    return opt, sched, groups


class Distiller:
    """Soft labels from a teacher checkpoint, renormalised to the teacher's preprocessing."""

    def __init__(self, cfg: TrainConfig, pre: Preprocessing, device: torch.device):
        teacher, card = checkpoints.load_checkpoint(cfg.teacher)
        self.model = teacher.to(device).to(memory_format=torch.channels_last).eval()
        tp = card.preprocessing
        self.scale = self.shift = None
        if (tp.mean, tp.std) != (pre.mean, pre.std):
            # same crop, the teacher's normalisation: x_teacher = (x * std + mean - mean_t) / std_t
            s_std, s_mean = torch.tensor(pre.std).view(1, 3, 1, 1), torch.tensor(pre.mean).view(1, 3, 1, 1)
            t_std, t_mean = torch.tensor(tp.std).view(1, 3, 1, 1), torch.tensor(tp.mean).view(1, 3, 1, 1)
            self.scale, self.shift = (s_std / t_std).to(device), ((s_mean - t_mean) / t_std).to(device)
        self.weight, self.T = cfg.distill_weight, cfg.distill_temperature

    def loss(self, x, logits, hard_loss, autocast):
        with torch.inference_mode(), autocast():
            t_logits = self.model(x if self.scale is None else x * self.scale + self.shift).float()
        T = self.T
        soft = nn.functional.kl_div(nn.functional.log_softmax(logits.float() / T, 1),
                                    nn.functional.softmax(t_logits.clone() / T, 1), reduction="batchmean") * T * T
        return (1 - self.weight) * hard_loss + self.weight * soft


# ---------------------------------------------------------------------------------------------
# Step 4: one epoch, and scoring a split
# ---------------------------------------------------------------------------------------------

def train_one_epoch(model, loader, opt, sched, loss_fn, ema, cfg, steps, autocast, device, distiller=None,
                    desc="") -> dict:
    model.train()
    if cfg.mode == "feature-extract":  # frozen backbone: keep its batch-norm statistics frozen too
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.eval()
    losses, correct, seen = [], 0, 0
    for step, (x, y, _, bad) in enumerate(_progress(loader, steps, desc)):
        if step >= steps:
            break
        if x is None:
            continue
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if distiller is not None:
            loss = distiller.loss(x, logits, loss, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.item())
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"),
            "train_accuracy": correct / max(1, seen), "seen": seen}


def score_items(model: nn.Module, card: ModelCard, items: list, precision: str = "fp32", workers: int = 0,
                keep: list | None = None, extras: dict | None = None,
                flags: list | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """(p_fake, y_is_fake, errors) through the product's own `Classifier` path (faces, alignment, views).

    A CPU copy of the weights is scored, so validation sees exactly what `predict` would say.
    """
    from realitycheck.model.inference import Classifier
    from realitycheck.model.ood import OODStats

    ood = OODStats.from_tensors(extras["ood"]) if extras and "ood" in extras else None
    clf = Classifier(copy.deepcopy(model).float().cpu(), card, precision=precision, face_check=True, batch_size=32,
                     ood=ood)
    preds = list(clf.iter_predict([str(it[0]) for it in items], workers=workers))
    ps, ys, errors = [], [], []
    for it, pr in zip(items, preds):
        if pr.error:
            errors.append((str(it[0]), pr.error))
            continue
        ps.append(pr.p_fake)
        ys.append(it[1] == "fake")
        if keep is not None:
            keep.append(it)
        if flags is not None:
            flags.append(bool(pr.unfamiliar))
    return np.asarray(ps, dtype=float), np.asarray(ys, dtype=bool), errors


# Per-epoch validation accuracy is read at the neutral cut (the likelier class): the release threshold is
# chosen on validation only after training (`realitycheck threshold`), so no card threshold exists yet.
# The epoch is chosen by validation AUC, which needs no threshold.
VAL_THRESHOLD = 0.5


def _val_stats(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    if len(p) == 0:
        return {"val_loss": float("nan"), "val_accuracy": float("nan"), "val_auc": float("nan")}
    acc = float((is_fake(p, VAL_THRESHOLD) == y).mean())
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    loss = float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[False, True]))
    return {"val_loss": loss, "val_accuracy": acc, "val_auc": auc}


# ---------------------------------------------------------------------------------------------
# Step 5: state (resume) and the card
# ---------------------------------------------------------------------------------------------

def save_state(path: Path, model, opt, sched, ema, epoch, best_auc, best_epoch, train_seconds, log_rows) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.state_dict() if ema is not None else {},
                "epoch": epoch, "best_auc": best_auc, "best_epoch": best_epoch, "train_seconds": train_seconds,
                "torch_rng": torch.get_rng_state(), "log_rows": json.dumps(log_rows)}, tmp)
    tmp.replace(path)  # a kill mid-write never leaves a torn state file


def restore_state(path: Path, model, opt, sched, ema, device) -> dict:
    st = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(st["model"]); opt.load_state_dict(st["optimizer"]); sched.load_state_dict(st["scheduler"])
    if ema is not None and st.get("ema"):
        ema.load_state_dict(st["ema"])
    torch.set_rng_state(st["torch_rng"].cpu())
    return {"start_epoch": st["epoch"] + 1, "best_auc": st["best_auc"], "best_epoch": st["best_epoch"],
            "train_seconds": st.get("train_seconds", 0.0), "log_rows": json.loads(st["log_rows"]), "epoch": st["epoch"]}


def write_log(log_rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(log_rows[0]))
        w.writeheader(); w.writerows(log_rows)


def _plot_curves(log_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in log_rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(ep, [r["train_loss"] for r in log_rows], label="train loss")
    axes[0].plot(ep, [r["val_loss"] for r in log_rows], label="validation loss")
    axes[0].set_xlabel("epoch"); axes[0].set_ylabel("cross-entropy"); axes[0].legend()
    axes[1].plot(ep, [r["train_accuracy"] for r in log_rows], label="train accuracy")
    axes[1].plot(ep, [r["val_accuracy"] for r in log_rows], label="validation accuracy")
    axes[1].plot(ep, [r["val_auc"] for r in log_rows], label="validation ROC-AUC")
    axes[1].set_xlabel("epoch"); axes[1].set_ylim(0.4, 1.0); axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress(it, total, desc, enabled: bool | None = None):
    try:
        from tqdm import tqdm

        return tqdm(it, total=total, desc=desc, leave=False, file=sys.stderr, mininterval=2.0,
                    disable=not sys.stderr.isatty() if enabled is None else not enabled)
    except ImportError:  # pragma: no cover
        return it


def write_card(card: ModelCard, cfg: TrainConfig, data: TrainData, log_rows, best_epoch, precision, train_seconds,
               test_metrics, errors, device) -> None:
    val_row = next(r for r in log_rows if r["epoch"] == best_epoch)
    card.training = {
        "data": list(cfg.data),
        "sources": data.sources,
        "extra_real": [str(x) for x in cfg.extra_real],
        "split": "hash of file name, or of the source's group where it names one (sha1 of 'seed:key'), "
                 "70/15/15, seed %d" % cfg.seed,
        "n_train": len(data.splits["train"]), "n_val": len(data.splits["val"]), "n_test": len(data.splits["test"]),
        "n_per_source": {s: {k: sum(1 for it in v if it[2] == s) for k, v in data.splits.items()} for s in data.sources},
        "sampling": "classes balanced (each half of the draws); sources within a class by size x weight",
        "mode": cfg.mode, "epochs_run": len(log_rows), "best_epoch": best_epoch,
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "resume", "extra_real")},
        "precision": precision, "train_seconds": round(train_seconds),
        "teacher": str(cfg.teacher) if cfg.teacher else None,
        "machine": f"{os.cpu_count()} CPU cores, {device}, torch {torch.__version__}",
        "command": command_line(cfg),
        "test_files": sorted(Path(it[0]).name for it in data.splits["test"]),
    }
    card.metrics = {"val": {k.replace("val_", ""): v for k, v in val_row.items() if k.startswith("val_")},
                    "test": test_metrics}
    card.notes.append("Test metrics are computed once on the held-out test split with the epoch chosen by validation AUC.")
    if any("faces-140k" in d for d in cfg.data):
        card.notes.append("Training data: FFHQ (real) and StyleGAN (fake) faces, CC BY-NC-SA 4.0: research, evaluation and demos only.")
    if errors:
        card.notes.append(f"{len(errors)} unreadable test files were skipped")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def score_test(model: nn.Module, card: ModelCard, data: TrainData, workers: int, log,
               extras: dict | None = None) -> tuple[dict, list]:
    """Test metrics overall and per source (rates with 95% CIs). Test files absent here: empty, and said."""
    from realitycheck.analysis.metrics import compute_metrics, per_source

    items = [it for it in data.splits["test"] if Path(it[0]).exists()]
    if not items:
        log("note: the test split's files are not on this machine; score them later with --test-only")
        card.notes.append("Test split not scored where it was trained: run the card's command with --test-only.")
        return {}, []
    kept: list = []
    flags: list = []
    p, y, errors = score_items(model, card, items, workers=workers, keep=kept, extras=extras, flags=flags)
    metrics = compute_metrics(np.where(y, "fake", "real"), p, threshold=card.threshold)
    table = per_source([it[2] for it in kept], [it[1] for it in kept], p, threshold=card.threshold,
                       unfamiliar=flags if extras and "ood" in extras else None)
    metrics["per_source"] = table.to_dict(orient="records")
    if extras and "ood" in extras:
        card.ood["test_flag_rate"] = float(np.mean(flags)) if flags else None
    card.notes = [n for n in card.notes if "Test split not scored" not in n]
    return metrics, errors


def fit_unfamiliarity(model: nn.Module, card: ModelCard, data: TrainData, workers: int, log,
                      n_fit: int = 1000, target_flag_rate: float = 0.05, seed: int = 0):
    """Fit the "unfamiliar image" statistics on training-split features; threshold on validation.

    The threshold flags at most `target_flag_rate` of the validation images of every source (the rule
    `realitycheck threshold` applies too); it goes in the card (`card.ood["threshold"]`, the one in force)
    with both counts.
    Returns the OODStats (stored in the checkpoint under "ood").
    """
    from realitycheck.model.inference import Classifier
    from realitycheck.model.ood import OODStats

    clf = Classifier(copy.deepcopy(model).float().cpu(), card, precision="fp32", batch_size=32)
    train = _subset([it for it in data.splits["train"] if Path(it[0]).exists()], n_fit, seed)
    val = [it for it in data.splits["val"] if Path(it[0]).exists()]
    feats = [f for _, f in clf.iter_features([str(it[0]) for it in train], workers=workers) if f is not None]
    scored = [(it, f) for it, (_, f) in zip(val, clf.iter_features([str(it[0]) for it in val], workers=workers))
              if f is not None]
    vfeats = [f for _, f in scored]
    stats = OODStats.fit(np.stack(feats))
    stats.choose_threshold(np.stack(vfeats), target_flag_rate, sources=[it[2] for it, _ in scored])
    card.ood = {"method": "Mahalanobis distance of the penultimate features to a Gaussian fitted on training images "
                          f"({stats.components.shape[0]} principal components + residual)",
                "threshold": stats.threshold, "fitted_on": f"{len(feats)} training-split images (hash subset)",
                "threshold_chosen_on": f"{len(vfeats)} validation images, so that at most {target_flag_rate:.0%} of "
                                       "each source are flagged",
                "target_flag_rate": target_flag_rate}
    log(f"unfamiliarity check: fitted on {len(feats)} training images, threshold {stats.threshold:.3f} "
        f"(flags at most {target_flag_rate:.0%} of each source's validation images, {len(vfeats)} in all)")
    return stats


def fit_attribution(model: nn.Module, card: ModelCard, data: TrainData, workers: int, log,
                    n_per_source: int = 800, seed: int = 0):
    """Fit the generator-attribution head on training-split fakes; its "unknown" cut on validation.

    The head reads the detector's penultimate features (as the unfamiliar check does) and never
    changes p_fake. Needs fakes of at least two families (manifest `family`); else None.
    Returns the AttributionHead (its tensors go in the checkpoint under "attribution").
    """
    from realitycheck.model.attribution import TARGET_NAMED_ACCURACY, AttributionHead
    from realitycheck.model.inference import Classifier

    families = data.families or {}
    if len(set(families.values())) < 2:
        log("attribution: skipped (the data names fewer than two generator families; manifest field `family`)")
        return None
    clf = Classifier(copy.deepcopy(model).float().cpu(), card, precision="fp32", batch_size=32)

    def features(split: str, limit: int | None):
        by_source: dict[str, list] = {}
        for it in data.splits[split]:
            if it[2] in families and Path(it[0]).exists():
                by_source.setdefault(it[2], []).append(it)
        items = [it for src in by_source.values() for it in (_subset(src, limit, seed) if limit else src)]
        got = [(it, f) for it, (_, f) in zip(items, clf.iter_features([str(it[0]) for it in items], workers=workers))
               if f is not None]
        return np.stack([f for _, f in got]), [families[it[2]] for it, _ in got]

    x_train, y_train = features("train", n_per_source)
    head = AttributionHead.fit(x_train, y_train, seed=seed)
    x_val, y_val = features("val", None)
    head.choose_min_confidence(x_val, y_val)
    named = head.name(head.probabilities(x_val))
    card.attribution = {
        **head.card_entry(),
        "source_families": dict(sorted(families.items())),
        "method": "multinomial logistic regression (classes balanced) on the detector's penultimate features",
        "fitted_on": f"{len(y_train)} training-split fakes (at most {n_per_source} per source, hash subset)",
        "min_confidence_rule": f"lowest top probability (>= 0.5) at which named validation guesses are "
                               f">= {TARGET_NAMED_ACCURACY:.0%} right; below it: other/unknown",
        "val_top1_accuracy": round(float(np.mean([a == b for a, b in zip(named, y_val)])), 4),
        "val_images": len(y_val),
    }
    log(f"attribution: {len(head.families)} families ({', '.join(map(str, head.families))}), fitted on {len(y_train)} fakes; "
        f"validation top-1 {card.attribution['val_top1_accuracy']:.1%} of {len(y_val)} "
        f"(min confidence {head.min_confidence:.3f})")
    return head


def attach_attribution(weights: str | os.PathLike, data: list[str], out: str | os.PathLike | None = None,
                       workers: int = 1, log: Callable[[str], None] = print) -> Path:
    """Fit the attribution head for an existing checkpoint on its training sources and write it in.

    The split and per-source subset are the checkpoint's own (its card's seed and --max-per-source),
    so the head trains on what the detector trained on and is cut on its validation share.
    The weights, p_fake and every threshold stay as they were.
    """
    model, card, extras = checkpoints.load_checkpoint_extras(weights)
    settings = card.training.get("settings", {})
    cfg = TrainConfig(data=list(data), max_per_source=settings.get("max_per_source"), seed=settings.get("seed", 0))
    head = fit_attribution(model, card, build_data(cfg), workers, log)
    if head is None:
        raise DataError("no attribution head fitted: the data must name at least two generator families "
                        "(manifest field `family` on its fake sources)")
    extras["attribution"] = head.to_tensors()
    return checkpoints.save_checkpoint(out or weights, model, card, half=checkpoints.stored_half(weights), extras=extras)


def test_only(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Score the test split of a finished run (trained elsewhere, e.g. on a GPU machine without the test files)."""
    out = Path(cfg.out).with_suffix(".pt") if Path(cfg.out).suffix not in (".pt", ".pth") else Path(cfg.out)
    model, card, extras = checkpoints.load_checkpoint_extras(out)
    data = build_data(cfg)
    if "ood" not in extras:  # fitted on the training split of the run itself (same --max-per-source)
        run_data = build_data(replace(cfg, max_per_source=card.training.get("settings", {}).get("max_per_source")))
        extras["ood"] = fit_unfamiliarity(model, card, run_data, cfg.workers, log).to_tensors()
    metrics, errors = score_test(model, card, data, cfg.workers, log, extras)
    card.metrics["test"] = metrics
    card.training["n_test"] = len(data.splits["test"])
    card.training["test_files"] = sorted(Path(it[0]).name for it in data.splits["test"])
    card.training["test_scored"] = (f"separately (--test-only) on {cfg.data} without --max-per-source (the held-out share "
                                    f"of every file), {os.cpu_count()} CPU cores, torch {torch.__version__}")
    if errors:
        card.notes.append(f"{len(errors)} unreadable test files were skipped")
    checkpoints.save_checkpoint(out, model, card, half=cfg.half, extras=extras)
    log(f"test: {card.test_summary()}; updated {out}")
    return out


def gather_train_stats(d: ddp.Dist, stats: dict) -> dict:
    """One epoch's training loss and accuracy over all ranks (each weighted by the images it saw)."""
    loss_x_seen, correct, seen = ddp.sum_across(d, stats["train_loss"] * stats["seen"],
                                                stats["train_accuracy"] * stats["seen"], stats["seen"])
    return {"train_loss": loss_x_seen / max(seen, 1), "train_accuracy": correct / max(seen, 1), "seen": int(seen)}


def weights_digest(model: nn.Module) -> str:
    """sha1 of every parameter and buffer in order: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(cfg: TrainConfig, log: Callable[[str], None] = print, progress: bool | None = None) -> Path:
    """Train per `cfg`; returns the path of the best checkpoint (with test metrics in its card).

    Started by torchrun, each process trains on its shard of every epoch (DDP averages the
    gradients, `ddp` holds the plumbing); all ranks take the same decisions from gathered
    validation scores, and only rank 0 writes files.
    """
    if cfg.test_only:
        return test_only(cfg, log)
    d = ddp.setup(resolve_device(cfg.device))
    try:
        return _fit(cfg, log, progress, d)
    finally:
        ddp.cleanup(d)


@dataclass
class _Files:
    """Where a run writes: the checkpoint, its resumable state, its per-epoch log, the best epoch's weights."""

    out: Path
    state: Path
    log: Path
    best: Path

    @classmethod
    def of(cls, out: str) -> "_Files":
        path = Path(out)
        if path.suffix not in (".pt", ".pth"):
            path = path.with_suffix(".pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, path.with_suffix(".train-state.pt"), path.with_suffix(".log.csv"),
                   path.with_suffix(".best-tmp.pt"))


@dataclass
class _Progress:
    """What the epochs carry forward (and a resumed run restores)."""

    start_epoch: int = 1
    best_auc: float = -1.0
    best_epoch: int = 0
    log_rows: list = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass
class _Training:
    """The objects one run trains with (step 3)."""

    opt: object
    sched: object
    groups: list
    loss_fn: nn.Module
    distiller: object
    ema: object


@dataclass
class _Run:
    """Everything the epochs and the finish share (steps 1-4's results)."""

    cfg: TrainConfig
    d: ddp.Dist
    model: nn.Module
    trained: nn.Module  # `model`, or DDP around it under torchrun
    tr: _Training
    files: _Files
    card: ModelCard
    data: object
    train_dl: object
    shards: object
    steps: int
    log: Callable[[str], None]
    log_all: Callable[[str], None]
    autocast: Callable


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    if device.type == "cpu":
        return resolve_precision(cfg.precision)
    return "fp32" if cfg.precision == "fp32" else "bf16"


def _data_step(cfg: TrainConfig, pre: Preprocessing, d: ddp.Dist, log) -> tuple:
    """1. data: the split, the class-balanced loader (each torchrun rank takes its share of the same epoch)."""
    data = build_data(cfg)
    log(f"data: {data.description}; split train/val/test = {len(data.splits['train'])}/{len(data.splits['val'])}/"
        f"{len(data.splits['test'])} (+{data.n_extra} extra real in train); sources: {', '.join(data.sources)}")
    if not data.splits["train"] or not data.splits["val"]:
        raise ValueError("not enough images to make train and validation splits")
    transform = (AlignedTrainTransform(pre, cfg.augment, cfg.rescale_p) if cfg.align == "face"
                 else train_transform(pre, cfg.augment, cfg.rescale_p))
    shards = ddp.ShardSampler(len(data.weights), d, seed=cfg.seed, weights=data.weights) if d.enabled else None
    train_dl = _loader(TrainDataset(data.splits["train"], transform, cfg.max_side), cfg.batch_size, cfg.workers,
                       cfg.seed + 1000 * d.rank, data.weights, sampler=shards)
    steps = math.ceil(len(shards or data.splits["train"]) / cfg.batch_size)
    return data, train_dl, shards, min(steps, cfg.max_steps) if cfg.max_steps else steps


def _model_step(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, str]:
    """2. model: built (or loaded from --init-weights), the backbone frozen in feature-extract mode."""
    model, init = build_model(cfg)
    if cfg.mode == "feature-extract":
        models.freeze_backbone(model, cfg.arch)
    return model.to(device).to(memory_format=torch.channels_last), init


def _training_step(model, cfg: TrainConfig, init: str, steps: int, pre, device, log) -> _Training:
    """3. optimiser, schedule, loss, EMA of the weights, teacher."""
    opt, sched, groups = build_optimizer(model, cfg, init, steps)
    distiller = Distiller(cfg, pre, device) if cfg.teacher else None
    if distiller:
        log(f"distilling from {cfg.teacher} (weight {cfg.distill_weight}, T={cfg.distill_temperature})")
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    return _Training(opt, sched, groups, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), distiller, ema)


def _resume_step(cfg: TrainConfig, files: _Files, model, tr: _Training, device, log) -> _Progress:
    """4. resume: the state of the last finished epoch, if asked and there is one."""
    prog = _Progress()
    if cfg.resume and files.state.exists():
        st = restore_state(files.state, model, tr.opt, tr.sched, tr.ema, device)
        prog = _Progress(st["start_epoch"], st["best_auc"], st["best_epoch"], st["log_rows"], st["train_seconds"])
        log(f"resumed from {files.state} after epoch {st['epoch']} (best val AUC {prog.best_auc:.4f} at epoch "
            f"{prog.best_epoch})")
    if cfg.resume and prog.start_epoch > 1 and not files.best.exists():
        log("warning: best-epoch weights missing; the best will be re-chosen from here on")
        prog.best_auc = -1.0
    return prog


def _epoch_step(epoch: int, run: "_Run", prog: _Progress) -> bool:
    """5. one epoch: train, validate through the product's path, keep the best, save state. True: stop early."""
    cfg, d, model, tr, files, log = run.cfg, run.d, run.model, run.tr, run.files, run.log
    t0 = time.time()
    if run.shards is not None:
        run.shards.set_epoch(epoch)
    stats = train_one_epoch(run.trained, run.train_dl, tr.opt, tr.sched, tr.loss_fn, tr.ema, cfg, run.steps,
                            run.autocast, d.device, tr.distiller, desc=f"epoch {epoch}/{cfg.epochs}")
    if d.enabled:
        ddp.average_buffers(model, d)
        stats = gather_train_stats(d, stats)
        run.log_all(f"rank {d.rank}: weights sha1 {weights_digest(model)} after epoch {epoch}")  # equal on all ranks
    scored = tr.ema.module if tr.ema is not None else model  # the weights that would be shipped
    p, yv, _ = ddp.gather_scores(d, *score_items(scored, run.card, ddp.shard(run.data.splits["val"], d),
                                                  workers=cfg.workers))
    val = _val_stats(p, yv)
    epoch_s = time.time() - t0
    prog.train_seconds += epoch_s
    row = {"epoch": epoch, "train_loss": stats["train_loss"], "train_accuracy": stats["train_accuracy"], **val,
           "lr": tr.opt.param_groups[0]["lr"], "seconds": round(epoch_s, 1),
           "images_per_second": round(stats["seen"] / max(epoch_s, 1e-9), 1)}
    prog.log_rows.append(row)
    improved = val["val_auc"] > prog.best_auc or prog.best_epoch == 0  # (a NaN AUC still keeps the first epoch)
    if improved:
        prog.best_auc, prog.best_epoch = val["val_auc"], epoch
        if d.is_main:
            torch.save({k: v.cpu() for k, v in scored.state_dict().items()}, files.best)
    log(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
        f"val loss {val['val_loss']:.4f} acc {val['val_accuracy']:.3f} AUC {val['val_auc']:.4f}"
        f"{' *' if improved else ''} | {epoch_s:.0f}s ({row['images_per_second']} img/s)")
    if d.is_main:
        write_log(prog.log_rows, files.log)
        save_state(files.state, model, tr.opt, tr.sched, tr.ema, epoch, prog.best_auc, prog.best_epoch,
                   prog.train_seconds, prog.log_rows)
    ddp.barrier(d)  # the epoch's files are written before any rank reads them or goes on
    if epoch - prog.best_epoch >= cfg.patience:
        log(f"early stop: no validation-AUC improvement for {cfg.patience} epochs")
        return True
    return False


def _finish_step(run: "_Run", prog: _Progress, precision: str) -> Path:
    """6-8 (rank 0): the best epoch's weights; the unfamiliarity check and generator head; the test split,
    touched once; the card and checkpoint."""
    cfg, d, files, card, data, log = run.cfg, run.d, run.files, run.card, run.data, run.log
    _plot_curves(prog.log_rows, files.out.with_suffix(".curves.png"))
    model = run.model.cpu()
    model.load_state_dict(torch.load(files.best, map_location="cpu", weights_only=True))
    model = model.to(memory_format=torch.contiguous_format).eval()
    # 6. the unfamiliarity check and the generator-attribution head (training features, cut-offs on validation)
    extras = {"ood": fit_unfamiliarity(model, card, data, cfg.workers, log).to_tensors()}
    head = fit_attribution(model, card, data, cfg.workers, log)
    if head is not None:
        extras["attribution"] = head.to_tensors()
    # 7. the test split, touched once, here, with the weights chosen on validation
    test_metrics, errors = score_test(model, card, data, cfg.workers, log, extras)
    # 8. card and checkpoint
    write_card(card, cfg, data, prog.log_rows, prog.best_epoch, precision, prog.train_seconds, test_metrics, errors,
               d.device)
    if d.enabled:
        card.training.update(processes=d.world, command=f"torchrun --nproc_per_node {d.world} -m "
                                                        + card.training["command"])
    path = checkpoints.save_checkpoint(files.out, model, card, half=cfg.half, extras=extras)
    files.best.unlink(missing_ok=True)
    log(f"best epoch {prog.best_epoch} (val AUC {prog.best_auc:.4f}); test: {card.test_summary()}; wrote {path}")
    return path


def _fit(cfg: TrainConfig, log: Callable[[str], None], progress: bool | None, d: ddp.Dist) -> Path:
    """The run, step by step (torchvision's references/classification/train.py order)."""
    log_all, log = log, (log if d.is_main else (lambda m: None))
    seed_everything(cfg.seed)
    precision = _precision(cfg, d.device)
    files = _Files.of(cfg.out)
    pre = preprocessing_of(cfg)
    data, train_dl, shards, steps = _data_step(cfg, pre, d, log)
    model, init = _model_step(cfg, d.device)
    tr = _training_step(model, cfg, init, steps, pre, d.device, log)
    prog = _resume_step(cfg, files, model, tr, d.device, log)
    trained = ddp.wrap(model, d)  # DDP around `model` under torchrun: backward() averages the gradients
    if d.enabled:
        seed_everything(cfg.seed + 1000 * d.rank + prog.start_epoch)  # each rank augments differently
        log(f"distributed: {d.world} processes ({torch.distributed.get_backend()}), "
            f"batch {cfg.batch_size} per process = {cfg.batch_size * d.world} per step")
    card = checkpoints.default_card(files.out.stem, cfg.arch, preprocessing=pre, init=init)
    log(f"model {cfg.arch} ({init}), mode {cfg.mode}, precision {precision}, device {d.device}, "
        f"{sum(p.numel() for g in tr.groups for p in g['params']) / 1e6:.2f}M trainable parameters")
    run = _Run(cfg, d, model, trained, tr, files, card, data, train_dl, shards, steps, log, log_all,
               autocast=lambda: torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"))
    for epoch in range(prog.start_epoch, cfg.epochs + 1):
        if _epoch_step(epoch, run, prog):
            break
    if not d.is_main:  # rank 0 alone scores the test split and writes the checkpoint and card
        return files.out
    return _finish_step(run, prog, precision)
