"""The sidebar every page shares: the active model and its card, how common fakes are, the threshold, demo mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from realitycheck.analysis import prevalence as P
from realitycheck.model.checkpoints import CheckpointError, ModelCard
from realitycheck.serving.app import public, state
from realitycheck.serving.app.errors import one_line
from realitycheck.serving.app.model_cache import active_model_path, card_of

PREVALENCE_CHOICES = [0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5]


def training_data_names(card: ModelCard) -> str:
    """The card's training data by folder name ("faces-140k-sample + real-world-faces"): the
    paths are the trainer's machine's, meaningless to someone reading the dashboard."""
    training = card.training or {}
    if training.get("sources"):  # named sources (a manifest): their names say it best
        return ", ".join(training["sources"])
    data = training.get("data")
    sources = (list(data) if isinstance(data, (list, tuple)) else [data]) + list(training.get("extra_real") or [])
    names = [Path(str(s).rstrip("/\\")).name or str(s) for s in sources if s]
    return " + ".join(dict.fromkeys(names))


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.1%}"


def sidebar() -> None:
    """Active model and its card, the decision threshold, demo mode."""
    with st.sidebar:
        public.badge()
        st.toggle("Demo mode", key=state.DEMO,
                  help="Large verdicts and plain-language explanations; hides the settings.")
        path = active_model_path()
        st.subheader("Active model")
        if path is None:
            st.warning("No trained weights: see the Models page.", icon=":material/warning:")
        else:
            try:
                card = card_of(path)
            except CheckpointError as exc:
                st.error(f"{path.name}: cannot be read ({one_line(exc)})")
                card = None
            if card is not None and state.get(state.THRESHOLD_FOR) != str(path):
                # a model's own threshold (chosen on its validation data) until the user moves the slider
                state.put(state.THRESHOLD, float(card.threshold))
                state.put(state.EVAL_THRESHOLD, float(card.threshold))
                state.put(state.THRESHOLD_FOR, str(path))
            if card is not None:
                _card(card, path)
        prevalence_control()
        if not state.get(state.DEMO):
            st.subheader("Decision")
            st.slider("Threshold: p(fake) at or above this is FAKE", min_value=0.0, max_value=1.0,
                      step=state.THRESHOLD_STEP, format="%.4f", key=state.THRESHOLD,
                      help="Raise it for fewer false alarms on real photos, lower it to catch more fakes.")


def _card(card: ModelCard, path: Path) -> None:
    """The active model's name, and (not in demo mode) what it is, what it learnt from, how it measured."""
    st.markdown(f"**{card.name}**  \n`{path.name}`")
    if state.get(state.DEMO):
        return
    st.caption(f"Architecture: {card.arch}")
    data = training_data_names(card)
    st.caption(f"Training data: {data or 'not recorded'}")
    test = (card.metrics or {}).get("test") or {}
    if not test:
        st.caption("Test metrics: none recorded in the model card")
        return
    c1, c2 = st.columns(2)
    c1.metric("Test accuracy", _pct(test.get("accuracy")))
    auc = test.get("roc_auc")
    c2.metric("Test ROC-AUC", "n/a" if auc is None else f"{auc:.3f}")
    n = f"{int(test['n'])} " if test.get("n") else ""
    where = f" of {data}" if data else ""
    st.caption(f"Measured on {n}held-out test images{where}, never used in training; "
               "your photos may differ: measure them on the Evaluate page.")


def prevalence_control() -> None:
    """Sidebar: how common fakes are among the photos checked (shown in demo mode too); the arithmetic
    is `realitycheck.analysis.prevalence`."""
    st.subheader("How common are fakes?" if state.get(state.DEMO) else "Prevalence")
    st.select_slider("Share of AI-generated photos among those you check", options=PREVALENCE_CHOICES,
                     key=state.PREVALENCE, format_func=P.prevalence_words,
                     help="The same verdict means much less when fakes are rare: at 1 in 1,000, most FAKE "
                          "verdicts of a model with 1% false alarms are false alarms. Each verdict then says "
                          "how often a verdict like it is right, from the model's measured rates.")
    path = active_model_path()
    if path is not None:
        try:
            rates = P.rates_from_card(card_of(path))
        except CheckpointError:
            return
        st.caption(P.both_words(P.reliability(rates, float(state.get(state.PREVALENCE)))))
