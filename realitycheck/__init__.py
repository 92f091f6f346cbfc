"""RealityCheck: is this face photo real or AI-generated, and why does the model think so.

The package is layered; a module imports only from its own layer or the layers above it in this list
(`scripts/import_graph.py` checks it):

- `intake`    files in: decoding, faces, the file's own declarations, labelled folders and manifests
- `model`     the network, its checkpoint and card, the decision rule, engines, one image -> verdict
- `explain`   heatmaps (CAM methods, faithfulness, words) for a model's view of an image
- `analysis`  metrics, plots, reports, evaluation over labelled data, the case database
- `training`  train, distributed training, learn from reviewed cases
- `serving`   the front ends: CLI, dashboard, HTTP API, Ray, video

`from realitycheck import load_classifier` (and the other names in `__all__`) is the stable entry point;
the modules' old flat names (`realitycheck.inference`, ...) still import, for code written before the
layers.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent

from realitycheck.model.models import CLASSES  # noqa: E402

# public name -> the module that owns it (imported on first use: torch loads only when needed)
_PUBLIC = {
    "load_classifier": "realitycheck.model.inference",
    "Classifier": "realitycheck.model.inference",
    "Prediction": "realitycheck.model.inference",
    "evaluate_sources": "realitycheck.analysis.evaluate",
    "Explainer": "realitycheck.explain",
}
# the flat layout's module names (before the layers) -> where each module lives now
_MOVED = {
    **{m: f"realitycheck.intake.{m}" for m in ("images", "faces", "provenance", "preprocess", "examples", "data",
                                              "uploads")},
    **{m: f"realitycheck.model.{m}" for m in ("models", "checkpoints", "ood", "attribution", "engines", "inference",
                                             "registry", "model_limits")},
    "heatmap_words": "realitycheck.explain.heatmap_words",
    **{m: f"realitycheck.analysis.{m}" for m in ("metrics", "plots", "report", "evaluate", "groups", "prevalence",
                                                "face_table", "cases")},
    **{m: f"realitycheck.training.{m}" for m in ("train", "train_config", "ddp", "learn")},
    **{m: f"realitycheck.serving.{m}" for m in ("cli", "distributed", "records", "access", "video", "app")},
    "serve": "realitycheck.serving.api",
}

__all__ = ["CLASSES", "REPO_ROOT", "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'realitycheck' has no attribute {name!r}")


class _MovedModules:
    """`import realitycheck.inference` (the flat layout's path) finds the module at its layered home."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")[2].partition(".")
        if not fullname.startswith("realitycheck.") or head not in _MOVED:
            return None
        import importlib.util
        import sys

        new = _MOVED[head] + (f".{rest}" if rest else "")
        module = importlib.import_module(new)
        sys.modules[fullname] = module
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module))


class _AliasLoader:
    def __init__(self, module):
        self.module, self.spec = module, module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec  # the import system set the alias's spec: the module keeps its own


def _install_aliases() -> None:
    import sys

    if not any(isinstance(f, type) and f is _MovedModules for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules)  # before an editable install's finder, which maps the old paths too


_install_aliases()
