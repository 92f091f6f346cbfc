"""Ray Data folder scoring: the same per-image results and metrics as the local path, faults survived.

One local 2-CPU Ray serves the module (starting Ray takes seconds). Each run loads the tiny
checkpoint in its model actors, so these are the slow tests of the suite (~10 s each here).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realitycheck.analysis import evaluate
from realitycheck.model.inference import Classifier
from realitycheck.serving import cli, distributed
from tests.helpers import REPO_ROOT, SAMPLE_IMAGES, cli_env

try:
    import ray
except ImportError:  # pragma: no cover - requirements.txt pins ray[data]
    ray = None

N_PER_CLASS = 14
BROKEN = ["fake/broken.jpg", "real/empty.png"]


@pytest.fixture(scope="module")
def local_ray():
    if ray is None:
        pytest.skip("ray[data] is not installed (requirements.txt pins it)")
    distributed.connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, sample_face) -> Path:
    """Small noise images (no face), one real portrait (a face), and two broken files."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(1)
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(N_PER_CLASS):
            arr = (rng.random((60 + i, 90, 3)) * 255).astype("uint8")
            Image.fromarray(arr).save(root / label / f"{label}_{i:02d}.jpg", quality=85)
    shutil.copy(sample_face, root / "real" / "portrait.jpg")
    (root / BROKEN[0]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / BROKEN[1]).write_bytes(b"")
    return root


def _run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().out


def _table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"error": str}, keep_default_na=True)
    df["error"] = df["error"].fillna("")
    return df.sort_values("path").reset_index(drop=True)


@pytest.mark.slow
def test_evaluate_ray_matches_the_local_path_and_resumes(local_ray, labelled, tiny_checkpoint, tmp_path, capsys):
    common = ["evaluate", labelled, "--weights", tiny_checkpoint, "--precision", "fp32", "--batch-size", 4,
              "--json", "--no-progress"]
    code, out = _run_cli(capsys, *common, "--workers", 0, "--csv", tmp_path / "local.csv")
    assert code == 1  # the broken files failed (README: exit 1 when some inputs failed)
    local = json.loads(out)
    code, out = _run_cli(capsys, *common, "--ray", "--csv", tmp_path / "ray.csv", "--parquet", tmp_path / "ray.parquet")
    assert code == 1
    remote = json.loads(out)

    # the CSV is written as results arrive, in the local run's order
    assert pd.read_csv(tmp_path / "ray.csv")["path"].tolist() == pd.read_csv(tmp_path / "local.csv")["path"].tolist()
    a, b = _table(tmp_path / "local.csv"), _table(tmp_path / "ray.csv")
    assert list(b.columns) == list(a.columns) and set(evaluate.TABLE_COLUMNS) <= set(b.columns)  # the local schema
    assert len(b) == 2 * N_PER_CLASS + 1 + len(BROKEN) and b["path"].is_unique
    assert a["path"].tolist() == b["path"].tolist()
    np.testing.assert_allclose(b["p_fake"].to_numpy(float), a["p_fake"].to_numpy(float), atol=1e-5)
    for col in [c for c in a.columns if c not in ("path", "p_fake", "seconds", "ood_score")]:
        assert a[col].astype(object).fillna(-1).tolist() == b[col].astype(object).fillna(-1).tolist(), col
    assert b.loc[b["path"].str.endswith("portrait.jpg"), "faces"].item() == 1  # the face check ran
    assert sorted(remote["failed"]) == sorted(local["failed"]) == sorted(str(labelled / x) for x in BROKEN)
    assert remote["failed_reasons"] == local["failed_reasons"]
    parquet = pd.read_parquet(tmp_path / "ray.parquet")
    assert list(parquet.columns) == list(b.columns) and len(parquet) == len(b)

    # resume: an interrupted Ray run (header, 10 finished rows, a torn last line) scores only the rest
    lines = (tmp_path / "ray.csv").read_text().splitlines(keepends=True)
    (tmp_path / "part.csv").write_text("".join(lines[:11]) + lines[11][:15])
    clf = Classifier.from_file(tiny_checkpoint, precision="fp32", batch_size=4)
    asked, said = [], []
    resumed = evaluate.evaluate_folder(clf, labelled, csv_path=tmp_path / "part.csv", resume=True,
                                       progress=lambda done, total: asked.append(total), log=said.append,
                                       predict_stream=distributed.predict_stream(clf))
    assert any(m.startswith("resuming: 10 images already in") for m in said) and asked[-1] == len(b) - 10
    assert resumed.table["path"].tolist() == [str(p) for p, _ in evaluate.discover(labelled)]  # local order, each once
    again = resumed.table.sort_values("path").reset_index(drop=True)
    np.testing.assert_allclose(again["p_fake"].to_numpy(float), b["p_fake"].to_numpy(float), atol=1e-5)
    assert _table(tmp_path / "part.csv")["path"].tolist() == b["path"].tolist()

    volatile = {"seconds", "images_per_second"}
    assert set(remote) == set(local)
    def same(x, y) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            return x == pytest.approx(y, abs=1e-5, nan_ok=True)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
        return x == y

    for key in set(local) - volatile:
        assert same(remote[key], local[key]), key


@pytest.mark.slow
def test_predict_ray_reads_a_listing_file_and_prints_like_local(local_ray, labelled, tiny_checkpoint, tmp_path,
                                                                 capsys):
    """A face-aligned card: one view per face, so images reach the actors with 0, 1 or 2 face views."""
    from dataclasses import replace

    from realitycheck.model import checkpoints

    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    aligned = checkpoints.save_checkpoint(tmp_path / "aligned.pt", model,
                                          replace(card, preprocessing=replace(card.preprocessing, align="face")))
    portrait = labelled / "real" / "portrait.jpg"
    with Image.open(portrait) as a, Image.open(SAMPLE_IMAGES / "astronaut_eileen_collins.jpg") as b:
        b = b.convert("RGB").resize((round(b.width * a.height / b.height), a.height))
        pair = Image.new("RGB", (a.width + b.width, a.height))
        pair.paste(a.convert("RGB"), (0, 0)); pair.paste(b, (a.width, 0))
        pair.save(tmp_path / "two_faces.jpg", quality=92)
    files = [portrait, tmp_path / "two_faces.jpg", labelled / "fake" / "fake_03.jpg", labelled / BROKEN[0]]
    listing = tmp_path / "inputs.txt"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()  # a file that declares how it was made: read where its bytes are, not on the driver
    info.add_text("parameters", "portrait photo\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: v1-5-pruned-emaonly")
    with Image.open(portrait) as a:
        a.convert("RGB").save(tmp_path / "declared.png", pnginfo=info)
    uris = [portrait.resolve().as_uri(), "nosuch://bucket/x.jpg", (tmp_path / "declared.png").resolve().as_uri()]
    # file:// is read through pyarrow like s3://
    listing.write_text("# one path a line\n" + "\n".join(map(str, files + uris)) + "\n\n")
    common = ["--weights", aligned, "--precision", "fp32", "--json", "--no-progress"]
    code_local, out_local = _run_cli(capsys, "predict", *files, *common)
    code_ray, out_ray = _run_cli(capsys, "predict", listing, *common, "--ray")
    assert code_local == code_ray == 1  # some inputs failed
    local, remote = json.loads(out_local), json.loads(out_ray)
    assert [r["faces"] for r in local[:3]] == [1, 2, 0]
    by_uri = remote[len(files):]
    remote = remote[:len(files)]
    assert [r["path"] for r in by_uri] == uris
    assert by_uri[0]["p_fake"] == pytest.approx(local[0]["p_fake"], abs=1e-5) and by_uri[0]["faces"] == 1
    assert by_uri[1]["p_fake"] is None and by_uri[1]["error"].startswith("nosuch://bucket/x.jpg: cannot read")
    assert by_uri[0]["provenance"] == local[0]["provenance"]
    assert by_uri[2]["provenance"]["kind"] == "ai_generated" and by_uri[2]["provenance"]["source"] == "png-text"
    assert by_uri[1]["provenance"]["notes"] and by_uri[1]["provenance"]["kind"] == "none"
    assert [r["path"] for r in remote] == [r["path"] for r in local] == list(map(str, files))
    for r, l in zip(remote, local):
        for key in ("label", "faces", "face_boxes", "error", "face_message", "region", "notes"):
            assert r[key] == l[key], key
        if l["p_fake"] is not None:
            assert r["p_fake"] == pytest.approx(l["p_fake"], abs=1e-5)
            assert r["face_p_fake"] == pytest.approx(l["face_p_fake"], abs=1e-5)


def _model_actor_pids() -> set[int]:
    """Ray model-actor processes started by this test process (found through /proc; Linux)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine, grew = {os.getpid()}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in mine} - mine
        mine |= new
        grew = bool(new)
    out = set()
    for pid in mine - {os.getpid()}:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::") and "ModelActor" in cmd:
            out.add(pid)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the actor process through /proc (Linux)")
def test_a_killed_model_actor_is_restarted_and_every_image_scored_once(local_ray, labelled, tiny_checkpoint):
    clf = Classifier.from_file(tiny_checkpoint, precision="fp32", batch_size=2)  # many small batches
    killed, seen_after = [], set()
    earlier = _model_actor_pids()  # an earlier test's actor, if Ray has not reaped it yet: not this run's

    def on_progress(done: int, total: int) -> None:
        if not killed:
            pids = _model_actor_pids() - earlier
            assert len(pids) == 1, pids
            os.kill(pids.pop(), signal.SIGKILL)  # the actor dies as a crashed or preempted worker would
            killed.append(done)
        else:
            seen_after.update(_model_actor_pids() - earlier)

    result = evaluate.evaluate_folder(clf, labelled, progress=on_progress, predict_stream=distributed.predict_stream(clf))
    table = result.table
    n = 2 * N_PER_CLASS + 1 + len(BROKEN)
    assert killed and killed[0] < n
    assert len(table) == n and table["path"].is_unique  # none lost, none twice
    assert (table["error"] != "").sum() == len(BROKEN)
    assert seen_after, "no restarted model actor served the rest of the run"
    reference = {Path(p.name).name: p.p_fake for p in clf.predict(sorted(str(x) for x in labelled.rglob("*_0*.jpg")))}
    got = dict(zip(table["path"].map(lambda s: Path(s).name), table["p_fake"]))
    for name, p in reference.items():
        assert got[name] == pytest.approx(p, abs=1e-5)


def test_an_address_nobody_answers_at_fails_in_one_line_without_waiting():
    with pytest.raises(distributed.RayUnavailableError, match="no Ray cluster answers at 127.0.0.1:1"):
        distributed._check_reachable("127.0.0.1:1", timeout=2)


# ---------------------------------------------------------------------------------------------
# torchrun DDP training
# ---------------------------------------------------------------------------------------------

def test_shards_of_an_epoch_cover_the_single_process_order_once():
    from realitycheck.training.ddp import Dist, ShardSampler

    for kw in ({"shuffle": True}, {"shuffle": False}, {"weights": [1.0] * 7 + [3.0] * 3, "num_samples": 10}):
        single = ShardSampler(10, Dist(), seed=5, **kw)
        single.set_epoch(2)
        shards = []
        for rank in range(3):
            s = ShardSampler(10, Dist(rank=rank, world=3), seed=5, **kw)
            s.set_epoch(2)
            shards.append(list(s))
        assert [len(x) for x in shards] == [4, 4, 4]  # equal steps on every rank (padded)
        merged = [shards[r][i] for i in range(4) for r in range(3)]
        assert merged[:10] == list(single)  # the same epoch as one process, dealt out round-robin
    a, b = ShardSampler(10, Dist(), seed=5), ShardSampler(10, Dist(), seed=5)
    b.set_epoch(1)
    assert list(a) != list(b)  # a new order each epoch


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """A labelled folder learnable in a few steps (tests.helpers.make_toy_folder)."""
    from tests.helpers import make_toy_folder

    return make_toy_folder(tmp_path_factory.mktemp("toy"), side=48, per_class=32, blur=3)


def _torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "realitycheck", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env(), cwd=REPO_ROOT, check=False)


def _log_rows(out: Path) -> list[dict]:
    with open(out.with_suffix(".log.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def _digests(stderr: str) -> dict[int, dict[int, str]]:
    """{epoch: {rank: weights sha1}} from the lines every rank logs."""
    out: dict[int, dict[int, str]] = {}
    for rank, digest, epoch in re.findall(r"rank (\d+): weights sha1 (\w+) after epoch (\d+)", stderr):
        out.setdefault(int(epoch), {})[int(rank)] = digest
    return out


@pytest.mark.slow
def test_two_ddp_processes_train_in_step_write_once_and_resume(toy, tmp_path):
    from realitycheck.model import checkpoints

    out = tmp_path / "ddp"
    common = [toy, "--out", out, "--max-steps", 4, "--batch-size", 8, "--resize", 48, "--crop", 40, "--lr", 3e-3,
              "--workers", 0, "--augment", "flip", "--precision", "fp32", "--patience", 10]
    r = _torchrun(*common, "--epochs", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes (gloo)" in r.stderr
    digests = _digests(r.stderr)
    assert set(digests) == {1, 2} and all(set(d) == {0, 1} for d in digests.values())
    assert all(d[0] == d[1] for d in digests.values()), digests  # the ranks hold identical weights
    assert digests[1][0] != digests[2][0]  # and the steps changed them
    rows = _log_rows(out)
    assert [int(x["epoch"]) for x in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    # one checkpoint and one card, written by rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.curves.png", "ddp.log.csv", "ddp.md", "ddp.pt",
                                                           "ddp.train-state.pt"]
    assert r.stderr.count("wrote ") == 1
    card = checkpoints.read_card(out.with_suffix(".pt"))
    assert card.training["processes"] == 2 and card.training["command"].startswith("torchrun --nproc_per_node 2")
    assert card.metrics["test"]["n"] == card.training["n_test"]  # the gathered val, then test, each item once

    r = _torchrun(*common, "--epochs", 3, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("resumed from") == 1 and "after epoch 2" in r.stderr
    assert set(_digests(r.stderr)) == {3} and len(set(_digests(r.stderr)[3].values())) == 1
    assert [int(x["epoch"]) for x in _log_rows(out)] == [1, 2, 3]
