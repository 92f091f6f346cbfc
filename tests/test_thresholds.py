"""`realitycheck threshold` (analysis.thresholds) and the unfamiliar threshold's one home, the card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from realitycheck.analysis import thresholds
from realitycheck.analysis.metrics import threshold_for_every_source
from realitycheck.model import checkpoints
from realitycheck.model.checkpoints import FORMAT
from realitycheck.model.decision import is_fake, is_unfamiliar
from realitycheck.model.inference import Classifier
from realitycheck.model.ood import OODStats
from realitycheck.serving import cli
from tests.helpers import REPO_ROOT


def _ood_tensors(threshold: float) -> dict:
    stats = OODStats.fit(np.random.default_rng(0).normal(size=(40, 1280)), n_components=4)
    stats.threshold = threshold
    return stats.to_tensors()


def _val_table(n: int = 20) -> pd.DataFrame:
    """Two real sources and a fake one; source "web" scores higher, so it sets the decision threshold,
    and "gen" lies furthest from the training features, so it sets the unfamiliar one."""
    rows = []
    for source, label, base, ood in (("cam", "real", 0.0, 1.0), ("web", "real", 0.3, 1.1), ("gen", "fake", 0.6, 2.0)):
        for i in range(n):
            rows.append({"path": f"{source}/{i}.jpg", "true_label": label, "source": source,
                         "p_fake": round(base + 0.01 * i, 4), "ood_score": ood + 0.01 * i, "error": ""})
    rows.append({"path": "broken.jpg", "true_label": "real", "source": "web", "p_fake": None, "ood_score": None,
                 "error": "unreadable"})  # failed rows are left out
    return pd.DataFrame(rows)


@pytest.fixture
def ckpt_with_ood(tiny_checkpoint, tmp_path):
    model, card = checkpoints.load_checkpoint(tiny_checkpoint)
    card.ood = {"threshold": 99.0}
    return checkpoints.save_checkpoint(tmp_path / "m.pt", model, card, extras={"ood": _ood_tensors(99.0)})


def _raw(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_threshold_command_writes_both_thresholds_chosen_on_validation(ckpt_with_ood, tmp_path, capsys):
    val = _val_table()
    val.to_csv(tmp_path / "val.csv", index=False)
    test = _val_table(8)
    test.to_csv(tmp_path / "test.csv", index=False)

    code = cli.main(["threshold", str(ckpt_with_ood), str(tmp_path / "val.csv"), "--test-csv", str(tmp_path / "test.csv")])
    out = capsys.readouterr().out
    assert code == 0
    card = checkpoints.read_card(ckpt_with_ood)
    assert f"threshold {card.threshold} written to {ckpt_with_ood}" in out and "web" in out

    # the decision threshold: the every-source rule, rounded up to 4 decimals. web's 2nd highest score is
    # 0.48 itself, the rule's threshold the float above it: 0.48 * 1e4 rounds to 4800, so up is 0.4801
    assert card.threshold == 0.4801 and card.threshold >= threshold_for_every_source(val, 0.05)
    for source in ("cam", "web"):  # at most 1 of each real source's 20 called fake
        assert is_fake(val.loc[val["source"] == source, "p_fake"], card.threshold).sum() <= 1
    assert is_fake(0.49, card.threshold) and not is_fake(0.48, card.threshold)  # web's 2nd highest stays real
    # the unfamiliar threshold: at most 1 of 20 of every source flagged; "gen" decides
    assert card.ood["threshold"] == pytest.approx(2.18)
    assert is_unfamiliar(val["ood_score"].dropna(), card.ood["threshold"]).sum() == 1
    assert card.ood["threshold_chosen_on"].startswith("60 validation images")  # the failed row left out
    assert card.training["threshold_choice"]["validation_rates"] == {"cam": 0.0, "gen": 1.0, "web": 0.05}
    assert card.metrics["test"]["threshold"] == card.threshold and card.metrics["test"]["n"] == 24

    # one home: the file's tensor copy and the loaded classifier say what the card says
    assert float(_raw(ckpt_with_ood)["ood"]["threshold"][0]) == card.ood["threshold"]
    clf = Classifier.from_file(ckpt_with_ood, precision="fp32")
    assert clf.threshold == card.threshold and clf.ood.threshold == card.ood["threshold"]


def test_the_old_script_runs_the_command(ckpt_with_ood, tmp_path, monkeypatch):
    import runpy
    import sys

    _val_table().to_csv(tmp_path / "val.csv", index=False)
    monkeypatch.setattr(sys, "argv", ["choose_threshold.py", str(ckpt_with_ood), str(tmp_path / "val.csv")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO_ROOT / "scripts" / "choose_threshold.py"), run_name="__main__")
    assert done.value.code == 0 and checkpoints.read_card(ckpt_with_ood).threshold < 0.5


def test_threshold_command_refuses_what_it_cannot_use(ckpt_with_ood, tmp_path, capsys):
    fakes = _val_table()
    fakes[fakes["true_label"] == "fake"].to_csv(tmp_path / "fakes.csv", index=False)
    before = _raw(ckpt_with_ood)["card"]
    assert cli.main(["threshold", str(ckpt_with_ood), str(tmp_path / "fakes.csv")]) == cli.EXIT_USAGE
    assert "no scored real images" in capsys.readouterr().err
    assert cli.main(["threshold", str(ckpt_with_ood), str(tmp_path / "nope.csv")]) == cli.EXIT_USAGE
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert _raw(ckpt_with_ood)["card"] == before  # nothing written


def test_a_table_without_unfamiliarity_scores_leaves_that_threshold_alone(ckpt_with_ood, tmp_path):
    thresholds.write_thresholds(ckpt_with_ood, _write(_val_table().drop(columns="ood_score"), tmp_path / "v.csv"))
    card = checkpoints.read_card(ckpt_with_ood)
    assert card.ood["threshold"] == 99.0 and card.threshold < 0.5


def _write(table: pd.DataFrame, path):
    table.to_csv(path, index=False)
    return path


# -- the unfamiliar threshold's one home ---------------------------------------------------------

def _rc_file(tiny_checkpoint, path, card_ood: dict, tensor_threshold: float):
    """A checkpoint written as older versions did: the card's ood entry and the tensor set independently."""
    obj = _raw(tiny_checkpoint)
    card = json.loads(obj["card"])
    card["ood"] = card_ood
    obj.update(card=json.dumps(card), ood=_ood_tensors(tensor_threshold))
    torch.save(obj, path)
    return path


def test_an_old_checkpoint_with_the_threshold_only_in_its_tensor_answers_as_before(tiny_checkpoint, tmp_path):
    path = _rc_file(tiny_checkpoint, tmp_path / "old.pt", {}, 1.25)
    _, card, extras = checkpoints.read_checkpoint_extras(path)
    assert card.ood["threshold"] == 1.25 and float(extras["ood"]["threshold"][0]) == 1.25
    assert Classifier.from_file(path, precision="fp32").ood.threshold == 1.25


def test_the_cards_unfamiliar_threshold_is_the_one_in_force(tiny_checkpoint, tmp_path):
    path = _rc_file(tiny_checkpoint, tmp_path / "both.pt", {"threshold": 2.5}, 1.25)
    assert Classifier.from_file(path, precision="fp32").ood.threshold == 2.5
    model, card, extras = checkpoints.load_checkpoint_extras(path)
    card.ood["threshold"] = 3.0  # a new threshold is set in the card alone ...
    checkpoints.save_checkpoint(path, model, card, extras=extras)
    assert float(_raw(path)["ood"]["threshold"][0]) == 3.0  # ... and the file's copy follows it
    assert Classifier.from_file(path, precision="fp32").ood.threshold == 3.0


def test_format_is_unchanged(tiny_checkpoint, tmp_path):
    path = _rc_file(tiny_checkpoint, tmp_path / "f.pt", {"threshold": 2.5}, 2.5)
    model, card, extras = checkpoints.load_checkpoint_extras(path)
    obj = _raw(checkpoints.save_checkpoint(tmp_path / "again.pt", model, card, extras=extras))
    assert obj["format"] == FORMAT and set(obj["ood"]) == {"mean", "components", "eigvals", "resid_var", "threshold"}
