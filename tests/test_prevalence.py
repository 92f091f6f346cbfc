"""What a verdict means at a prevalence (realitycheck.analysis.prevalence), checked against hand computations."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from realitycheck.analysis import prevalence as P

RATES = P.Rates(detection=0.9, false_alarm=0.02, threshold=0.5, n_fake=100, n_real=100)


def test_bayes_rule_against_a_hand_computation():
    # by hand: P(fake|FAKE) = 0.9*0.001 / (0.9*0.001 + 0.02*0.999) = 0.0009 / 0.02088
    #          P(real|REAL) = 0.98*0.999 / (0.98*0.999 + 0.1*0.001) = 0.97902 / 0.97912
    r = P.reliability(RATES, 0.001)
    assert r.fake_right == pytest.approx(0.04310345, abs=1e-7)
    assert r.real_right == pytest.approx(0.99989787, abs=1e-7)
    # at 50%: 0.45 / (0.45 + 0.01) and 0.49 / (0.49 + 0.05)
    r = P.reliability(RATES, 0.5)
    assert r.fake_right == pytest.approx(0.45 / 0.46) and r.real_right == pytest.approx(0.49 / 0.54)


def test_edge_prevalences():
    none, every = P.reliability(RATES, 0.0), P.reliability(RATES, 1.0)
    assert none.fake_right == 0.0 and none.real_right == 1.0  # with no fakes every FAKE is a false alarm
    assert every.fake_right == 1.0 and every.real_right == 0.0  # with only fakes every REAL is a miss
    assert "right 0% of the time" in P.verdict_meaning(none, "fake")
    assert "right 100% of the time" in P.verdict_meaning(none, "real")
    perfect = P.Rates(detection=1.0, false_alarm=0.0)
    r = P.reliability(perfect, 0.0)
    assert r.fake_right is None and r.real_right == 1.0  # a FAKE verdict cannot occur
    assert "should not occur" in P.verdict_meaning(r, "fake")


def test_a_model_without_measured_rates_says_it_cannot_tell():
    card = SimpleNamespace(metrics={"test": {"accuracy": 0.5, "roc_auc": 0.5, "n": 6}}, threshold=0.5)
    assert P.rates_from_card(card) is None
    assert P.rates_from_card(SimpleNamespace(metrics={}, threshold=0.5)) is None
    r = P.reliability(None, 0.01)
    assert r.fake_right is None and r.real_right is None
    assert "cannot tell" in P.verdict_meaning(r, "fake")


def test_rates_from_a_card_pooled_or_from_per_source_counts():
    card = SimpleNamespace(threshold=0.7, metrics={"test": {"recall_fake": 0.8, "fpr": 0.05, "n_fake": 10,
                                                            "n_real": 20, "threshold": 0.7}})
    r = P.rates_from_card(card)
    assert (r.detection, r.false_alarm, r.threshold, r.n_fake, r.n_real) == (0.8, 0.05, 0.7, 10, 20)
    rows = [{"label": "fake", "n": 10, "called_fake": 9}, {"label": "fake", "n": 30, "called_fake": 15},
            {"label": "real", "n": 50, "called_fake": 1}, {"label": "real", "n": 50, "called_fake": 3}]
    r = P.rates_from_card(SimpleNamespace(threshold=0.5, metrics={"test": {"per_source": rows}}))
    assert r.detection == pytest.approx(24 / 40) and r.false_alarm == pytest.approx(4 / 100)


@pytest.mark.parametrize("text,value", [("0.001", 0.001), ("0.1%", 0.001), ("1/1000", 0.001), (0, 0.0), ("1", 1.0)])
def test_prevalence_accepted_forms(text, value):
    assert P.check_prevalence(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["2", "-0.1", "abc", "1/0", "nan", "150%"])
def test_bad_prevalence_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="prevalence"):
        P.check_prevalence(bad)


def test_words_state_the_prevalence_and_the_chance():
    text = P.verdict_meaning(P.reliability(RATES, 0.001), "fake", threshold=0.5)
    assert text.startswith("If 1 in 1,000 of the photos you check are fake, a FAKE verdict")
    assert "4.3%" in text and "90.0% of fakes caught" in text and "2.0% false alarms" in text
    assert "threshold 0.5" in text and "threshold" not in P.verdict_meaning(P.reliability(RATES, 0.001), "fake",
                                                                              threshold=0.5, plain=True)
    assert "rough guide" in P.verdict_meaning(P.reliability(RATES, 0.001), "fake", threshold=0.9)


def test_cli_predict_prevalence(tmp_path, sample_face):
    from realitycheck.model.inference import load_classifier
    from tests.helpers import run_cli_here as run_cli
    from tests.helpers import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "rated.pt", threshold=0.01,
                                metrics={"test": {"recall_fake": 0.9, "fpr": 0.02, "n_fake": 100, "n_real": 100,
                                                  "threshold": 0.01}})
    label = load_classifier(ckpt).predict([str(sample_face)])[0].label
    out = run_cli("predict", str(sample_face), "--weights", str(ckpt), "--prevalence", "1/1000", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)[0]["at_prevalence"]
    expected = P.reliability(P.Rates(0.9, 0.02), 0.001)
    assert got["verdict_right"] == pytest.approx(expected.fake_right if label == "fake" else expected.real_right)
    assert got["fake_verdict_right"] == pytest.approx(0.0009 / 0.02088)
    text = run_cli("predict", str(sample_face), "--weights", str(ckpt), "--prevalence", "0.1%")
    assert f"a {label.upper()} verdict from this model is right" in text.stdout
    bad = run_cli("predict", str(sample_face), "--weights", str(ckpt), "--prevalence", "3")
    assert bad.returncode == 2 and "prevalence must be between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr


def test_both_verdicts_in_one_line():
    assert P.both_words(P.reliability(RATES, 0.001)) == (
        "At 1 in 1,000: a FAKE verdict is right 4.3% of the time; a REAL verdict is right over 99.9% of the time.")
    assert "cannot tell" in P.both_words(P.reliability(None, 0.5))
