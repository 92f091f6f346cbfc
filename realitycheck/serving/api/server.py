"""Running the API: uvicorn in this process (`run_local`), with JSON logs and a graceful shutdown.

On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets the requests in flight (and those
already queued) finish for up to `graceful_timeout_s`, then runs the app's shutdown.
"""

from __future__ import annotations

import logging
import sys

from realitycheck.serving.api.config import ServeSettings


def configure_logging(level: str = "info") -> None:
    """The service's log lines as JSON on stderr (one object per line; collectors parse them as they are)."""
    from realitycheck.serving.api.app import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("realitycheck.serving.api", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False


def run_local(settings: ServeSettings, load, *, log_level: str = "info") -> None:
    """Serve `load()`'s Classifier on settings.host:port until SIGTERM / Ctrl-C."""
    import uvicorn

    from realitycheck.serving.api.app import create_app
    from realitycheck.serving.api.scoring import LocalScorer

    configure_logging(log_level)
    app = create_app(settings, LocalScorer(load))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, log_config=None,
                            log_level=log_level, timeout_graceful_shutdown=settings.graceful_timeout_s,
                            limit_concurrency=None, server_header=False)
    uvicorn.Server(config).run()
