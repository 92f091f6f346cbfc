"""The API's endpoints, one APIRouter per concern; `create_app` includes them in `ROUTERS`' order.

| module | endpoints |
|---|---|
| `operations` | /healthz, /readyz, /metrics (no API key: probes and scrapers call them) |
| `models` | /v1/models |
| `predict` | /v1/predict (and each judgement into the case database) |
| `explain` | /v1/explain |
"""

from realitycheck.serving.api.routes import explain, models, operations, predict

ROUTERS = (operations.router, models.router, predict.router, explain.router)
