"""The HTTP API (`realitycheck serve`): every endpoint, the CLI's numbers, and the limits.

httpx talks to the ASGI app in-process. The model is the small test Lite0 with its head scaled up
(as in test_one_number), so p_fake moves when the pixels or the arithmetic move; the shipped model
is compared too when it is present. Overload is made deterministic with a fake scorer that blocks
until the test lets it go.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from realitycheck.model.inference import Classifier, default_weights_path
from realitycheck.serving import access, cli
from realitycheck.serving.api.app import create_app
from realitycheck.serving.api.config import (
    ServeSettings,
    check_exposure,
    hash_key,
    load_serve_settings,
)
from realitycheck.serving.api.scoring import LocalScorer
from tests.helpers import save_sharp_lite0

ROOT = Path(__file__).resolve().parent.parent
KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-photos")
    jpg, png = root / "hopper.jpg", root / "collins.png"
    Image.open(ROOT / "sample_images" / "grace_hopper.jpg").convert("RGB").save(jpg, quality=90)
    Image.open(ROOT / "sample_images" / "astronaut_eileen_collins.jpg").convert("RGB").resize((300, 360)).save(png)
    return {"jpg": jpg, "png": png, "root": root}


@pytest.fixture(scope="module")
def sharp(tmp_path_factory, photos) -> Path:
    """A Lite0 whose p_fake is sensitive (large logits, the JPEG near 0.5)."""
    return save_sharp_lite0(tmp_path_factory.mktemp("w") / "sharp.pt", photos["jpg"])


@pytest.fixture(scope="module")
def sharp_clf(sharp) -> Classifier:
    return Classifier.from_file(sharp, precision="fp32")


def local_settings(**kw) -> ServeSettings:
    return ServeSettings(access=access.load_settings(env={}, cwd=kw.pop("cwd", os.getcwd())), **kw)


def call(app, method: str, url: str, **kw) -> httpx.Response:
    """One request to the app, in-process (the app's lifespan is not needed: scorers are given loaded)."""
    async def go():  # a bug's exception is re-raised after the 500 went out (for the server's log): not here
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.request(method, url, **kw)
    return asyncio.run(go())


def cli_json(path: Path, weights: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["predict", str(path), "--json", "--weights", str(weights), "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)[0]


def assert_no_server_path(text: str) -> None:
    for p in (str(ROOT), os.getcwd(), "/tmp/", "/work/", "/home/", "/usr/"):
        assert p not in text, f"server path {p} in: {text}"


# -- the CLI's numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_predict_gives_the_cli_record(kind, photos, sharp, sharp_clf, capsys):
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    path = photos[kind]
    r = call(app, "POST", "/v1/predict", files={"files": (path.name, path.read_bytes(), "image/*")})
    assert r.status_code == 200, r.text
    body = r.json()
    got = body["results"][0]
    want = cli_json(path, sharp, capsys)
    assert abs(got["p_fake"] - want["p_fake"]) <= 1e-6
    assert 0.02 < want["p_fake"] < 0.98  # a number that moves, not a saturated one
    for key in ("label", "threshold", "faces", "face_boxes", "face_p_fake", "unfamiliar", "region", "provenance"):
        assert got[key] == want[key], key
    assert set(want) <= set(got)  # every field predict --json has (a generator guess included, once it exists)
    assert got["path"] == path.name
    assert body["model"]["id"] == "sharp-lite0" and len(body["model"]["sha256"]) == 64
    assert body["model"]["file"] == "sharp.pt" and body["failed"] == 0 and body["seconds"] > 0
    assert_no_server_path(json.dumps(body["model"]))


def test_predict_several_images_and_a_server_path(photos, sharp_clf, capsys, sharp):
    app = create_app(local_settings(cwd=photos["root"]), LocalScorer.of(sharp_clf))
    r = call(app, "POST", "/v1/predict", files=[("files", ("a.png", photos["png"].read_bytes(), "image/png"))],
             data={"paths": [str(photos["jpg"])]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["path"] for x in res] == ["a.png", str(photos["jpg"])]
    assert abs(res[1]["p_fake"] - cli_json(photos["jpg"], sharp, capsys)["p_fake"]) <= 1e-6


@pytest.mark.skipif(not default_weights_path().is_file(), reason="the shipped model (weights/) is not present")
def test_shipped_model_same_number_as_cli(photos, capsys):
    """The real path: aligned faces, mirror averaging, the exported engine, the unfamiliar check."""
    clf = Classifier.from_default()
    app = create_app(local_settings(), LocalScorer.of(clf))
    for kind in ("jpg", "png"):
        path = photos[kind]
        got = call(app, "POST", "/v1/predict", files={"files": (path.name, path.read_bytes())}).json()["results"][0]
        want = cli_json(path, default_weights_path(), capsys)
        assert abs(got["p_fake"] - want["p_fake"]) <= 1e-6
        assert got["face_p_fake"] == pytest.approx(want["face_p_fake"], abs=1e-6)
        assert got["unfamiliar"] == want["unfamiliar"] and got["label"] == want["label"]


# -- bad input -------------------------------------------------------------------------------------

def test_non_image_is_400_without_server_paths(sharp_clf):
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    r = call(app, "POST", "/v1/predict", files={"files": ("notes.pdf", b"%PDF-1.4 not an image", "application/pdf")})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["kind"] == "bad_image" and "PDF" in err["message"]
    r = call(app, "POST", "/v1/predict")  # no image at all
    assert r.status_code == 400 and r.json()["error"]["kind"] == "bad_request"
    r = call(app, "POST", "/v1/predict", data={"paths": ["/etc/passwd"]})  # outside the roots
    assert r.status_code == 403 and r.json()["error"]["kind"] == "path_refused"
    r = call(app, "POST", "/v1/predict", data={"paths": [str(ROOT / "nope" / "missing.jpg")]})
    assert r.status_code == 403
    for resp in (r, call(app, "GET", "/no/such/endpoint")):
        assert_no_server_path(resp.text)
        assert "Traceback" not in resp.text


def test_mixed_good_and_bad_images_answer_each(photos, sharp_clf):
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    r = call(app, "POST", "/v1/predict", files=[("files", ("ok.jpg", photos["jpg"].read_bytes())),
                                                ("files", ("bad.jpg", b"\xff\xd8\xff garbage"))])
    assert r.status_code == 200
    res = r.json()["results"]
    assert res[0]["p_fake"] is not None and res[1]["error"] and r.json()["failed"] == 1


def test_body_and_pixel_limits(photos, sharp_clf):
    app = create_app(local_settings(max_body_bytes=20_000, max_pixels=50_000), LocalScorer.of(sharp_clf))
    big = photos["jpg"].read_bytes()
    assert len(big) > 20_000
    r = call(app, "POST", "/v1/predict", files={"files": ("big.jpg", big)})
    assert r.status_code == 413 and r.json()["error"]["kind"] == "body_too_large"

    async def chunked():  # no Content-Length: the limit holds while the body streams in
        async def body():  # a well-formed multipart upload whose file part outgrows the limit
            yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
            for _ in range(30):
                yield b"x" * 1000
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.post("/v1/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert asyncio.run(chunked()).status_code == 413

    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (120, 90, 60)).save(buf, "PNG")  # 90,000 px: over this service's 50,000
    r = call(app, "POST", "/v1/predict", files={"files": ("wide.png", buf.getvalue())})
    assert r.status_code == 400 and "over this service's limit" in r.json()["results"][0]["error"]


# -- keys, rates, overload -------------------------------------------------------------------------

def test_api_keys(photos, sharp_clf):
    app = create_app(local_settings(key_hashes={"alice": hash_key(KEY)}), LocalScorer.of(sharp_clf))
    files = {"files": ("a.jpg", photos["jpg"].read_bytes())}
    assert call(app, "POST", "/v1/predict", files=files).status_code == 401
    assert call(app, "POST", "/v1/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert call(app, "GET", "/v1/models").status_code == 401
    assert call(app, "POST", "/v1/predict", files=files, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert call(app, "GET", "/v1/models", headers={"X-API-Key": KEY}).status_code == 200
    assert call(app, "GET", "/healthz").status_code == 200  # probes need no key


def test_settings_store_hashes_and_refuse_an_open_network_service(tmp_path):
    (tmp_path / "realitycheck.toml").write_text(f'[serve]\nqueue = 3\n[serve.keys]\nalice = "{hash_key(KEY)}"\n')
    s = load_serve_settings(env={}, cwd=tmp_path)
    assert s.queue == 3 and s.key_name(KEY) == "alice" and s.key_name("other") is None
    (tmp_path / "realitycheck.toml").write_text(f'[serve.keys]\nalice = "{KEY}"\n')  # a key, not its hash
    with pytest.raises(ValueError, match="SHA-256"):
        load_serve_settings(env={}, cwd=tmp_path)
    assert check_exposure(ServeSettings(host="0.0.0.0")) is not None
    assert check_exposure(ServeSettings(host="127.0.0.1")) is None
    assert check_exposure(ServeSettings(host="0.0.0.0", key_hashes={"a": hash_key(KEY)})) is None
    public = load_serve_settings(env={"REALITYCHECK_PUBLIC": "1"}, cwd=tmp_path / "nowhere")
    assert public.rate_per_minute == 30 and not public.slow_methods and public.access.public


def test_rate_limit_per_key(photos, sharp_clf):
    app = create_app(local_settings(rate_per_minute=2), LocalScorer.of(sharp_clf))
    files = [("files", ("a.jpg", photos["jpg"].read_bytes())), ("files", ("b.png", photos["png"].read_bytes()))]
    assert call(app, "POST", "/v1/predict", files=files).status_code == 200
    r = call(app, "POST", "/v1/predict", files=files[:1])
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["kind"] == "rate_limited"


class BlockingScorer:
    """Scores nothing until `release` is set: fills the queue deterministically."""

    kind, ready, sha256 = "fake", True, None

    def __init__(self):
        self.release = threading.Event()
        self.started = 0

    def start(self):
        pass

    def close(self):
        pass

    def model_info(self):
        return {"id": "blocking-fake"}

    async def predict(self, items):
        from anyio import to_thread

        self.started += 1
        await to_thread.run_sync(self.release.wait, 30)
        return [{"path": n, "p_fake": 0.25, "label": "real", "error": None} for _, n in items]


def test_full_queue_answers_503_with_retry_after_and_recovers():
    scorer = BlockingScorer()
    app = create_app(local_settings(workers=1, queue=2), scorer)
    files = {"files": ("a.jpg", b"bytes")}

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            held = [asyncio.create_task(c.post("/v1/predict", files=files)) for _ in range(3)]  # 1 running + 2 waiting
            while app.state.admission.running + app.state.admission.waiting < 3:
                await asyncio.sleep(0.01)
            over = [await c.post("/v1/predict", files=files) for _ in range(2)]
            metrics_busy = (await c.get("/metrics")).text
            scorer.release.set()
            done = await asyncio.gather(*held)
            after = await c.post("/v1/predict", files=files)
            return over, metrics_busy, done, after, (await c.get("/metrics")).text

    over, busy, done, after, metrics = asyncio.run(scenario())
    assert [r.status_code for r in over] == [503, 503]
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["kind"] == "overloaded" for r in over)
    assert "realitycheck_queue_depth 2" in busy and "realitycheck_in_flight 1" in busy
    assert [r.status_code for r in done] == [200, 200, 200]  # every queued request was answered
    assert after.status_code == 200  # and the service recovered
    assert 'realitycheck_errors_total{kind="overloaded"} 2' in metrics
    assert 'realitycheck_requests_total{endpoint="/v1/predict",status="503"} 2' in metrics
    assert 'realitycheck_requests_total{endpoint="/v1/predict",status="200"} 4' in metrics


# -- the other endpoints ---------------------------------------------------------------------------

def test_health_ready_models_and_metrics(photos, sharp_clf, sharp, tmp_path, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(sharp.parent))
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return sharp_clf

    scorer = LocalScorer(slow_load)
    app = create_app(local_settings(), scorer)
    scorer.start()
    assert call(app, "GET", "/healthz").json() == {"status": "alive"}
    r = call(app, "GET", "/readyz")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = call(app, "POST", "/v1/predict", files={"files": ("a.jpg", photos["jpg"].read_bytes())})
    assert r.status_code == 503 and r.headers["Retry-After"]
    release.set()
    assert scorer.wait_ready(30)
    assert call(app, "GET", "/readyz").json()["status"] == "ready"
    models_body = call(app, "GET", "/v1/models").json()
    assert models_body["loaded"]["id"] == "sharp-lite0"
    assert_no_server_path(json.dumps(models_body))
    for _ in range(2):
        call(app, "POST", "/v1/predict", files={"files": ("a.jpg", photos["jpg"].read_bytes())})
    call(app, "POST", "/v1/predict", files={"files": ("x.txt", b"hello")})
    text = call(app, "GET", "/metrics").text
    label = call(app, "POST", "/v1/predict", files={"files": ("a.jpg", photos["jpg"].read_bytes())}).json()["results"][0]["label"]
    text = call(app, "GET", "/metrics").text
    assert f'realitycheck_images_total{{label="{label}"}} 3' in text
    assert 'realitycheck_images_total{label="error"} 1' in text
    assert 'realitycheck_requests_total{endpoint="/v1/predict",status="200"} 3' in text
    assert 'realitycheck_errors_total{kind="model_loading"} 1' in text
    assert 'realitycheck_errors_total{kind="bad_image"} 1' in text
    assert 'realitycheck_request_seconds_count{endpoint="/v1/predict"} 5' in text
    assert "realitycheck_model_loaded 1" in text


def test_failed_model_load_is_reported_without_paths(tmp_path):
    def broken():
        raise FileNotFoundError(f"no trained weights at {tmp_path}/weights/x.pt: train a model")

    scorer = LocalScorer(broken)
    app = create_app(local_settings(), scorer)
    scorer.start()
    scorer.wait_ready(10)
    r = call(app, "GET", "/readyz")
    assert r.status_code == 503 and r.json()["status"] == "failed" and "x.pt" in r.json()["problem"]
    assert_no_server_path(r.text)


def test_explain_png_and_json(photos, sharp_clf, capsys, sharp):
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    jpg = photos["jpg"].read_bytes()
    r = call(app, "POST", "/v1/explain", files={"file": ("a.jpg", jpg)}, data={"method": "gradcam", "class": "fake"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] > 80
    want = cli_json(photos["jpg"], sharp, capsys)["p_fake"]
    assert abs(float(r.headers["X-RealityCheck-P-Fake"]) - want) <= 1e-6
    r = call(app, "POST", "/v1/explain", files={"file": ("a.jpg", jpg)}, data={"format": "json"})
    body = r.json()
    assert r.status_code == 200 and body["method"] == "gradcam" and body["where"]
    assert body["explained_class"] == body["label"]  # default: the predicted class
    assert Image.open(io.BytesIO(__import__("base64").b64decode(body["overlay_png_base64"]))).format == "PNG"
    r = call(app, "POST", "/v1/explain", files={"file": ("a.jpg", jpg)}, data={"method": "scorecam"})
    assert r.status_code == 403 and r.json()["error"]["kind"] == "slow_method_refused"
    r = call(app, "POST", "/v1/explain", files={"file": ("a.jpg", jpg)}, data={"method": "nope"})
    assert r.status_code == 400
    r = call(app, "POST", "/v1/explain", files={"file": ("a.txt", b"plain text")})
    assert r.status_code == 400 and r.json()["error"]["kind"] == "bad_image"


def test_public_mode_refuses_server_paths(photos, sharp_clf):
    settings = ServeSettings(access=access.load_settings(env={"REALITYCHECK_PUBLIC": "1"}, cwd=photos["root"]))
    app = create_app(settings, LocalScorer.of(sharp_clf))
    r = call(app, "POST", "/v1/predict", data={"paths": [str(photos["jpg"])]})
    assert r.status_code == 403 and "turned off" in r.json()["error"]["message"]
    assert_no_server_path(r.text)


def test_docs_are_served(sharp_clf):
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    spec = call(app, "GET", "/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert call(app, "GET", "/docs").status_code == 200


def test_graceful_shutdown_finishes_the_request_in_flight():
    """uvicorn told to stop while a request is being scored: the client still gets its answer."""
    import socket
    import time

    import uvicorn

    scorer = BlockingScorer()
    app = create_app(local_settings(), scorer)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=20))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    out = {}

    def client():
        out["r"] = httpx.post(f"http://127.0.0.1:{port}/v1/predict", files={"files": ("a.jpg", b"x")}, timeout=30)

    c = threading.Thread(target=client)
    c.start()
    for _ in range(200):
        if scorer.started:
            break
        time.sleep(0.05)
    server.should_exit = True  # what SIGTERM does
    time.sleep(0.3)
    scorer.release.set()
    c.join(30)
    t.join(30)
    assert out["r"].status_code == 200 and out["r"].json()["results"][0]["p_fake"] == 0.25
    assert not t.is_alive()


def test_cli_hash_key_and_refusal(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert cli.main(["serve", "--hash-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_key(KEY)
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "without API keys" in capsys.readouterr().err


def test_file_url_under_the_roots(photos, sharp_clf):
    app = create_app(local_settings(cwd=photos["root"]), LocalScorer.of(sharp_clf))
    r = call(app, "POST", "/v1/predict", data={"paths": [photos["png"].as_uri()]})
    assert r.status_code == 200 and r.json()["results"][0]["p_fake"] is not None


class BrokenScorer(BlockingScorer):
    async def predict(self, items):
        raise RuntimeError("/srv/secret/models/x.pt exploded")


def test_a_bug_is_a_500_without_details_and_is_logged(caplog):
    from realitycheck.serving.api.app import JsonLogFormatter

    app = create_app(local_settings(), BrokenScorer())
    with caplog.at_level("INFO", logger="realitycheck.serving.api"):
        r = call(app, "POST", "/v1/predict", files={"files": ("a.jpg", b"x")})
    assert r.status_code == 500 and r.json()["error"]["kind"] == "internal"
    assert "/srv/secret" not in r.text and "exploded" not in r.text
    lines = [json.loads(JsonLogFormatter().format(rec)) for rec in caplog.records]
    req = [x for x in lines if x["event"] == "request"]
    assert req and req[-1]["status"] == 500 and req[-1]["endpoint"] == "/v1/predict"
    assert req[-1]["request_id"] == r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert any(x["event"] == "internal error" and "exploded" in x.get("traceback", "") for x in lines)


def test_cli_ray_admits_enough_requests_to_batch(monkeypatch):
    """With --ray the ingress lets replicas x batch size requests through, or @serve.batch gets one at a time."""
    from realitycheck.serving.api import ray_app

    seen = {}
    monkeypatch.setattr(ray_app, "run", lambda settings, **kw: seen.update(settings=settings, **kw))
    assert cli.main(["serve", "--ray", "--replicas", "3", "--max-batch-size", "4"]) == 0
    assert seen["settings"].workers == 12 and seen["replicas"] == 3 and seen["max_batch_size"] == 4
    assert cli.main(["serve", "--ray", "--workers", "5"]) == 0
    assert seen["settings"].workers == 5


def test_api_judgements_become_cases_and_public_mode_stores_none(photos, sharp_clf, tmp_path, monkeypatch):
    from realitycheck.analysis import cases

    monkeypatch.setenv("REALITYCHECK_DB", str(tmp_path / "api-cases.db"))
    path = photos["jpg"]
    app = create_app(local_settings(), LocalScorer.of(sharp_clf))
    for _ in range(2):  # the same image twice: one case, two judgements
        assert call(app, "POST", "/v1/predict", files={"files": (path.name, path.read_bytes(), "image/*")}).status_code == 200
    rows = cases.open_store().cases()
    assert len(rows) == 1 and int(rows.iloc[0]["judgements"]) == 2
    assert rows.iloc[0]["origin"] == "api" if "origin" in rows else True
    monkeypatch.delenv("REALITYCHECK_DB")
    assert cases.open_store(public=True) is None  # public mode: no database unless the operator names one
