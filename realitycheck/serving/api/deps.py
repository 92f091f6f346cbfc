"""What the endpoints share, as FastAPI dependencies: the app's state, the caller, the inputs sent.

`create_app` puts one settings, scorer, metrics, admission queue and rate limiter on `app.state`; the
getters below read them per request, so the routers hold no globals and several apps (tests, Ray
Serve's ingress) live side by side in one process.
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of the dependencies
import logging
from typing import Annotated, Any

from fastapi import Depends, Request, UploadFile

from realitycheck.serving import access
from realitycheck.serving.api.config import ServeSettings
from realitycheck.serving.api.limits import Admission, RateLimiter, Refused
from realitycheck.serving.api.metrics import Metrics

log = logging.getLogger("realitycheck.serving.api")


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_scorer(request: Request) -> Any:
    """A `scoring.LocalScorer` or `ray_app.RayScorer`: the same methods, wherever the model runs."""
    return request.app.state.scorer


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_admission(request: Request) -> Admission:
    return request.app.state.admission


def get_limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ScorerDep = Annotated[Any, Depends(get_scorer)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


def caller(request: Request, settings: SettingsDep) -> str:
    """The API key's name (keys on), else the client's address; 401 for a missing or wrong key."""
    if settings.keys_on:
        auth = request.headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        name = settings.key_name(presented)
        if name is None:
            raise Refused(401, "unauthorized", "an API key is required (Authorization: Bearer KEY or X-API-Key)"
                          if not presented else "this API key is not valid")
        who = f"key:{name}"
    else:
        who = f"addr:{request.client.host if request.client else '?'}"
    request.scope["state"]["caller"] = who
    return who


CallerDep = Annotated[str, Depends(caller)]


def need_model(scorer) -> None:
    """503 until the model is loaded (with Retry-After), or for good when it could not be."""
    if not scorer.ready:
        if getattr(scorer, "problem", None):
            raise Refused(503, "model_unavailable", f"the model could not be loaded: {scorer.problem}")
        raise Refused(503, "model_loading", "the model is still loading; try again shortly", retry_after=2)


async def read_inputs(files: list[UploadFile], paths: list[str], settings: ServeSettings) -> list[tuple[bytes, str]]:
    """(bytes, name) of each upload and server file, read only up to one byte past the file limit."""
    from realitycheck.intake.images import MAX_FILE_BYTES

    n = len(files) + len(paths)
    if n == 0:
        raise Refused(400, "bad_request", "send at least one image: multipart field 'files', or 'paths' "
                      "(files under the server's allowed folders)")
    if n > settings.max_images:
        raise Refused(413, "too_many_images", f"{n} images in one request; the limit is {settings.max_images}")
    items = []
    for f in files:
        items.append((await f.read(MAX_FILE_BYTES + 1), f.filename or "upload"))
    for raw in paths:
        text = raw.removeprefix("file://") if raw.startswith("file://") else raw
        try:
            real = access.check_path(text, settings.access, want="file")
        except access.PathRefused as exc:
            raise Refused(403, "path_refused", str(exc)) from None
        with open(real, "rb") as fh:
            items.append((fh.read(MAX_FILE_BYTES + 1), raw))
    return items


def pixel_problem(data: bytes, name: str, settings: ServeSettings) -> str | None:
    """Over the service's pixel limit (header only, nothing decoded), or None."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, h = Image.open(io.BytesIO(data)).size
    except Exception:
        return None  # not an image Pillow opens: load_image says why, in its words
    if w * h > settings.max_pixels:
        return (f"{name}: {w}x{h} pixels is over this service's limit of {settings.max_pixels / 1e6:g} MP; "
                "downscale it first")
    return None
