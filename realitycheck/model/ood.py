"""An honest "unfamiliar image" answer: how far an image's features lie from what the model trained on.

A detector trained on some generators says "real" with confidence to fakes from others. The
penultimate features of an image (the input of the classifier head) of a kind the model never saw
tend to fall outside the cloud of its training features. We fit a Gaussian to that cloud
(on training-split images, in its top principal components plus one term for the rest), score
an image by its Mahalanobis distance to it, and flag it when the score exceeds a threshold chosen
on validation images (so that at most `target_flag_rate` of in-distribution images are flagged).

The statistics travel inside the checkpoint (tensors under "ood", read with weights_only=True);
the threshold and how it was chosen are in the card (`card.ood`): the card's threshold is the one in
force, and the checkpoint's "threshold" tensor is a copy `checkpoints` keeps equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from realitycheck.model import models
from realitycheck.model.decision import (
    by_group,
    is_unfamiliar,
    threshold_for_every_group,
)

N_COMPONENTS = 64


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The classifier head whose input are the penultimate features (from the architecture's spec)."""
    name = models.get_arch(arch).head_prefixes[0].rstrip(".")
    return model.get_submodule(name)


class FeatureTap:
    """Catches the head's input on every forward pass (no extra compute): `with FeatureTap(m, arch) as tap`.
    `detach=False` keeps the features in the graph (a loss on them: INT8 distillation)."""

    def __init__(self, model: nn.Module, arch: str, detach: bool = True):
        self.module = head_module(model, arch)
        self.detach = detach
        self.features: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, args):
        f = args[0].detach() if self.detach else args[0]
        self.features = f.float().flatten(1)

    def __enter__(self) -> "FeatureTap":
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@dataclass
class OODStats:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D) principal directions
    eigvals: np.ndarray  # (k,) variance along each
    resid_var: float  # mean variance per dimension outside the k directions
    threshold: float = float("inf")

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int = N_COMPONENTS) -> "OODStats":
        x = np.asarray(features, dtype=np.float64)
        if len(x) < 10:
            raise ValueError(f"need at least 10 training feature vectors to fit the unfamiliarity statistics, got {len(x)}")
        mean = x.mean(0)
        xc = x - mean
        k = int(min(n_components, len(x) - 1, x.shape[1]))
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        var = s ** 2 / (len(x) - 1)
        eig = np.maximum(var[:k], 1e-8)
        rest = var[k:]
        resid = float(rest.sum() / max(1, x.shape[1] - k)) if len(rest) else 1e-8
        return cls(mean=mean, components=vt[:k], eigvals=eig, resid_var=max(resid, 1e-8))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance (per dimension) in the principal subspace plus the residual's share."""
        x = np.asarray(features, dtype=np.float64) - self.mean
        z = x @ self.components.T
        inside = (z ** 2 / self.eigvals).sum(1)
        resid = ((x ** 2).sum(1) - (z ** 2).sum(1)).clip(min=0) / self.resid_var
        return np.sqrt((inside + resid) / x.shape[1])

    def choose_threshold(self, val_features: np.ndarray, target_flag_rate: float = 0.05,
                         sources: "list[str] | None" = None) -> float:
        """The lowest threshold flagging at most `target_flag_rate` of the validation images, of each
        source when `sources` (one name per row) says where they came from."""
        scores = self.score(val_features)
        groups = [scores] if sources is None else by_group(scores, sources)
        t = threshold_for_every_group(groups, target_flag_rate, rule=is_unfamiliar)
        if t is None:
            raise ValueError("no scores to choose an unfamiliarity threshold on")
        self.threshold = t
        return self.threshold

    # -- storage inside a checkpoint -----------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.tensor(self.mean, dtype=torch.float32),
                "components": torch.tensor(self.components, dtype=torch.float32),
                "eigvals": torch.tensor(self.eigvals, dtype=torch.float32),
                "resid_var": torch.tensor([self.resid_var], dtype=torch.float64),
                "threshold": torch.tensor([self.threshold], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, t: dict) -> "OODStats":
        try:
            mean = t["mean"].double().numpy()
            comps = t["components"].double().numpy()
            eig = t["eigvals"].double().numpy()
            stats = cls(mean=mean, components=comps, eigvals=eig, resid_var=float(t["resid_var"][0]),
                        threshold=float(t["threshold"][0]))
        except (KeyError, AttributeError, TypeError, IndexError) as exc:
            raise ValueError(f"damaged unfamiliarity statistics ({exc})") from None
        if comps.ndim != 2 or comps.shape[1] != mean.shape[0] or eig.shape[0] != comps.shape[0] \
                or not np.all(np.isfinite(eig)) or np.any(eig <= 0):
            raise ValueError("damaged unfamiliarity statistics (shapes or variances)")
        return stats


UNFAMILIAR_MESSAGE = "unfamiliar image: it lies outside what the model was trained on, so this verdict is unreliable"
UNFAMILIAR_PLAIN = "This picture is unlike the ones the model learned from, so its answer may well be wrong."
