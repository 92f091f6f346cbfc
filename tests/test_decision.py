"""realitycheck.model.decision: the one decision rule, the unfamiliar rule, and the per-group threshold rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from realitycheck.analysis import metrics as M
from realitycheck.model.decision import (
    by_group,
    is_fake,
    is_unfamiliar,
    threshold_for_every_group,
    verdict,
)


def test_fake_is_at_or_above_the_threshold_for_one_score_or_many():
    below = float(np.nextafter(0.7, 0.0))
    assert is_fake(0.7, 0.7) is True and is_fake(below, 0.7) is False  # plain bools for one score
    assert verdict(0.7, 0.7) == "fake" and verdict(below, 0.7) == "real"
    got = is_fake([0.1, 0.7, 0.9, float("nan")], 0.7)
    assert isinstance(got, np.ndarray) and got.tolist() == [False, True, True, False]  # NaN is never fake
    assert is_fake(pd.Series([0.2, 0.8]), 0.5).tolist() == [False, True]


def test_unfamiliar_is_strictly_above_the_threshold():
    assert is_unfamiliar(1.5, 1.5) is False and is_unfamiliar(float(np.nextafter(1.5, 2.0)), 1.5) is True
    assert is_unfamiliar(np.array([1.0, 1.5, 2.0]), 1.5).tolist() == [False, False, True]


@pytest.mark.parametrize("rule", [is_fake, is_unfamiliar])
def test_every_group_threshold_is_the_lowest_holding_each_group_to_the_rate(rule):
    rng = np.random.default_rng(1)
    groups = [rng.random(302), rng.random(31) * 0.8, np.append(rng.random(99), np.nan)]
    t = threshold_for_every_group(groups, 0.05, rule=rule)
    clean = [g[~np.isnan(g)] for g in groups]
    assert all(rule(g, t).sum() <= math.floor(0.05 * len(g)) for g in clean)  # 15 of 302, 1 of 31, 4 of 99
    lower = float(np.nextafter(t, -np.inf))
    assert any(rule(g, lower).sum() > math.floor(0.05 * len(g)) for g in clean)  # one float lower breaks it


def test_the_two_rules_choose_thresholds_one_float_apart():
    """Same rule, so the fake threshold is the next float above the unfamiliar one (`>=` against `>`)."""
    groups = [np.linspace(0, 1, 40), np.linspace(0.2, 0.9, 21)]
    t_unf = threshold_for_every_group(groups, 0.1, rule=is_unfamiliar)
    assert threshold_for_every_group(groups, 0.1) == float(np.nextafter(t_unf, np.inf))


def test_no_threshold_when_no_group_holds_the_rate_back():
    assert threshold_for_every_group([], 0.05) is None
    assert threshold_for_every_group([[np.nan]], 0.05) is None
    assert threshold_for_every_group([[0.1, 0.9]], 1.0) is None  # every score may be flagged


def test_a_rate_times_n_that_floats_just_below_a_whole_number_allows_that_many():
    scores = np.arange(100.0)
    assert 0.29 * 100 < 29  # 28.999...: a bare floor would allow 28
    t = threshold_for_every_group([scores], 0.29, rule=is_unfamiliar)
    assert is_unfamiliar(scores, t).sum() == 29


def test_by_group_keeps_first_seen_order():
    out = by_group([1.0, 2.0, 3.0, 4.0], ["b", "a", "b", "a"])
    assert [g.tolist() for g in out] == [[1.0, 3.0], [2.0, 4.0]]


def test_every_source_threshold_of_a_results_table_is_the_per_group_rule_on_its_reals():
    rng = np.random.default_rng(2)
    rows = [{"path": f"{s}{i}", "true_label": lab, "source": s, "p_fake": float(rng.random()), "error": ""}
            for s, lab, n in (("cam", "real", 60), ("web", "real", 23), ("gen", "fake", 50)) for i in range(n)]
    table = pd.DataFrame(rows)
    reals = table[table["true_label"] == "real"]
    want = threshold_for_every_group(by_group(reals["p_fake"], reals["source"]), 0.05)
    assert M.threshold_for_every_source(table, 0.05) == want
    for _, g in reals.groupby("source"):
        assert is_fake(g["p_fake"], want).sum() <= math.floor(0.05 * len(g))
    assert M.threshold_for_every_source(table[table["true_label"] == "fake"], 0.05) is None  # no reals
    assert M.threshold_for_every_source(table, 1.0) == 0.5  # nothing to hold back: the neutral cut, as before
