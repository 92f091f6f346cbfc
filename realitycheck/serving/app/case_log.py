"""The case database as the dashboard uses it: every verdict shown is recorded as a judgement (the rules,
and whether this deployment records at all, are `realitycheck.analysis.cases`)."""

from __future__ import annotations

from realitycheck.analysis import cases
from realitycheck.model import inference
from realitycheck.serving.app import public, state


def case_store():
    """This deployment's case database (`cases.settings`: on locally, off in public mode unless configured),
    or None; raises cases.CaseStoreError when it is configured but unusable."""
    return cases.open_store(public.is_public())


def record_cases(clf: inference.Classifier, recs: list[tuple[dict, str, bytes]], threshold: float, source: str) -> None:
    """Every verdict shown becomes a judgement in the case database (at the threshold it was shown at).
    A database failure is one line on the page; the verdicts are shown all the same."""
    try:
        store = case_store()
        if store is None:
            return
        model = cases.model_info(clf)
        for rec, name, data in recs:
            pred = rec["pred"]
            if not pred.ok:
                continue
            prov = rec.get("provenance")
            store.record(pred.at_threshold(threshold).to_dict(), data=data, image=pred.image, name=name,
                         origin=f"dashboard:classify ({source})", session=state.get(state.CASE_SESSION), model=model,
                         provenance=prov.to_dict() if prov is not None else None)
    except cases.CaseStoreError as exc:
        state.get(state.CLASSIFY_ERRORS).append(f"Not recorded in the case database: {exc}")


def case_stream(clf: inference.Classifier, source: str, workers: int = 0):
    """(predict_stream for `evaluate.evaluate_items` that records every judgement, its Recorder), or
    (None, None) when this deployment records nothing. The Recorder keeps a database failure (`.error`)."""
    if not cases.settings(public.is_public()).enabled:
        return None, None
    recorder = cases.Recorder(clf, source=source, session=state.get(state.CASE_SESSION), public=public.is_public())
    return cases.logged(lambda paths, progress: clf.iter_predict(paths, workers=workers, progress=progress),
                        recorder), recorder
