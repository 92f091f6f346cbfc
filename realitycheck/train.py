"""Training: feature extraction (frozen backbone) and fine-tuning, reproducible and resumable.

The flow mirrors torchvision's references/classification: build model -> data with a fixed,
recorded split -> train with AdamW + cosine schedule -> keep the best epoch by validation AUC
-> stop early -> evaluate the test split ONCE with the best weights -> write checkpoint + card.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from realitycheck import checkpoints, models
from realitycheck.checkpoints import ModelCard, Preprocessing
from realitycheck.data import ImageDataset, collate_skip_errors, discover, split_items, split_of
from realitycheck.inference import resolve_precision

# Normalisation each architecture was pretrained with.
ARCH_NORMALISATION = {
    "resnet50": (checkpoints.IMAGENET_MEAN, checkpoints.IMAGENET_STD),
    **{arch: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) for arch in models.LITE_STAGES},  # TF-Lite's [-1, 1] scaling
}


@dataclass
class TrainConfig:
    data: str
    arch: str = "efficientnet_lite0"
    mode: str = "finetune"  # or "feature-extract"
    out: str = "weights/model"
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3  # head learning rate; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 4  # epochs without validation-AUC improvement before stopping
    seed: int = 0
    resize: int = 256  # shorter side; 256 keeps the 140k images at native resolution
    crop: int = 224  # random crop in training, centre crop at test time
    augment: str = "full"  # "none" | "flip" | "crop" (flip + random crop, no resampling) | "full" (+ JPEG, blur, colour)
    ema: float = 0.0  # exponential moving average of the weights (e.g. 0.998); 0 = off
    extra_real: list[str] = field(default_factory=list)  # real-only folders added to training
    init_weights: str | None = None  # resnet50: a local ImageNet / RealityCheck.pth file
    precision: str = "auto"  # "bf16" autocast where the CPU supports it, else fp32
    limit: int | None = None  # use at most N images per class (smoke tests)
    max_steps: int | None = None  # stop an epoch after N steps (smoke tests)
    resume: bool = False
    workers: int = 1
    half: bool = True  # store the shipped weights in fp16 (half the size, same predictions)
    teacher: str | None = None  # distil from this checkpoint's soft labels (e.g. ResNet50 from the default)
    distill_weight: float = 0.7  # share of the loss from the teacher's soft labels
    distill_temperature: float = 2.0


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


def train_transform(pre: Preprocessing, augment: str) -> Callable:
    from torchvision import transforms as T

    steps: list = [T.Resize(pre.resize, antialias=True)]
    # Random crops move the image by whole pixels and never resample it, so the high-frequency traces
    # a generator leaves survive; with crop == resize the crop pads by reflection to still shift.
    crop = T.RandomCrop(pre.crop, padding=pre.crop // 16 if pre.crop >= pre.resize else None, padding_mode="reflect")
    if augment == "full":
        steps += [JpegRecompress(), RandomBlur(), crop, T.RandomHorizontalFlip(), T.ColorJitter(0.1, 0.1, 0.05, 0.0)]
    elif augment == "crop":
        steps += [crop, T.RandomHorizontalFlip()]
    elif augment == "flip":
        steps += [T.CenterCrop(pre.crop), T.RandomHorizontalFlip()]
    else:
        steps += [T.CenterCrop(pre.crop)]
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _init_model(cfg: TrainConfig) -> tuple[nn.Module, str]:
    """Build the model and say where its weights came from (recorded in the card)."""
    if cfg.arch in models.LITE_STAGES:
        if cfg.init_weights:
            model, _ = checkpoints.load_checkpoint(cfg.init_weights)
            return model, f"RealityCheck checkpoint {Path(cfg.init_weights).name}"
        return models.build_model(cfg.arch, pretrained=True), f"ImageNet ({models.lite_weights_package(cfg.arch)} package)"
    # resnet50
    if cfg.init_weights:
        sd = torch.load(cfg.init_weights, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and sd.get("format") == checkpoints.FORMAT:
            model, _ = checkpoints.load_checkpoint(cfg.init_weights)
            return model, f"RealityCheck checkpoint {Path(cfg.init_weights).name}"
        model = models.build_model("resnet50", pretrained=False)
        if "fc.weight" in sd and "fc.0.weight" not in sd:  # torchvision ImageNet file: keep our head
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            if unexpected or any(not k.startswith("fc.") for k in missing):
                raise checkpoints.CheckpointError(f"{cfg.init_weights}: not a ResNet50 backbone")
            return model, f"ImageNet backbone from {Path(cfg.init_weights).name}"
        model.load_state_dict(sd, strict=True)
        return model, f"original Reality Check weights {Path(cfg.init_weights).name}"
    try:
        return models.build_model("resnet50", pretrained=True), "torchvision ResNet50 IMAGENET1K_V2"
    except models.WeightsUnavailable as exc:
        print(f"note: {exc}; training ResNet50 from scratch", file=sys.stderr)
        return models.build_model("resnet50", pretrained=False), "random (from scratch): ImageNet weights unavailable offline"


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


def _collect_items(cfg: TrainConfig):
    src = discover(cfg.data)
    items = list(src)
    if cfg.limit:
        by = {"real": [], "fake": []}
        for p, lab in items:
            by[lab].append((p, lab))
        items = by["real"][: cfg.limit] + by["fake"][: cfg.limit]
    splits = split_items(items, seed=cfg.seed)
    extra = []
    for folder in cfg.extra_real:
        # Only the train share of an extra folder (same hash split): its val/test share stays unseen,
        # so false alarms on that kind of photo can be measured honestly afterwards.
        extra += [(p, "real") for p, lab in discover(folder) if lab == "real" and split_of(p, seed=cfg.seed) == "train"]
    if cfg.limit:
        extra = extra[: cfg.limit]
    splits["train"] = splits["train"] + extra
    return src, splits, len(extra)


def _loader(ds, batch_size, shuffle, workers, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate_skip_errors,
        generator=g, persistent_workers=workers > 0, drop_last=False,
    )


@torch.inference_mode()
def predict_loader(model: nn.Module, loader, precision: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(p_fake, y_is_fake, item_index, errors) over a loader; class 0 is fake."""
    model.eval()
    ps, ys, idxs, errors = [], [], [], []
    for x, y, idx, bad in loader:
        errors += bad
        if x is None:
            continue
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        ps.append(logits.float().softmax(1)[:, 0].numpy())
        ys.append((y == 0).numpy())
        idxs.append(idx.numpy())
    if not ps:
        return np.zeros(0), np.zeros(0, bool), np.zeros(0, int), errors
    return np.concatenate(ps), np.concatenate(ys), np.concatenate(idxs), errors


def _val_stats(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    if len(p) == 0:
        return {"val_loss": float("nan"), "val_accuracy": float("nan"), "val_auc": float("nan")}
    acc = float(((p >= 0.5) == y).mean())
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    loss = float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[False, True]))
    return {"val_loss": loss, "val_accuracy": acc, "val_auc": auc}


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


def _progress(it, total, desc):
    try:
        from tqdm import tqdm

        return tqdm(it, total=total, desc=desc, leave=False, file=sys.stderr, mininterval=2.0,
                    disable=not sys.stderr.isatty() and os.environ.get("REALITYCHECK_PROGRESS") != "1")
    except ImportError:  # pragma: no cover
        return it


def fit(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train per `cfg`; returns the path of the best checkpoint (with test metrics in its card)."""
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, cfg.batch_size)
    out = Path(cfg.out)
    if out.suffix not in (".pt", ".pth"):
        out = out.with_suffix(".pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".train-state.pt")
    log_path = out.with_suffix(".log.csv")

    mean, std = ARCH_NORMALISATION[cfg.arch]
    pre = Preprocessing(resize=cfg.resize, crop=cfg.crop, mean=mean, std=std)
    src, splits, n_extra = _collect_items(cfg)
    log(f"data: {src.describe()}; split train/val/test = "
        f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} (+{n_extra} extra real in train)")
    if not splits["train"] or not splits["val"]:
        raise ValueError("not enough images to make train and validation splits")

    model, init = _init_model(cfg)
    if cfg.mode == "feature-extract":
        models.freeze_backbone(model, cfg.arch)
    model = model.to(memory_format=torch.channels_last)
    groups = param_groups(model, cfg, init)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    train_ds = ImageDataset(splits["train"], train_transform(pre, cfg.augment))
    val_ds = ImageDataset(splits["val"], pre.transform())
    train_dl = _loader(train_ds, cfg.batch_size, True, cfg.workers, cfg.seed)
    val_dl = _loader(val_ds, 64, False, cfg.workers, cfg.seed)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, max(1, total_steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    teacher = teacher_pre = None
    if cfg.teacher:
        teacher, teacher_card = checkpoints.load_checkpoint(cfg.teacher)
        teacher = teacher.to(memory_format=torch.channels_last).eval()
        teacher_pre = teacher_card.preprocessing
        if (teacher_pre.mean, teacher_pre.std) != (pre.mean, pre.std):
            # same crop, the teacher's normalisation: x_teacher = (x * std + mean - mean_t) / std_t
            s_std, s_mean = torch.tensor(pre.std).view(1, 3, 1, 1), torch.tensor(pre.mean).view(1, 3, 1, 1)
            t_std, t_mean = torch.tensor(teacher_pre.std).view(1, 3, 1, 1), torch.tensor(teacher_pre.mean).view(1, 3, 1, 1)
            renorm = lambda x: (x * s_std + s_mean - t_mean) / t_std  # noqa: E731
        else:
            renorm = lambda x: x  # noqa: E731
        log(f"distilling from {cfg.teacher} (weight {cfg.distill_weight}, T={cfg.distill_temperature})")

    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    start_epoch, best_auc, best_epoch, log_rows, train_seconds = 1, -1.0, 0, [], 0.0
    if cfg.resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"]); opt.load_state_dict(st["optimizer"]); sched.load_state_dict(st["scheduler"])
        if ema is not None and st.get("ema"):
            ema.load_state_dict(st["ema"])
        start_epoch, best_auc, best_epoch = st["epoch"] + 1, st["best_auc"], st["best_epoch"]
        train_seconds = st.get("train_seconds", 0.0)
        torch.set_rng_state(st["torch_rng"])
        log_rows = json.loads(st["log_rows"])
        log(f"resumed from {state_path} after epoch {st['epoch']} (best val AUC {best_auc:.4f} at epoch {best_epoch})")
    best_path = out.with_suffix(".best-tmp.pt")
    if cfg.resume and start_epoch > 1 and not best_path.exists():
        log("warning: best-epoch weights missing; the best will be re-chosen from here on")
        best_auc = -1.0

    card = ModelCard(name=out.stem, arch=cfg.arch, preprocessing=pre, init=init)
    log(f"model {cfg.arch} ({init}), mode {cfg.mode}, precision {precision}, "
        f"{sum(p.numel() for g in groups for p in g['params']) / 1e6:.2f}M trainable parameters")
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        model.train()
        if cfg.mode == "feature-extract":  # frozen backbone: keep its batch-norm statistics frozen too
            for name, mod in model.named_modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
        losses, correct, seen = [], 0, 0
        bar = _progress(train_dl, steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
        for step, (x, y, _, bad) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            if x is None:
                continue
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            if teacher is not None:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    t_logits = teacher(renorm(x)).float()
                T = cfg.distill_temperature
                soft = nn.functional.kl_div(nn.functional.log_softmax(logits.float() / T, 1),
                                            nn.functional.softmax(t_logits.clone() / T, 1), reduction="batchmean") * T * T
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * soft
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        scored = ema.module if ema is not None else model  # the weights that would be shipped
        p, yv, _, _ = predict_loader(scored, val_dl, precision)
        stats = _val_stats(p, yv)
        epoch_s = time.time() - t0
        train_seconds += epoch_s
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "train_accuracy": correct / max(1, seen), **stats, "lr": opt.param_groups[0]["lr"],
               "seconds": round(epoch_s, 1), "images_per_second": round(seen / max(epoch_s, 1e-9), 1)}
        log_rows.append(row)
        improved = stats["val_auc"] > best_auc
        if improved:
            best_auc, best_epoch = stats["val_auc"], epoch
            torch.save(scored.state_dict(), best_path)
        log(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
            f"val loss {stats['val_loss']:.4f} acc {stats['val_accuracy']:.3f} AUC {stats['val_auc']:.4f}"
            f"{' *' if improved else ''} | {epoch_s:.0f}s ({row['images_per_second']} img/s)")
        with open(log_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(log_rows[0]))
            w.writeheader(); w.writerows(log_rows)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "ema": ema.state_dict() if ema is not None else {},
                    "epoch": epoch, "best_auc": best_auc, "best_epoch": best_epoch, "train_seconds": train_seconds,
                    "torch_rng": torch.get_rng_state(), "log_rows": json.dumps(log_rows)}, state_path)
        if epoch - best_epoch >= cfg.patience:
            log(f"early stop: no validation-AUC improvement for {cfg.patience} epochs")
            break

    _plot_curves(log_rows, out.with_suffix(".curves.png"))
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    model = model.to(memory_format=torch.contiguous_format)

    # The test split is touched once, here, with the weights chosen on validation.
    test_ds = ImageDataset(splits["test"], pre.transform())
    p, y, idx, errors = predict_loader(model, _loader(test_ds, 64, False, cfg.workers, cfg.seed), "fp32")
    from realitycheck.metrics import compute_metrics

    y_true = np.where(y, "fake", "real")
    test_metrics = compute_metrics(y_true, p, threshold=0.5)
    val_row = next(r for r in log_rows if r["epoch"] == best_epoch)
    card.training = {
        "data": str(cfg.data),
        "extra_real": [str(x) for x in cfg.extra_real],
        "split": "hash of file name (sha1 of 'seed:name'), 70/15/15, seed %d" % cfg.seed,
        "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
        "mode": cfg.mode, "epochs_run": len(log_rows), "best_epoch": best_epoch,
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "resume", "extra_real")},
        "precision": precision, "train_seconds": round(train_seconds),
        "teacher": str(cfg.teacher) if cfg.teacher else None,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "command": "realitycheck train " + " ".join(_cli_args(cfg)),
        "test_files": sorted(Path(pth).name for pth, _ in splits["test"]),
    }
    card.metrics = {"val": {k.replace("val_", ""): v for k, v in val_row.items() if k.startswith("val_")},
                    "test": test_metrics}
    card.notes.append("Test metrics are computed once on the held-out test split with the epoch chosen by validation AUC.")
    if "faces-140k" in str(cfg.data):
        card.notes.append("Training data: FFHQ (real) and StyleGAN (fake) faces, CC BY-NC-SA 4.0: research, evaluation and demos only.")
    if errors:
        card.notes.append(f"{len(errors)} unreadable test files were skipped")
    path = checkpoints.save_checkpoint(out, model, card, half=cfg.half)
    best_path.unlink(missing_ok=True)
    log(f"best epoch {best_epoch} (val AUC {best_auc:.4f}); test: {card.test_summary()}; wrote {path}")
    return path


def _cli_args(cfg: TrainConfig) -> list[str]:
    args = [str(cfg.data), "--arch", cfg.arch, "--mode", cfg.mode, "--epochs", str(cfg.epochs),
            "--out", str(cfg.out), "--lr", str(cfg.lr), "--batch-size", str(cfg.batch_size),
            "--augment", cfg.augment, "--resize", str(cfg.resize), "--crop", str(cfg.crop), "--seed", str(cfg.seed)]
    for e in cfg.extra_real:
        args += ["--extra-real", str(e)]
    if cfg.init_weights:
        args += ["--init-weights", str(cfg.init_weights)]
    if cfg.teacher:
        args += ["--teacher", str(cfg.teacher)]
    if cfg.ema:
        args += ["--ema", str(cfg.ema)]
    if cfg.mode == "feature-extract" or cfg.patience != 4:
        args += ["--patience", str(cfg.patience)]
    return args
