"""The same API on Ray Serve: `realitycheck serve --ray [--replicas N]` (joins $RAY_ADDRESS, else a local Ray).

    HTTP ─► Ray Serve proxy ─► Ingress (1 replica: the FastAPI app of `app.create_app`, with its
                                keys, limits, queue, metrics)
                                  └─► ModelReplica × N (each loads the checkpoint once; single images
                                      from many requests are batched with @serve.batch and scored by
                                      `scoring.predict_records`, the function the local server runs)

So an answer is the same record with the same p_fake whichever way it was served. The ingress's
queue bounds what waits in front of the replicas (503 + Retry-After beyond it); its metrics count
that ingress (one replica) only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from realitycheck.serving.api.config import ServeSettings


class RayServeUnavailableError(RuntimeError):
    """Ray Serve is not installed or the cluster cannot be reached; the message says which."""


class RayScorer:
    """A `LocalScorer` look-alike whose work runs on the ModelReplica deployment."""

    kind = "ray"

    def __init__(self, handle):
        self.handle = handle
        self.info: dict | None = None
        self.problem: str | None = None
        self._task = None

    def start(self) -> None:
        self._ensure()

    def _ensure(self) -> None:
        if self.info is None and self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._task = loop.create_task(self._fetch())

    async def _fetch(self) -> None:
        try:
            self.info = await self.handle.info.remote()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz
            self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        finally:
            self._task = None

    @property
    def ready(self) -> bool:
        self._ensure()
        return self.info is not None

    def model_info(self) -> dict:
        return dict(self.info or {}, served_by="ray serve")

    async def predict(self, items: list[tuple[bytes, str]]) -> list[dict]:
        # one call per image: @serve.batch gathers them, across requests, into the replicas' batches
        return list(await asyncio.gather(*(self.handle.predict.remote(item) for item in items)))

    async def explain(self, data: bytes, name: str, method: str, target_class: str | None, with_png: bool) -> dict:
        return await self.handle.explain.remote(data, name, method, target_class, with_png)

    def close(self) -> None:
        pass


def build(settings: ServeSettings, *, weights: str | None, engine: str = "auto", threshold: float | None = None,
          replicas: int = 1, max_batch_size: int = 8, batch_wait_s: float = 0.005):
    """The Serve application (not started): ingress + model replicas."""
    from ray import serve

    from realitycheck.serving.api.limits import Refused

    @serve.deployment(name="ModelReplica", num_replicas=replicas, ray_actor_options={"num_cpus": 1},
                      max_ongoing_requests=max(2 * max_batch_size, 8))
    class ModelReplica:
        def __init__(self):
            from realitycheck.model.inference import load_classifier
            from realitycheck.serving.api.scoring import _sha

            self.clf = load_classifier(weights, engine=engine, threshold=threshold, precision="auto")
            self.sha = _sha(self.clf)
            self.predict.set_max_batch_size(max_batch_size)

        def info(self) -> dict:
            from realitycheck.serving import records

            return records.model_record(self.clf, self.sha)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=batch_wait_s)
        async def predict(self, items: list[tuple[bytes, str]]) -> list[dict]:
            from realitycheck.serving.api.scoring import predict_records

            return await asyncio.to_thread(predict_records, self.clf, items)

        async def explain(self, data, name, method, target_class, with_png) -> dict:
            from realitycheck.serving.api.scoring import explain_record

            try:
                return await asyncio.to_thread(explain_record, self.clf, data, name, method, target_class, with_png)
            except Refused as exc:  # crosses the process boundary as data, raised again at the ingress
                return {"_refused": [exc.status, exc.kind, exc.message]}

    class _Unwrap:
        """Re-raise a replica's refusal at the ingress (Ray wraps exceptions across processes)."""

        def __init__(self, scorer):
            self.scorer = scorer

        def __getattr__(self, name):
            return getattr(self.scorer, name)

        async def explain(self, *a):
            out = await self.scorer.explain(*a)
            if "_refused" in out:
                raise Refused(*out["_refused"])
            return out

    # beyond what the ingress holds, Serve's proxy answers 503 itself instead of queueing without bound
    @serve.deployment(name="Ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
                      max_ongoing_requests=max(64, settings.queue + settings.workers + 16),
                      max_queued_requests=max(64, settings.queue + settings.workers + 16))
    @serve.ingress()
    class Ingress:
        def __init__(self, model_handle):
            self.model_handle = model_handle

        def __serve_build_asgi_app__(self):
            from realitycheck.serving.api.app import create_app

            return create_app(settings, _Unwrap(RayScorer(self.model_handle)))

    return Ingress.bind(ModelReplica.bind())


def run(settings: ServeSettings, *, weights: str | None, engine: str = "auto", threshold: float | None = None,
        replicas: int = 1, address: str | None = None, max_batch_size: int = 8) -> None:
    """Start (or join) Ray, deploy the app on settings.host:port, serve until SIGTERM / Ctrl-C, then drain."""
    import sys

    try:
        from ray import serve
    except ImportError:
        raise RayServeUnavailableError("--ray needs Ray Serve: pip install 'ray[serve]==2.60.0' "
                                       "(in requirements.txt)") from None
    import ray

    from realitycheck.serving import distributed

    try:
        distributed.connect(address)
    except distributed.RayUnavailableError as exc:
        raise RayServeUnavailableError(str(exc)) from None
    started_ray = not (address or os.environ.get("RAY_ADDRESS"))
    # the workers are sized for a fixed batch of images: the queue/limits of the ingress stay in force
    app = build(settings, weights=os.path.abspath(weights) if weights else None, engine=engine, threshold=threshold,
                replicas=replicas, max_batch_size=max_batch_size)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(app, name="realitycheck", route_prefix="/")
    print(f"realitycheck: serving on http://{settings.host}:{settings.port} with Ray Serve, {replicas} model "
          "replica(s) (API docs at /docs)", file=sys.stderr, flush=True)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        serve.shutdown()  # replicas finish their requests in flight (Serve's graceful shutdown) before they stop
        if started_ray:
            ray.shutdown()
