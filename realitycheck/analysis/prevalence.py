"""What a verdict means where the photos come from: Bayes' rule on the model's measured rates.

A FAKE verdict from a model with 2% false alarms is usually wrong when one photo in a thousand is
fake: almost all FAKE verdicts are then false alarms. The chance that a verdict is right depends on
the model's detection rate (share of fakes called FAKE), its false-alarm rate (share of real photos
called FAKE) and the prevalence (share of fakes among the photos checked):

    P(fake | FAKE) = d p / (d p + f (1 - p))
    P(real | REAL) = (1 - f)(1 - p) / ((1 - f)(1 - p) + (1 - d) p)

The rates come from the model's card: its held-out test metrics (`recall_fake`, `fpr`), pooled over
every test source, at the card's threshold. They hold only at that threshold, and only for photos
like the test sources; the per-source table shows how far they vary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    """A model's measured detection and false-alarm rates, and where they were measured."""

    detection: float  # share of fakes called FAKE
    false_alarm: float  # share of real photos called FAKE
    threshold: float | None = None  # the threshold they were measured at
    n_fake: int | None = None
    n_real: int | None = None
    basis: str = ""  # e.g. "held-out test images of the model card"


@dataclass(frozen=True)
class Reliability:
    prevalence: float
    fake_right: float | None  # P(fake | FAKE verdict); None where no FAKE verdict can occur
    real_right: float | None  # P(real | REAL verdict); None where no REAL verdict can occur
    rates: Rates | None


def rates_from_card(card) -> Rates | None:
    """The card's pooled held-out test rates, or None when the card records none.

    `recall_fake` and `fpr` when present; otherwise pooled from the per-source counts (`called_fake`
    of `n`, fakes and reals apart)."""
    test = (getattr(card, "metrics", None) or {}).get("test") or {}
    threshold = test.get("threshold", getattr(card, "threshold", None))
    d, f = test.get("recall_fake"), test.get("fpr")
    n_fake, n_real = test.get("n_fake"), test.get("n_real")
    if d is None or f is None:
        rows = test.get("per_source") or []
        k = {lab: sum(int(r.get("called_fake", 0)) for r in rows if r.get("label") == lab) for lab in ("fake", "real")}
        n = {lab: sum(int(r.get("n", 0)) for r in rows if r.get("label") == lab) for lab in ("fake", "real")}
        if not (n["fake"] and n["real"]):
            return None
        d, f, n_fake, n_real = k["fake"] / n["fake"], k["real"] / n["real"], n["fake"], n["real"]
    if _bad(d) or _bad(f):
        return None
    return Rates(float(d), float(f), None if threshold is None else float(threshold),
                 None if n_fake is None else int(n_fake), None if n_real is None else int(n_real),
                 "held-out test images of the model card")


def _bad(x) -> bool:
    try:
        return not (0.0 <= float(x) <= 1.0)
    except (TypeError, ValueError):
        return True


def check_prevalence(p) -> float:
    """A prevalence as a fraction in [0, 1] from 0.001, "0.1%" or "1/1000"; a clear ValueError otherwise."""
    try:
        text = str(p).strip()
        if text.endswith("%"):
            v = float(text[:-1]) / 100
        elif "/" in text:
            num, den = text.split("/", 1)
            v = float(num) / float(den)
        else:
            v = float(text)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"prevalence must be a share of fakes such as 0.001, 0.1% or 1/1000, not {p!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"prevalence must be between 0 and 1 (e.g. 0.001 for one in a thousand), not {p!r}")
    return v


def reliability(rates: Rates | None, prevalence: float) -> Reliability:
    """P(fake | FAKE) and P(real | REAL) at `prevalence`; None where the model has no rates or the
    verdict cannot occur (e.g. a FAKE verdict at 0% prevalence from a model with no false alarms)."""
    p = check_prevalence(prevalence)
    if rates is None:
        return Reliability(p, None, None, None)
    d, f = rates.detection, rates.false_alarm
    said_fake = d * p + f * (1 - p)
    said_real = (1 - f) * (1 - p) + (1 - d) * p
    return Reliability(p, d * p / said_fake if said_fake > 0 else None,
                       (1 - f) * (1 - p) / said_real if said_real > 0 else None, rates)


def prevalence_words(p: float) -> str:
    """0.001 -> "1 in 1,000"; 0.2 -> "20%"."""
    if p <= 0:
        return "none"
    if p >= 1:
        return "all of them"
    if p < 0.05:
        return f"1 in {round(1 / p):,}"
    return f"{p:.0%}"


def _chance(x: float) -> str:
    if x >= 1.0 or x <= 0.0:
        return f"{x:.0%}"
    if x >= 0.9995:
        return "over 99.9%"
    if x < 0.0005:
        return "under 0.1%"
    return f"{x:.1%}" if x < 0.1 or x > 0.9 else f"{x:.0%}"


def verdict_meaning(rel: Reliability, label: str, threshold: float | None = None, plain: bool = False) -> str:
    """One sentence beside a verdict: how often a verdict like it is right at this prevalence.

    `plain`: for demo mode, without thresholds."""
    where = f"If {prevalence_words(rel.prevalence)} of the photos you check are fake"
    if rel.prevalence <= 0:
        where = "If none of the photos you check are fake"
    elif rel.prevalence >= 1:
        where = "If every photo you check is fake"
    if rel.rates is None:
        return (f"{where}, this model cannot tell how often its {label.upper()} verdicts are right: its card "
                "records no measured detection and false-alarm rates.")
    r = rel.rates
    measured = (f"(measured on {'held-out test images' if not (r.n_fake and r.n_real) else f'{r.n_fake + r.n_real:,} held-out test images'}: "
                f"{r.detection:.1%} of fakes caught, {r.false_alarm:.1%} false alarms on real photos"
                f"{f', at threshold {r.threshold:.4g}' if r.threshold is not None and not plain else ''}; photos unlike the test sources, such as "
                "those of generators it never saw, fare worse)")
    chance = rel.fake_right if label == "fake" else rel.real_right
    if chance is None:
        return (f"{where}, by this model's measured rates a {label.upper()} verdict should not occur {measured}; "
                "that it did suggests a photo unlike those it was measured on.")
    text = f"{where}, a {label.upper()} verdict from this model is right {_chance(chance)} of the time {measured}."
    if not plain and threshold is not None and r.threshold is not None and abs(threshold - r.threshold) > 1e-9:
        text += (f" These rates hold at the model's threshold; at the {threshold:.4g} in use they differ, "
                 "so this is only a rough guide.")
    return text


def both_words(rel: Reliability) -> str:
    """Both verdicts' chances at this prevalence in one line (the dashboard's sidebar)."""
    if rel.rates is None:
        return "This model's card records no measured rates: it cannot tell what its verdicts mean here."
    said = {"fake": rel.fake_right, "real": rel.real_right}
    parts = [f"a {k.upper()} verdict is right {_chance(v)} of the time" if v is not None
             else f"a {k.upper()} verdict should not occur" for k, v in said.items()]
    return f"At {prevalence_words(rel.prevalence)}: {parts[0]}; {parts[1]}."
