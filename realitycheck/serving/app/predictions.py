"""Classifying on the dashboard: one prediction per (model, file hash) per session, each new one listed
in the session history and recorded in the case database.

The prediction itself is the package's (`Classifier.predict`); this is the per-session caching and
bookkeeping around it.
"""

from __future__ import annotations

import datetime as _dt

from realitycheck.intake import provenance
from realitycheck.model import inference
from realitycheck.serving.app import public, state
from realitycheck.serving.app.case_log import record_cases
from realitycheck.serving.app.display import thumbnail_data_url
from realitycheck.serving.app.inputs import sha256
from realitycheck.serving.app.model_cache import classifier_key


def classify(clf: inference.Classifier, items: list[tuple[str, bytes]], source: str,
             truth: str | None = None) -> list[tuple[str, str]]:
    """Predict each (name, bytes), cached per session by (model, file hash); log to the history.

    Returns the keys of the records in order. Bad inputs get a record with `error` set. `truth`: the
    known class of the items (an example), so the result can say whether the verdict is right.
    """
    mkey = classifier_key(clf)
    preds = state.get(state.PREDICTIONS)
    keys, todo = [], []
    for name, data in items:
        key = (mkey, sha256(data))
        keys.append(key)
        if key not in preds:
            todo.append((key, name, data))
    allowed, later = public.allow_classifications(len(todo))
    if later:  # over the session's rate limit: score up to it, say how many are left and when
        state.get(state.CLASSIFY_ERRORS).append(later)
        left = {key for key, _, _ in todo[allowed:]}
        todo = todo[:allowed]
        items = [it for it, key in zip(items, keys) if key not in left]
        keys = [k for k in keys if k not in left]
    if todo:
        results = clf.predict([d for _, _, d in todo], [n for _, n, _ in todo], keep_images=True)
        for (key, name, data), pred in zip(todo, results):
            # what the file declares, kept beside the prediction (never mixed into p_fake)
            state.remember(state.PREDICTIONS, key, {"name": name, "pred": pred, "source": source,
                                                    "bytes": len(data),
                                                    "provenance": provenance.read_provenance(data)},
                           state.MAX_CACHED_PREDICTIONS)
    threshold = float(state.get(state.THRESHOLD))
    record_cases(clf, [(preds[k], name, data) for k, (name, data) in zip(keys, items) if k in preds], threshold, source)
    history = state.get(state.HISTORY)
    fresh = {key for key, _, _ in todo}
    for key, (name, _data) in zip(keys, items):
        rec = preds[key]
        rec["name"] = name  # the same bytes may arrive under another name
        rec["truth"] = truth  # and an example's bytes as an upload, whose truth is unknown
        # one row per image: none again for one already checked (and listed) in this session with this model
        if key in fresh and rec["pred"].ok:
            history.append(_history_row(clf, rec, threshold, source))
    return keys


def _history_row(clf: inference.Classifier, rec: dict, threshold: float, source: str) -> dict:
    """One row of the Session history page: the verdict as it was given, at the threshold it was given at."""
    pred = rec["pred"]
    label = inference.verdict(pred.p_fake, threshold)
    prov = rec.get("provenance")
    return {
        "time": _dt.datetime.now(),
        "name": rec["name"],
        "label": label,
        "provenance": provenance.KIND_WORDS[prov.kind] if prov else "",
        "disagreement": (provenance.disagreement(prov, label) or "") if prov else "",
        "p_fake": float(pred.p_fake),
        "unfamiliar": pred.unfamiliar,
        "faces": pred.faces,
        "seconds": float(pred.seconds),
        "threshold": threshold,
        "model": clf.name,
        "source": source,
        "thumbnail": thumbnail_data_url(pred.image) if pred.image is not None else None,
    }
