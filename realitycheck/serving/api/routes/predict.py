"""/v1/predict: real or AI-generated, one `predict --json` record per image; each judgement becomes a case."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations
import json
import time
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from realitycheck.serving.api.deps import (
    AdmissionDep,
    CallerDep,
    LimiterDep,
    MetricsDep,
    ScorerDep,
    SettingsDep,
    log,
    need_model,
    pixel_problem,
    read_inputs,
)
from realitycheck.serving.api.errors import safe

router = APIRouter(tags=["predict"])


@router.post("/v1/predict", summary="Real or AI-generated: one record per image, as predict --json")
async def predict(request: Request, who: CallerDep, settings: SettingsDep, scorer: ScorerDep, metrics: MetricsDep,
                  admission: AdmissionDep, limiter: LimiterDep,
                  files: Annotated[list[UploadFile], File(description="images (repeat the field)")] = [],
                  paths: Annotated[list[str], Form(description="server files under the allowed folders "
                                                   "(local mode only); a path or file:// URL")] = []):
    t0 = time.perf_counter()
    need_model(scorer)
    items = await read_inputs(files, paths, settings)
    request.scope["state"]["images"] = len(items)
    limiter.check(who, cost=len(items))
    problems = [pixel_problem(d, n, settings) for d, n in items]
    todo = [it for it, p in zip(items, problems) if p is None]
    t_queue = time.perf_counter()
    async with admission.slot():
        queued = time.perf_counter() - t_queue
        scored = await scorer.predict(todo) if todo else []
    it = iter(scored)
    results = []
    for (data, name), problem in zip(items, problems):
        rec = next(it) if problem is None else {"path": name, "error": problem, "p_fake": None, "label": None}
        if rec.get("error"):
            rec["error"] = safe(rec["error"])
        results.append(rec)
        metrics.inc("realitycheck_images_total", label=rec.get("label") or "error")
    await to_thread.run_sync(record_judgements, results, [data for data, _ in items], scorer.model_info(), who,
                             settings.access.public)
    failed = sum(1 for r in results if r.get("error"))
    body = {"model": scorer.model_info(), "results": results, "failed": failed,
            "seconds": round(time.perf_counter() - t0, 6), "queue_seconds": round(queued, 6),
            "request_id": request.scope["state"].get("request_id")}
    if failed == len(results):  # nothing could be scored: the client sent no usable image
        metrics.inc("realitycheck_errors_total", kind="bad_image")
        body["error"] = {"kind": "bad_image", "message": "; ".join(r["error"] for r in results),
                         "request_id": body["request_id"]}
        return JSONResponse(body, 400)
    return body


def record_judgements(results: list[dict], images: list[bytes], model: dict, caller: str, public: bool) -> None:
    """Each judgement answered becomes a case in this deployment's case database (`realitycheck.analysis.cases`):
    on by default locally, off in public mode unless REALITYCHECK_DB is set, the uploaded bytes kept only
    where the operator allows it. A database fault is logged and never costs the caller an answer."""
    from realitycheck.analysis import cases

    info = {"model_id": model.get("id"), "model_hash": (model.get("sha256") or "")[:16] or None}
    try:
        store = cases.open_store(public)
        if store is None:
            return
        for rec, data in zip(results, images):
            if not rec.get("error"):
                cases.record(rec, source="api", data=data, model=info, provenance=rec.get("provenance"),
                             name=rec.get("path"), session=caller, store=store)
    except cases.CaseStoreError as exc:
        log.warning(json.dumps({"event": "cases_not_recorded", "error": str(exc)}))
