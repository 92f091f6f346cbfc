"""One JSON shape for every error the API answers, ``{"error": {"kind", "message", "request_id"}}``,
with no server path in the message; `add_error_handlers` installs it on an app."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from realitycheck.serving import access
from realitycheck.serving.api.deps import get_metrics, log
from realitycheck.serving.api.limits import Refused

_REDACT = access.AccessSettings(public=True)  # errors never show server paths, in any mode


def safe(text: str) -> str:
    """A message with absolute server paths reduced to their last component."""
    return access.redact(str(text), _REDACT)


def error_body(kind: str, message: str, request_id: str | None) -> dict:
    return {"error": {"kind": kind, "message": safe(message), "request_id": request_id}}


def error_response(request: Request, status: int, kind: str, message: str, retry_after=None) -> JSONResponse:
    get_metrics(request).inc("realitycheck_errors_total", kind=kind)
    rid = request.scope["state"].get("request_id")
    headers = {"X-Request-ID": rid} if rid else {}  # also on a 500, which leaves outside the Guard
    if retry_after:
        headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(error_body(kind, message, rid), status, headers=headers)


async def on_refused(request: Request, exc: Refused):
    return error_response(request, exc.status, exc.kind, exc.message, exc.retry_after)


async def on_invalid(request: Request, exc: RequestValidationError):
    fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors()})
    return error_response(request, 400, "bad_request", "missing or invalid field(s): " + ", ".join(fields))


async def on_http(request: Request, exc: StarletteHTTPException):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    message = {404: "no such endpoint (see /docs)", 405: "method not allowed here"}.get(exc.status_code,
                                                                                        str(exc.detail))
    return error_response(request, exc.status_code, kind, message)


async def on_bug(request: Request, exc: Exception):
    log.error("internal error", exc_info=exc, extra={"fields": {"request_id": request.scope["state"].get("request_id")}})
    return error_response(request, 500, "internal", "internal error; the server log has the details")


def add_error_handlers(app: FastAPI) -> None:
    """Refusals, invalid fields, 404/405 and bugs (500, traceback only in the log) all answer in the one shape."""
    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_bug)
