"""The loop end to end on tiny generated data: judge -> cases -> labels -> learn -> gate -> promote/reject -> rollback."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from realitycheck.analysis import cases
from realitycheck.model import registry
from realitycheck.model.inference import DEFAULT_WEIGHTS_NAME, default_weights_path
from realitycheck.serving.cli import main
from realitycheck.training.learn import decide
from realitycheck.training.train import TrainConfig, fit
from tests.helpers import make_toy_folder


def _new_family(root: Path, per_class: int = 20, side: int = 48) -> Path:
    """Images the toy model never saw: reals are smooth noise, fakes carry horizontal stripes (another 'generator')."""
    rng = np.random.default_rng(7)
    stripes = ((np.arange(side) % 3 == 0) * 70).astype(np.int16)[:, None, None]
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).filter(ImageFilter.GaussianBlur(3))
            arr = np.asarray(base).astype(np.int16) + (stripes - 35 if label == "fake" else 0)
            Image.fromarray(np.clip(arr, 0, 255).astype("uint8")).save(root / label / f"new_{label}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learn-base")
    toy = make_toy_folder(root / "toy", side=48, per_class=24, blur=3)
    cfg = TrainConfig(data=str(toy), out=str(root / "base"), epochs=2, batch_size=8, resize=48, crop=40, lr=3e-3,
                      workers=0, augment="flip", precision="fp32", half=False, label_smoothing=0.0, patience=5)
    return fit(cfg, log=lambda m: None)


@pytest.fixture
def world(tmp_path, monkeypatch, base_model):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(base_model, wdir / DEFAULT_WEIGHTS_NAME)
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(wdir))
    monkeypatch.delenv("REALITYCHECK_WEIGHTS", raising=False)
    monkeypatch.delenv("REALITYCHECK_REGISTRY", raising=False)
    monkeypatch.setenv("REALITYCHECK_DB", str(tmp_path / "cases.db"))
    return {"weights": wdir, "new": _new_family(tmp_path / "new")}


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _predict(capsys, folder) -> dict[str, float]:
    code, out, err = _run(capsys, "predict", folder, "--json", "--engine", "torch")
    assert code == 0, err
    return {Path(r["path"]).name: r["p_fake"] for r in json.loads(out)}


def _sha(path) -> str:
    return cases.sha256_of(Path(path).read_bytes())


def test_judge_label_learn_gate_and_roll_back(world, capsys):
    base_file = world["weights"] / DEFAULT_WEIGHTS_NAME
    assert default_weights_path() == base_file
    # judge: every verdict becomes a case
    code, out, err = _run(capsys, "predict", world["new"], "--log", "--json", "--engine", "torch")
    assert code == 0 and "logged 40 judgements" in err
    before = {Path(r["path"]).name: r["p_fake"] for r in json.loads(out)}
    # review: the analyst labels them (bulk, from the labelled folder)
    code, out, _ = _run(capsys, "cases", "label", "--from", world["new"])
    assert "labelled 40 cases" in out
    # learn a few steps
    code, out, err = _run(capsys, "learn", "--epochs", "1", "--max-steps", "3", "--batch-size", "8", "--no-half",
                          "--json")
    assert code == 0, err
    meta = json.loads(out)
    vdir = Path(meta["dir"])
    assert (vdir / "model.pt").is_file() and (vdir / "gate.md").is_file()
    assert meta["parent"] and registry.get(meta["parent"])["status"] == "base"
    from realitycheck.model.checkpoints import read_card

    card = read_card(vdir / "model.pt")
    assert card.training["learned"]["parent"] == meta["parent"] and card.threshold == meta["threshold"]
    assert card.training["learned"]["cases_held_out"] == len(meta["holdout"])
    assert not (vdir / "model.train-state.pt").exists()

    # the cases' holdout never trains: every file in the training CSV is checked by its hash
    with open(vdir / meta["train_csv"]) as fh:
        trained = {_sha(r["path"]) for r in csv.DictReader(fh)}
    holdout = set(meta["holdout"])
    assert holdout and trained and not trained & holdout
    assert all(cases.is_holdout(h) for h in holdout) and not any(cases.is_holdout(h) for h in trained)
    assert trained == set(meta["cases_used"]) and len(trained) + len(holdout) == 40
    sources = {s["source"] for s in meta["gate"]["sources"]}
    assert sources == {"toy/real", "toy/fake"}  # the replayed training data's own test share, per source
    assert meta["gate"]["holdout"]["n"] == len(holdout)

    # promoted or rejected exactly as the numbers say
    g = meta["gate"]
    h = g["holdout"]
    worse = [s for s in g["sources"] if (s["label"] == "fake" and s["candidate"]["rate"] < s["current"]["ci95_low"])
             or (s["label"] == "real" and s["candidate"]["rate"] > s["current"]["ci95_high"])]
    expected = not worse and h["candidate_accuracy"] > h["current_accuracy"]
    assert g["promote"] == expected and meta["promoted"] == expected
    assert meta["status"] == ("promoted" if expected else "rejected")
    if expected:
        assert default_weights_path() == vdir / "model.pt"
    else:
        assert default_weights_path() == base_file  # a rejected candidate changes nothing
        assert _run(capsys, "models", "use", meta["id"])[0] == 0  # switch to it by hand, to roll back below
    assert default_weights_path() == vdir / "model.pt"
    after = _predict(capsys, world["new"])
    assert any(abs(after[k] - before[k]) > 1e-6 for k in before)  # the candidate answers differently
    # rollback restores the previous model's answers, exactly
    code, out, _ = _run(capsys, "models", "rollback")
    assert code == 0 and meta["parent"] in out
    assert Path(default_weights_path()).resolve() == base_file.resolve()
    assert _predict(capsys, world["new"]) == before
    code, out, _ = _run(capsys, "models", "list")
    assert meta["id"] in out and "* " + meta["parent"] in out
    code, _, err = _run(capsys, "models", "rollback")
    assert code == 2 and "nothing to roll back" in err


def test_learn_without_reviewed_cases_is_a_clear_error(world, capsys):
    _run(capsys, "predict", world["new"] / "fake", "--log", "--engine", "torch")
    code, _, err = _run(capsys, "learn", "--epochs", "1", "--max-steps", "1")
    assert code == 2 and "no reviewed cases" in err and "Traceback" not in err


def _row(source, label, cur, lo, hi, cand):
    return {"source": source, "label": label, "current": {"rate": cur, "ci95_low": lo, "ci95_high": hi},
            "candidate": {"rate": cand}}


def test_gate_rule():
    fine = [_row("sd", "fake", 0.9, 0.8, 0.95, 0.85), _row("ffhq", "real", 0.05, 0.02, 0.1, 0.09)]
    better = {"n": 10, "current_accuracy": 0.5, "candidate_accuracy": 0.8}
    assert decide(fine, better) == (True, [])
    # a fake source whose detection falls below the current interval blocks it
    ok, why = decide([_row("sd", "fake", 0.9, 0.8, 0.95, 0.79)], better)
    assert not ok and "sd: detection fell" in why[0]
    # a real source whose false alarms rise above the interval blocks it
    ok, why = decide([_row("ffhq", "real", 0.05, 0.02, 0.1, 0.11)], better)
    assert not ok and "ffhq: false alarms rose" in why[0]
    # the holdout must improve, strictly, and must exist
    assert not decide(fine, {**better, "candidate_accuracy": 0.5})[0]
    assert not decide(fine, {"n": 0, "current_accuracy": None, "candidate_accuracy": None})[0]


def test_a_failed_learn_is_recorded_and_cannot_be_used(world, capsys, monkeypatch):
    from realitycheck.training import train

    def broken_fit(cfg, log=print, progress=None):
        raise ValueError("not enough images to make train and validation splits")

    monkeypatch.setattr(train, "fit", broken_fit)
    _run(capsys, "predict", world["new"], "--log", "--engine", "torch")
    _run(capsys, "cases", "label", "--from", world["new"])
    code, _, err = _run(capsys, "learn", "--epochs", "1", "--max-steps", "1")
    assert code == 2 and "not enough images" in err and "Traceback" not in err
    failed = [v for v in registry.versions() if v["status"] == "failed"]
    assert len(failed) == 1 and "not enough images" in failed[0]["error"]
    code, _, err = _run(capsys, "models", "use", failed[0]["id"])
    assert code == 2 and "no model file" in err
    assert default_weights_path() == world["weights"] / DEFAULT_WEIGHTS_NAME  # nothing changed
