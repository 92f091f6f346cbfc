"""The FastAPI app: `create_app(settings, scorer)`. OpenAPI docs at /docs.

Every answer is JSON (or the PNG asked for); an error is ``{"error": {"kind", "message",
"request_id"}}`` with a message that names no server path. Each request is logged as one JSON line
(logger ``realitycheck.serving.api``) and counted in /metrics.

Status codes: 200; 400 bad input (not an image, unknown method, no file); 401 no or wrong API key;
403 refused by the deployment's rules (a server path outside the roots, a slow method, public mode);
404/405; 413 body over the limit; 429 over the caller's rate (Retry-After); 503 queue full or model
not loaded yet (Retry-After); 500 a bug (logged with its traceback, never shown).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local dependencies
import base64
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from realitycheck.serving import access
from realitycheck.serving.api.config import ServeSettings
from realitycheck.serving.api.limits import Admission, RateLimiter, Refused
from realitycheck.serving.api.metrics import Metrics

log = logging.getLogger("realitycheck.serving.api")
_REDACT = access.AccessSettings(public=True)  # errors never show server paths, in any mode
API_VERSION = "v1"


def safe(text: str) -> str:
    """A message with absolute server paths reduced to their last component."""
    return access.redact(str(text), _REDACT)


def _error_body(kind: str, message: str, request_id: str | None) -> dict:
    return {"error": {"kind": kind, "message": safe(message), "request_id": request_id}}


class Guard:
    """Pure ASGI middleware: request id, body-size limit (413 before reading), metrics, one log line.

    The size limit holds for chunked bodies too: past the limit the app is told the client left and
    the 413 already sent is the answer.
    """

    def __init__(self, app, *, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        limit = self.settings.max_body_bytes
        state = {"status": 500, "answered": False, "seen": 0}

        async def send_413():
            body = json.dumps(_error_body("body_too_large", f"the request body is over the limit of "
                                          f"{limit / 1e6:.0f} MB", rid)).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"x-request-id", rid.encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            state.update(status=413, answered=True)
            self.metrics.inc("realitycheck_errors_total", kind="body_too_large")

        async def guarded_receive():
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > limit:
                    if not state["answered"]:
                        await send_413()
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg):
            if state["answered"] and msg["type"].startswith("http.response") and state["status"] == 413:
                return  # the 413 was the answer
            if msg["type"] == "http.response.start":
                state["status"] = msg["status"]
                headers = list(msg.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                msg = {**msg, "headers": headers}
            await send(msg)

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            too_big = length is not None and int(length) > limit
        except ValueError:
            too_big = False
        try:
            if too_big:
                await send_413()
            else:
                await self.app(scope, guarded_receive, guarded_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            seconds = time.perf_counter() - t0
            self.metrics.inc("realitycheck_requests_total", endpoint=endpoint, status=state["status"])
            self.metrics.observe(seconds, endpoint=endpoint)
            log.info("request", extra={"fields": {
                "request_id": rid, "method": scope.get("method"), "endpoint": endpoint, "status": state["status"],
                "ms": round(seconds * 1000, 1), "caller": scope["state"].get("caller"),
                "images": scope["state"].get("images"), "client": (scope.get("client") or ("?",))[0]}})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "event": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def create_app(settings: ServeSettings | None = None, scorer=None) -> FastAPI:
    """The API over `scorer` (default: the shipped model in this process, loaded in the background)."""
    from realitycheck.serving.api.config import load_serve_settings

    settings = settings or load_serve_settings()
    if scorer is None:
        from realitycheck.model.inference import load_classifier
        from realitycheck.serving.api.scoring import LocalScorer

        scorer = LocalScorer(lambda: load_classifier(os.environ.get("REALITYCHECK_WEIGHTS") or None))
    metrics = Metrics()
    admission = Admission(settings.workers, settings.queue)
    limiter = RateLimiter(settings.rate_per_minute)
    metrics.gauge("realitycheck_queue_depth", "requests waiting for a worker", lambda: admission.waiting)
    metrics.gauge("realitycheck_in_flight", "requests being scored now", lambda: admission.running)
    metrics.gauge("realitycheck_model_loaded", "1 once the model is loaded", lambda: int(scorer.ready))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scorer.start()
        log.info("starting", extra={"fields": {"scorer": scorer.kind, "workers": settings.workers,
                                               "queue": settings.queue, "keys": settings.keys_on,
                                               "public": settings.access.public}})
        yield
        log.info("stopped", extra={"fields": {"in_flight": admission.running, "waiting": admission.waiting}})
        scorer.close()

    app = FastAPI(title="RealityCheck API", version=API_VERSION, lifespan=lifespan,
                  description="Is this face photo real or AI-generated? The same verdicts as `realitycheck predict "
                              "--json`. Send API keys as `Authorization: Bearer KEY` or `X-API-Key` when the "
                              "service has keys.")
    app.state.settings, app.state.scorer, app.state.metrics, app.state.admission = settings, scorer, metrics, admission
    app.add_middleware(Guard, settings=settings, metrics=metrics)

    # -- errors: one JSON shape, no server paths ----------------------------------------------------
    def error_response(request: Request, status: int, kind: str, message: str, retry_after=None) -> JSONResponse:
        metrics.inc("realitycheck_errors_total", kind=kind)
        rid = request.scope["state"].get("request_id")
        headers = {"X-Request-ID": rid} if rid else {}  # also on a 500, which leaves outside the Guard
        if retry_after:
            headers["Retry-After"] = str(int(retry_after))
        return JSONResponse(_error_body(kind, message, rid), status, headers=headers)

    @app.exception_handler(Refused)
    async def on_refused(request: Request, exc: Refused):
        return error_response(request, exc.status, exc.kind, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError):
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors()})
        return error_response(request, 400, "bad_request", "missing or invalid field(s): " + ", ".join(fields))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = {404: "no such endpoint (see /docs)", 405: "method not allowed here"}.get(exc.status_code,
                                                                                            str(exc.detail))
        return error_response(request, exc.status_code, kind, message)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.error("internal error", exc_info=exc, extra={"fields": {"request_id": request.scope["state"].get("request_id")}})
        return error_response(request, 500, "internal", "internal error; the server log has the details")

    # -- callers ------------------------------------------------------------------------------------
    def caller(request: Request) -> str:
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

    def need_model():
        if not scorer.ready:
            if getattr(scorer, "problem", None):
                raise Refused(503, "model_unavailable", f"the model could not be loaded: {scorer.problem}")
            raise Refused(503, "model_loading", "the model is still loading; try again shortly", retry_after=2)

    async def read_inputs(files: list[UploadFile], paths: list[str]) -> list[tuple[bytes, str]]:
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

    def pixel_problem(data: bytes, name: str) -> str | None:
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

    # -- endpoints ------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"], summary="Alive (the process answers)")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"], summary="Ready (the model is loaded)")
    async def readyz():
        if scorer.ready:
            return {"status": "ready", "model": scorer.model_info()}
        problem = getattr(scorer, "problem", None)
        return JSONResponse({"status": "failed" if problem else "loading",
                             "problem": safe(problem) if problem else None}, 503, headers={"Retry-After": "2"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["models"], summary="The model that answers, and the others available")
    async def models(who: Annotated[str, Depends(caller)]):
        from realitycheck.model.checkpoints import CheckpointError, read_card
        from realitycheck.model.inference import list_weights

        loaded = scorer.model_info() if scorer.ready else None
        others = []
        for p in list_weights():
            if loaded and p.name == loaded.get("file"):
                continue
            try:
                card = read_card(p)
                others.append({"id": card.name, "file": p.name, "arch": card.arch, "threshold": card.threshold,
                               "loaded": False})
            except CheckpointError:
                continue
        return {"loaded": loaded, "available": others,
                "note": "one model answers per service; start another with --weights to serve another"}

    @app.post("/v1/predict", tags=["predict"], summary="Real or AI-generated: one record per image, as predict --json")
    async def predict(request: Request, who: Annotated[str, Depends(caller)],
                      files: Annotated[list[UploadFile], File(description="images (repeat the field)")] = [],
                      paths: Annotated[list[str], Form(description="server files under the allowed folders "
                                                       "(local mode only); a path or file:// URL")] = []):
        t0 = time.perf_counter()
        need_model()
        items = await read_inputs(files, paths)
        request.scope["state"]["images"] = len(items)
        limiter.check(who, cost=len(items))
        problems = [pixel_problem(d, n) for d, n in items]
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

    @app.post("/v1/explain", tags=["explain"], summary="Where the evidence lies: a heatmap (PNG) or JSON with it",
              responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def explain_endpoint(request: Request, who: Annotated[str, Depends(caller)],
                               file: Annotated[UploadFile | None, File(description="one image")] = None,
                               path: Annotated[str | None, Form(description="or a server file (local mode)")] = None,
                               method: Annotated[str, Form()] = "gradcam",
                               target_class: Annotated[str | None, Form(alias="class", description="fake or real "
                                                                        "(default: the predicted class)")] = None,
                               format: Annotated[str, Form(description="png or json")] = "png"):
        from realitycheck import explain

        need_model()
        if format not in ("png", "json"):
            raise Refused(400, "bad_request", "format must be png or json")
        try:
            spec = explain.get_method(method)
        except ValueError as exc:
            raise Refused(400, "bad_request", str(exc)) from None
        if spec.slow and not settings.slow_methods:
            raise Refused(403, "slow_method_refused", f"{spec.name} takes minutes of CPU per image and is turned off "
                          f"on this service; use one of: {', '.join(m for m in explain.METHODS if m not in explain.SLOW_METHODS)}")
        if target_class not in (None, "", "fake", "real"):
            raise Refused(400, "bad_request", "class must be fake or real")
        items = await read_inputs([file] if file is not None else [], [path] if path else [])
        if len(items) != 1:
            raise Refused(400, "bad_request", "explain takes one image: 'file' or 'path'")
        request.scope["state"]["images"] = 1
        limiter.check(who)
        data, name = items[0]
        problem = pixel_problem(data, name)
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

    return app


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
