"""Liveness, readiness and Prometheus metrics, for orchestrators and scrapers."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from realitycheck.serving.api.deps import MetricsDep, ScorerDep
from realitycheck.serving.api.errors import safe

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Alive (the process answers)")
async def healthz():
    return {"status": "alive"}


@router.get("/readyz", summary="Ready (the model is loaded)")
async def readyz(scorer: ScorerDep):
    if scorer.ready:
        return {"status": "ready", "model": scorer.model_info()}
    problem = getattr(scorer, "problem", None)
    return JSONResponse({"status": "failed" if problem else "loading",
                         "problem": safe(problem) if problem else None}, 503, headers={"Retry-After": "2"})


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def prometheus(metrics: MetricsDep):
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")
