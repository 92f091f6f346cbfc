"""/v1/explain: where the evidence lies in one image, as the dashboard's heatmap panel (PNG) or JSON with it."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations
import base64
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from realitycheck.serving.api.deps import (
    AdmissionDep,
    CallerDep,
    LimiterDep,
    ScorerDep,
    SettingsDep,
    need_model,
    pixel_problem,
    read_inputs,
)
from realitycheck.serving.api.errors import safe
from realitycheck.serving.api.limits import Refused

router = APIRouter(tags=["explain"])


def _method_spec(method: str, settings):
    """The CAM method asked for; 400 for an unknown one, 403 for a slow one this service turned off."""
    from realitycheck import explain

    try:
        spec = explain.get_method(method)
    except ValueError as exc:
        raise Refused(400, "bad_request", str(exc)) from None
    if spec.slow and not settings.slow_methods:
        raise Refused(403, "slow_method_refused", f"{spec.name} takes minutes of CPU per image and is turned off "
                      f"on this service; use one of: {', '.join(m for m in explain.METHODS if m not in explain.SLOW_METHODS)}")
    return spec


@router.post("/v1/explain", summary="Where the evidence lies: a heatmap (PNG) or JSON with it",
             responses={200: {"content": {"image/png": {}, "application/json": {}}}})
async def explain_endpoint(request: Request, who: CallerDep, settings: SettingsDep, scorer: ScorerDep,
                           admission: AdmissionDep, limiter: LimiterDep,
                           file: Annotated[UploadFile | None, File(description="one image")] = None,
                           path: Annotated[str | None, Form(description="or a server file (local mode)")] = None,
                           method: Annotated[str, Form()] = "gradcam",
                           target_class: Annotated[str | None, Form(alias="class", description="fake or real "
                                                                    "(default: the predicted class)")] = None,
                           format: Annotated[str, Form(description="png or json")] = "png"):
    need_model(scorer)
    if format not in ("png", "json"):
        raise Refused(400, "bad_request", "format must be png or json")
    spec = _method_spec(method, settings)
    if target_class not in (None, "", "fake", "real"):
        raise Refused(400, "bad_request", "class must be fake or real")
    items = await read_inputs([file] if file is not None else [], [path] if path else [], settings)
    if len(items) != 1:
        raise Refused(400, "bad_request", "explain takes one image: 'file' or 'path'")
    request.scope["state"]["images"] = 1
    limiter.check(who)
    data, name = items[0]
    problem = pixel_problem(data, name, settings)
    if problem:
        raise Refused(400, "bad_image", problem)
    async with admission.slot():
        rec = await scorer.explain(data, name, spec.name, target_class or None, True)
    rec["model"] = scorer.model_info()
    if format == "png":
        png = base64.b64decode(rec.pop("png_base64"))
        return Response(png, media_type="image/png", headers={
            "X-RealityCheck-P-Fake": f"{rec['p_fake']:.6f}", "X-RealityCheck-Label": rec["label"],
            "X-RealityCheck-Explained-Class": rec["explained_class"],
            "X-RealityCheck-Where": safe(rec["where"]).encode("ascii", "replace").decode()})
    rec["overlay_png_base64"] = rec.pop("png_base64")
    return rec
