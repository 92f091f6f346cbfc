"""Where the API's images are scored: this process (`LocalScorer`) or Ray Serve replicas (`ray_app`).

A scorer takes decoded-nothing bytes and returns JSON-ready records, so the app is the same
whichever runs the model. Each record is `records.prediction_record` of `Classifier.predict`: the
same function and path as `predict --json`.
"""

from __future__ import annotations

import base64
import threading
import time

from anyio import to_thread

from realitycheck.serving import records
from realitycheck.serving.api.limits import Refused


def predict_records(clf, items: list[tuple[bytes, str]]) -> list[dict]:
    """Blocking: (bytes, name) pairs -> one `predict --json` record each (errors included, never raised)."""
    preds = clf.predict([data for data, _ in items], [name for _, name in items])
    return [records.prediction_record(p, source=data) for p, (data, _) in zip(preds, items)]


def explain_record(clf, data: bytes, name: str, method: str, target_class: str | None, with_png: bool) -> dict:
    """Blocking: one image's heatmap (fast methods; the caller checked) and what it shows.

    The PNG is the dashboard's panel (image region | overlay with the hottest regions outlined, a
    colour bar); `where` says in words where the evidence lies.
    """
    from realitycheck import explain
    from realitycheck.intake.images import ImageError, load_image

    try:
        loaded = load_image(data, name=name)
    except ImageError as exc:
        raise Refused(400, "bad_image", str(exc)) from None
    t0 = time.perf_counter()
    pred = clf.predict_one(loaded)  # the verdict, and the face that decided it: the one explained
    if not pred.ok:
        raise Refused(400, "bad_image", pred.error)
    exp = explain.explainer_for(clf).explain([loaded.image], method=method, target_class=target_class, progress=False,
                                face=pred.deciding_face)[0]
    png = explain.to_png_bytes(exp.panel(max_side=None))
    f = exp.faithfulness
    out = {
        "path": loaded.name, "label": pred.label, "p_fake": pred.p_fake, "threshold": clf.threshold,
        "method": exp.method, "explained_class": exp.target_class, "region": exp.region, "where": exp.where(loaded.image),
        "faithfulness": None if f is None else {"drop_hot": f.drop_hot, "drop_random": f.drop_random,
                                                "score": f.score, "meaning": f.meaning},
        "note": explain.METHOD_NOTES.get(exp.method), "seconds": time.perf_counter() - t0,
    }
    if with_png:
        out["png_base64"] = base64.b64encode(png).decode()
    return out


class LocalScorer:
    """The model in this process: blocking work runs on worker threads, the event loop stays free."""

    kind = "local"

    def __init__(self, load):
        """load: a function returning a loaded `Classifier` (run once, in the background)."""
        self._load = load
        self.clf = None
        self.sha256: str | None = None
        self.problem: str | None = None  # why the model is not loaded (shown without server paths)
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, clf, sha256: str | None = None) -> "LocalScorer":
        s = cls(lambda: clf)
        s.clf, s.sha256 = clf, sha256 if sha256 is not None else _sha(clf)
        return s

    def start(self) -> None:
        """Load the model on a thread: /healthz answers at once, /readyz once the model is in."""
        if self.clf is not None or self._thread is not None:
            return

        def work():
            try:
                clf = self._load()
                self.sha256 = _sha(clf)
                self.clf = clf
            except Exception as exc:  # shown by /readyz; the message names no server folder (redacted there)
                self.problem = str(exc) or type(exc).__name__

        self._thread = threading.Thread(target=work, name="realitycheck-model-load", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.clf is not None

    @property
    def ready(self) -> bool:
        return self.clf is not None

    def model_info(self) -> dict:
        return records.model_record(self.clf, self.sha256)

    async def predict(self, items: list[tuple[bytes, str]]) -> list[dict]:
        return await to_thread.run_sync(predict_records, self.clf, items)

    async def explain(self, data: bytes, name: str, method: str, target_class: str | None, with_png: bool) -> dict:
        return await to_thread.run_sync(explain_record, self.clf, data, name, method, target_class, with_png)

    def close(self) -> None:
        pass


def _sha(clf) -> str | None:
    from realitycheck.model.engines import file_sha256

    return file_sha256(clf.path) if clf.path and clf.path.is_file() else None
