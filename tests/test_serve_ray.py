"""`realitycheck serve --ray`: the same app on Ray Serve gives the local record and p_fake.

Starts a local Ray (2 CPUs) and deploys the app with two model replicas on an ephemeral port; the
answers must equal `predict --json`'s (within 1e-6) for several images in one request (batched
across replicas by @serve.batch), and the ingress's limits must still answer.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]')")

from realitycheck.serving import access, cli  # noqa: E402
from realitycheck.serving.api.config import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_server(tiny_checkpoint):
    import ray
    from ray import serve

    from realitycheck.serving import distributed
    from realitycheck.serving.api import ray_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ServeSettings(port=port, max_body_bytes=2_000_000,
                             access=access.load_settings(env={}, cwd=ROOT))
    distributed.connect(num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(ray_app.build(settings, weights=str(tiny_checkpoint), replicas=2, max_batch_size=4),
              name="realitycheck-test", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
def test_ray_serve_gives_the_cli_numbers(ray_server, tiny_checkpoint, capsys):
    photos = [ROOT / "sample_images" / n for n in ("grace_hopper.jpg", "astronaut_eileen_collins.jpg")]
    files = [("files", (p.name, p.read_bytes())) for p in photos * 2]
    r = httpx.post(ray_server + "/v1/predict", files=files, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["served_by"] == "ray serve" and len(body["model"]["sha256"]) == 64
    capsys.readouterr()
    assert cli.main(["predict", *map(str, photos), "--json", "--weights", str(tiny_checkpoint), "--no-progress"]) == 0
    want = json.loads(capsys.readouterr().out)
    for got, exp in zip(body["results"], want * 2):
        assert abs(got["p_fake"] - exp["p_fake"]) <= 1e-6
        assert got["face_boxes"] == exp["face_boxes"] and got["provenance"] == exp["provenance"]


@pytest.mark.slow
def test_ray_serve_keeps_the_limits_and_explains(ray_server):
    r = httpx.post(ray_server + "/v1/predict", files={"files": ("big.bin", b"x" * 3_000_000)}, timeout=60)
    assert r.status_code == 413
    r = httpx.post(ray_server + "/v1/predict", files={"files": ("a.txt", b"not an image")}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["kind"] == "bad_image"
    r = httpx.post(ray_server + "/v1/explain", files={"file": ("a.txt", b"not an image")}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["kind"] == "bad_image"
    jpg = (ROOT / "sample_images" / "grace_hopper.jpg").read_bytes()
    r = httpx.post(ray_server + "/v1/explain", files={"file": ("g.jpg", jpg)}, data={"format": "json"}, timeout=120)
    assert r.status_code == 200 and r.json()["overlay_png_base64"]
    assert "realitycheck_requests_total" in httpx.get(ray_server + "/metrics", timeout=10).text
