"""The mirror-view rule (issue 28, "fewer views"): a card that averages each view with its mirror image
scores the mirror only where the first view's p_fake lies within the card's margin of the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realitycheck.analysis.view_rule import (
    agreement_by_source,
    auc_change,
    choose_mirror_margin,
    image_scores,
)
from realitycheck.model.checkpoints import ModelCard, Preprocessing, card_problem
from realitycheck.model.inference import Classifier
from realitycheck.model.views import needs_mirror
from tests.helpers import jpeg, run_cli_here


def test_needs_mirror_is_every_view_without_a_margin_and_only_the_near_ones_with_one():
    p = np.array([0.10, 0.55, 0.62, 0.95])
    assert needs_mirror(p, 0.6, None).all()
    assert needs_mirror(p, 0.6, 0.1).tolist() == [False, True, True, False]
    assert not needs_mirror(p, 0.6, 0.0).any()


class _Sided(torch.nn.Module):
    """A model whose p_fake depends on which way the image faces: the left half's brightness decides."""

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([4 * left, torch.zeros_like(left)], 1)  # fake first (classes fake, real)


def _classifier(margin, views="auto", threshold=0.5):
    card = ModelCard(name="sided", arch="efficientnet_lite0", threshold=threshold,
                     preprocessing=Preprocessing(resize=16, crop=16, mirror_average=True),
                     views={} if margin is None else {"mirror_margin": margin})
    return Classifier(_Sided(), card, engine="torch", precision="fp32", views=views)


def _batch():
    """Four views: bright left halves push p_fake up, dark ones down; the mirror swaps the halves."""
    x = torch.zeros(4, 3, 16, 16)
    for i, (left, right) in enumerate([(-1.0, 1.0), (0.05, -0.05), (-0.05, 0.05), (1.0, -1.0)]):
        x[i, ..., :8], x[i, ..., 8:] = left, right
    return x


def test_the_mirror_is_scored_only_near_the_threshold_and_every_path_can_ask_for_all(monkeypatch):
    x = _batch()
    single = torch.softmax(_Sided()(x), 1)[:, 0].numpy()
    both = (single + torch.softmax(_Sided()(x.flip(3)), 1)[:, 0].numpy()) / 2
    seen = []
    original = Classifier._forward

    def counting(self, batch, precision, runner):
        seen.append(len(batch))
        return original(self, batch, precision, runner)

    monkeypatch.setattr(Classifier, "_forward", counting)
    p = _classifier(0.1).probabilities(x)
    near = np.abs(single - 0.5) < 0.1
    assert near.tolist() == [False, True, True, False]
    assert seen == [4, 2]  # the first views, then the mirrors of the two near the threshold only
    np.testing.assert_allclose(p[near], both[near], atol=1e-6)
    np.testing.assert_allclose(p[~near], single[~near], atol=1e-6)
    seen.clear()
    np.testing.assert_allclose(_classifier(0.1, views="all").probabilities(x), both, atol=1e-6)
    assert seen == [4, 4]
    np.testing.assert_allclose(_classifier(None).probabilities(x), both, atol=1e-6)  # an old card: every mirror


def test_an_unknown_view_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="'auto'.*'all'"):
        _classifier(0.1, views="some")


def test_the_margin_is_the_smallest_that_keeps_every_source_at_the_target():
    # one view per image; image 1 flips when not mirrored (0.58 alone, 0.45 with its mirror), 0.08 from t
    p_first = np.array([0.9, 0.58, 0.2, 0.1, 0.52])
    p_mirror = np.array([0.9, 0.32, 0.2, 0.1, 0.40])  # image 4 flips too, 0.02 from t
    image = np.arange(5)
    sources = ["a", "a", "b", "b", "a"]
    m = choose_mirror_margin(p_first, p_mirror, image, sources, 0.5, target=1.0)
    assert 0.08 < m < 0.081
    assert agreement_by_source(p_first, p_mirror, image, sources, 0.5, m)["agreement"].tolist() == [1.0, 1.0]
    below = agreement_by_source(p_first, p_mirror, image, sources, 0.5, 0.05)
    assert below.set_index("source")["agreement"]["a"] == pytest.approx(2 / 3)
    # a looser target lets source a lose one of its three images: only image 4 (0.02 away) must be mirrored
    assert 0.02 < choose_mirror_margin(p_first, p_mirror, image, sources, 0.5, target=0.6) < 0.021


def test_an_image_is_its_most_suspicious_view_under_the_rule():
    p_first, p_mirror = np.array([0.3, 0.55, 0.9]), np.array([0.3, 0.35, 0.9])
    image = np.array([0, 0, 1])
    assert image_scores(p_first, p_mirror, image, 0.5, None).tolist() == pytest.approx([0.45, 0.9])
    assert image_scores(p_first, p_mirror, image, 0.5, 0.01).tolist() == pytest.approx([0.55, 0.9])


def test_the_auc_change_is_what_skipping_mirrors_does_to_the_ranking():
    # fake image 0 and real image 1 swap order when image 1's mirror is skipped (0.75 alone, 0.55 with it)
    p_first, p_mirror = np.array([0.7, 0.75, 0.1]), np.array([0.7, 0.35, 0.1])
    image, labels = np.arange(3), ["fake", "real", "real"]
    assert auc_change(p_first, p_mirror, image, labels, 0.5, None) == 0
    assert auc_change(p_first, p_mirror, image, labels, 0.5, 0.1) == pytest.approx(0.5)
    assert auc_change(p_first, p_mirror, image, labels, 0.5, 0.3) == 0  # both mirrored: the same ranking
    assert auc_change(p_first, p_mirror, image, ["real"] * 3, 0.5, 0.1) is None


def test_the_margin_also_keeps_the_roc_auc_within_the_gate():
    # no verdict flips anywhere, but skipping image 1's mirror swaps it with fake image 0 in the ranking
    p_first, p_mirror = np.array([0.7, 0.75, 0.1]), np.array([0.7, 0.35, 0.1])
    image, sources, labels = np.arange(3), ["f", "r", "r"], ["fake", "real", "real"]
    assert choose_mirror_margin(p_first, p_mirror, image, sources, 0.5, target=0.0) == 0
    m = choose_mirror_margin(p_first, p_mirror, image, sources, 0.5, target=0.0, labels=labels)
    assert 0.25 < m < 0.251 and auc_change(p_first, p_mirror, image, labels, 0.5, m) == 0


def test_a_card_with_a_bad_margin_is_refused():
    card = ModelCard(name="x", arch="efficientnet_lite0", views={"mirror_margin": 2})
    assert "mirror_margin" in card_problem(card)
    card.views = {"mirror_margin": 0.1}
    assert card_problem(card) is None


def test_views_command_writes_the_margin_chosen_on_validation_into_the_card(tmp_path):
    from realitycheck.model import checkpoints, models
    from realitycheck.model.checkpoints import card_markdown, read_card

    card = ModelCard(name="tiny", arch="efficientnet_lite0", threshold=0.5,
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                 mirror_average=True))
    ckpt = checkpoints.save_checkpoint(tmp_path / "m.pt", models.build_model("efficientnet_lite0", pretrained=True), card)
    for label in ("real", "fake"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(40):
            (tmp_path / "data" / label / f"{label}_{i}.jpg").write_bytes(jpeg(i + (0 if label == "real" else 100),
                                                                             noisy=label == "fake"))
    r = run_cli_here("views", str(ckpt), "--data", str(tmp_path / "data"), "--workers", "0", "--test")
    assert r.returncode == 0, r.stderr
    assert "held-out test split" in r.stdout and "never used to choose" in r.stdout
    assert r.stdout.count("|ROC-AUC change|") == 2
    views = read_card(ckpt).views
    assert "## Views" in card_markdown(read_card(ckpt)) and "mirror_margin" in card_markdown(read_card(ckpt))
    assert 0 <= views["mirror_margin"] <= 1 and "validation" in views["chosen_on"]
    assert min(views["agreement_by_source"].values()) >= 0.995
    assert "mirror margin" in r.stdout

    card.preprocessing = Preprocessing(resize=96, crop=80)  # one view per face: nothing to skip
    single = checkpoints.save_checkpoint(tmp_path / "s.pt", models.build_model("efficientnet_lite0", pretrained=True), card)
    r = run_cli_here("views", str(single), "--data", str(tmp_path / "data"))
    assert r.returncode != 0 and "no mirror averaging" in r.stderr and "Traceback" not in r.stderr
    r = run_cli_here("views", str(ckpt), "--data", str(tmp_path / "data"), "--target", "3")
    assert r.returncode == 2 and "share of images" in r.stderr
