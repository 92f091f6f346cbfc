"""One image's result as a plain dict: what `predict --json`, the HTTP API and `video` print.

Every front end that serialises a verdict goes through `prediction_record`, so the CLI and the API
give the same fields and the same numbers for the same file and model (the API's tests compare the
two). Fields come from `Prediction.to_dict()`, so a field added there (e.g. a generator guess)
appears everywhere at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realitycheck.intake.provenance import Provenance
    from realitycheck.model.inference import Classifier, Prediction


def prediction_record(pred: "Prediction", source=None, provenance: "Provenance | None" = None) -> dict:
    """`pred` as a dict with what the file declares about its origin (`provenance`).

    source: the file's path, bytes or file object, read for provenance when neither `provenance`
    nor the prediction carries it (Ray's decode tasks read it where the bytes were).
    """
    from realitycheck.intake.provenance import read_provenance

    declared = provenance or pred.provenance or read_provenance(source)
    return {**pred.to_dict(), "provenance": declared.to_dict()}


def model_record(clf: "Classifier", sha256: str | None = None) -> dict:
    """Which model gave a verdict: its card name, checkpoint hash, architecture, threshold and engine.

    No server path: the file's name only (API answers and public pages show this).
    """
    return {"id": clf.name, "sha256": sha256, "file": clf.path.name if clf.path else None, "arch": clf.arch,
            "threshold": clf.threshold, "engine": clf.engine_label, "classes": list(clf.card.classes),
            "unfamiliar_check": clf.ood is not None}
