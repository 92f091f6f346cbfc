"""`predict --log`, `evaluate --log` and `realitycheck cases ...`: judgements recorded, reviewed, exported, deleted."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from realitycheck.analysis import cases
from realitycheck.serving.cli import main
from tests.helpers import SAMPLE_IMAGES, make_toy_folder


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "cases.db"
    monkeypatch.setenv("REALITYCHECK_DB", str(path))
    monkeypatch.delenv("REALITYCHECK_CASES", raising=False)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_log_records_cases_with_the_printed_p_fake(db, tiny_checkpoint, tmp_path, capsys):
    img = tmp_path / "one.jpg"
    shutil.copy(SAMPLE_IMAGES / "grace_hopper.jpg", img)
    code, out, err = _run(capsys, "predict", img, "--weights", tiny_checkpoint, "--json", "--log", "--engine", "torch")
    assert code == 0, err
    printed = json.loads(out)[0]
    assert "logged 1 judgements" in err
    code, out, _ = _run(capsys, "predict", img, "--weights", tiny_checkpoint, "--log", "--engine", "torch")
    code, out, _ = _run(capsys, "cases", "list", "--json")
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["judgements"] == 2  # the same file twice: one case, two judgements
    assert rows[0]["p_fake"] == pytest.approx(printed["p_fake"], abs=1e-12)
    assert rows[0]["origin"] == "cli:predict" and rows[0]["model_id"] == "test" and len(rows[0]["model_hash"]) == 16
    assert rows[0]["name"] == "one.jpg"  # the file name, never its folder
    code, out, _ = _run(capsys, "cases", "show", rows[0]["sha256"][:8])
    assert code == 0 and "not reviewed" in out and out.count("cli:predict") == 2


def test_label_filter_export_and_delete(db, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("grace_hopper.jpg",):
        shutil.copy(SAMPLE_IMAGES / name, folder / name)
    other = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png") and p.name != "grace_hopper.jpg")[0]
    shutil.copy(other, folder / other.name)
    assert _run(capsys, "predict", folder, "--weights", tiny_checkpoint, "--log", "--engine", "torch")[0] == 0
    rows = json.loads(_run(capsys, "cases", "list", "--json")[1])
    assert len(rows) == 2
    first = rows[0]
    wrong = "real" if first["verdict"] == "fake" else "fake"
    code, out, _ = _run(capsys, "cases", "label", first["sha256"][:10], wrong, "--generator", "flux", "--note", "missed")
    assert code == 0, out
    unrev = json.loads(_run(capsys, "cases", "list", "--unreviewed", "--json")[1])
    assert [r["sha256"] for r in unrev] == [rows[1]["sha256"]]
    dis = json.loads(_run(capsys, "cases", "list", "--disagreements", "--json")[1])
    assert [r["sha256"] for r in dis] == [first["sha256"]] and dis[0]["true_label"] == wrong
    assert _run(capsys, "cases", "export", tmp_path / "out.csv")[0] == 0
    assert _run(capsys, "cases", "export", tmp_path / "out.parquet", "--reviewed")[0] == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == 2 and len(pd.read_parquet(tmp_path / "out.parquet")) == 1
    code, out, _ = _run(capsys, "cases", "delete", first["sha256"][:10])
    assert code == 0 and "gone" in out
    code, _, err = _run(capsys, "cases", "show", first["sha256"][:10])
    assert code == 2 and "no case" in err
    assert not list(cases.CaseStore(cases.database_url()).images_dir.glob(first["sha256"] + "*"))
    code, _, err = _run(capsys, "cases", "label", "zz", "real")
    assert code == 2 and "sha256" in err and "Traceback" not in err


def test_corrupt_database_still_prints_the_verdict(db, tiny_checkpoint, capsys):
    db.write_bytes(b"garbage, not sqlite" * 100)
    code, out, err = _run(capsys, "predict", SAMPLE_IMAGES / "grace_hopper.jpg", "--weights", tiny_checkpoint, "--log",
                          "--engine", "torch")
    assert "p_fake=" in out  # the verdict is shown
    assert code == 1 and "not logged" in err and "damaged" in err and "Traceback" not in err
    code, _, err = _run(capsys, "cases", "list")
    assert code == 2 and "damaged" in err


def test_evaluate_log_records_every_scored_image(db, tiny_checkpoint, tmp_path, capsys):
    folder = make_toy_folder(tmp_path / "toy", side=48, per_class=3)
    (folder / "fake" / "broken.png").write_bytes(b"not an image")
    code, out, err = _run(capsys, "evaluate", folder, "--weights", tiny_checkpoint, "--log", "--workers", "0",
                          "--engine", "torch", "--json")
    assert code == 1, err  # the broken file failed (README: exit 1 when some inputs failed); the rest are logged
    assert "logged 6 judgements" in err
    rows = json.loads(_run(capsys, "cases", "list", "--json")[1])
    assert len(rows) == 6 and {r["origin"] for r in rows} == {"cli:evaluate"}
    # bulk review from the same labelled folder
    code, out, _ = _run(capsys, "cases", "label", "--from", folder)
    assert code == 0 and "labelled 6 cases" in out
    assert not json.loads(_run(capsys, "cases", "list", "--unreviewed", "--json")[1])
