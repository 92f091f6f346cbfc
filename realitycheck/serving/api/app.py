"""The FastAPI app: `create_app(settings, scorer)`. OpenAPI docs at /docs.

Every answer is JSON (or the PNG asked for); an error is ``{"error": {"kind", "message",
"request_id"}}`` with a message that names no server path. Each request is logged as one JSON line
(logger ``realitycheck.serving.api``) and counted in /metrics. The endpoints are in `routes` (one
APIRouter per concern), what they share in `deps`, the error shape in `errors`.

Status codes: 200; 400 bad input (not an image, unknown method, no file); 401 no or wrong API key;
403 refused by the deployment's rules (a server path outside the roots, a slow method, public mode);
404/405; 413 body over the limit; 429 over the caller's rate (Retry-After); 503 queue full or model
not loaded yet (Retry-After); 500 a bug (logged with its traceback, never shown).
"""

import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI

from realitycheck.serving.api.config import ServeSettings
from realitycheck.serving.api.deps import log
from realitycheck.serving.api.errors import add_error_handlers, error_body, safe
from realitycheck.serving.api.limits import Admission, RateLimiter
from realitycheck.serving.api.metrics import Metrics
from realitycheck.serving.api.routes import ROUTERS
from realitycheck.serving.api.routes.predict import record_judgements

# `safe` and `record_judgements` live in `errors` and `routes.predict`; their old home still imports them
__all__ = ["API_VERSION", "Guard", "JsonLogFormatter", "create_app", "lifespan", "record_judgements", "safe"]
API_VERSION = "v1"


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
            body = json.dumps(error_body("body_too_large", f"the request body is over the limit of "
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


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The scorer starts loading the model with the server (/readyz says when it is ready) and closes after it."""
    settings, scorer, admission = app.state.settings, app.state.scorer, app.state.admission
    scorer.start()
    log.info("starting", extra={"fields": {"scorer": scorer.kind, "workers": settings.workers,
                                           "queue": settings.queue, "keys": settings.keys_on,
                                           "public": settings.access.public}})
    yield
    log.info("stopped", extra={"fields": {"in_flight": admission.running, "waiting": admission.waiting}})
    scorer.close()


def create_app(settings: ServeSettings | None = None, scorer=None) -> FastAPI:
    """The API over `scorer` (default: the shipped model in this process, loaded in the background).

    Only assembles: the shared state on `app.state` (read by `deps`), the Guard, the error shape, the routers.
    """
    from realitycheck.serving.api.config import load_serve_settings

    settings = settings or load_serve_settings()
    if scorer is None:
        from realitycheck.model.inference import load_classifier
        from realitycheck.serving.api.scoring import LocalScorer

        scorer = LocalScorer(lambda: load_classifier(os.environ.get("REALITYCHECK_WEIGHTS") or None))
    metrics = Metrics()
    admission = Admission(settings.workers, settings.queue)
    metrics.gauge("realitycheck_queue_depth", "requests waiting for a worker", lambda: admission.waiting)
    metrics.gauge("realitycheck_in_flight", "requests being scored now", lambda: admission.running)
    metrics.gauge("realitycheck_model_loaded", "1 once the model is loaded", lambda: int(scorer.ready))

    app = FastAPI(title="RealityCheck API", version=API_VERSION, lifespan=lifespan,
                  description="Is this face photo real or AI-generated? The same verdicts as `realitycheck predict "
                              "--json`. Send API keys as `Authorization: Bearer KEY` or `X-API-Key` when the "
                              "service has keys.")
    app.state.settings, app.state.scorer, app.state.metrics, app.state.admission = settings, scorer, metrics, admission
    app.state.limiter = RateLimiter(settings.rate_per_minute)
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
