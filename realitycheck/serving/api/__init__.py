"""The HTTP API (`realitycheck serve`): the CLI's verdicts for other programs, with production limits.

| module | owns |
|---|---|
| `config` | the service's settings (`[serve]` in realitycheck.toml + environment): keys (hashed), limits, queue |
| `limits` | admission (a bounded queue answering 503 + Retry-After), per-key rate limits (429), body size (413) |
| `metrics` | Prometheus text exposition: requests, latency histogram, errors by kind, queue depth, images scored |
| `scoring` | where images are scored: in this process (`LocalScorer`) or on Ray Serve replicas (`ray_app`) |
| `app` | the FastAPI app (`create_app` assembles it): request ids, body limit, JSON log lines |
| `routes` | one APIRouter per concern: /v1/predict, /v1/explain, /v1/models, /healthz, /readyz, /metrics |
| `deps` | what the endpoints share, as dependencies: settings, scorer, limits, metrics (on `app.state`), the caller |
| `errors` | one JSON error shape, no server paths |
| `ray_app` | the same app on Ray Serve: model replicas with `@serve.batch` |

Nothing here decides a verdict: every image goes through `inference.Classifier` and
`records.prediction_record`, exactly as `predict --json` does.
"""
