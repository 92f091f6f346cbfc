"""Models page panel: the model registry's versions (`realitycheck learn`), switch to one, roll back one step.

The active version is the deployment's default model (CLI and dashboard alike), so this panel is
offered only in local mode; the rules are `realitycheck.model.registry`'s.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from realitycheck.model import registry
from realitycheck.model.inference import default_weights_path
from realitycheck.serving.app import public, state
from realitycheck.serving.app.errors import show_error


def _rows(versions: list[dict], active_id: str | None) -> pd.DataFrame:
    rows = []
    for v in versions:
        h = (v.get("gate") or {}).get("holdout") or {}
        rows.append({"version": v["id"], "active": v["id"] == active_id, "status": v["status"],
                     "parent": v.get("parent") or "", "cases used": len(v.get("cases_used") or []),
                     "holdout accuracy": (f"{h['current_accuracy']:.1%} -> {h['candidate_accuracy']:.1%} (n={h['n']})"
                                          if h.get("n") else ""),
                     "created": v.get("created", "")})
    return pd.DataFrame(rows)


def _switched(message: str) -> None:
    state.put(state.ACTIVE_MODEL, None)  # this session follows the new default
    state.get(state.FLASH).append(message)
    st.rerun()


def render() -> None:
    if public.is_public():
        return
    try:
        versions = registry.versions()
        active = registry.active()
    except registry.RegistryError as exc:
        show_error(str(exc))
        return
    st.subheader("Versions (learned from reviewed cases)")
    if not versions:
        st.caption("No versions yet: `realitycheck learn` fine-tunes a candidate on the cases you reviewed, gates it "
                   "and records it here.")
        return
    st.dataframe(_rows(versions, active["id"] if active else None), hide_index=True, width="stretch",
                 key="versions_table")
    c1, c2, c3 = st.columns([1.2, 1, 1])
    choice = c1.selectbox("Version", [v["id"] for v in versions], key="versions_choice",
                          format_func=lambda i: f"{i} ({next(v['status'] for v in versions if v['id'] == i)})")
    try:
        if c2.button("Make it the default model", key="versions_use"):
            v = registry.use(choice, base_path=default_weights_path())
            _switched(f"{v['id']} is now the default model for the CLI and every dashboard session.")
        if c3.button("Roll back one step", key="versions_rollback", disabled=not active):
            v = registry.rollback()
            _switched(f"Rolled back: {v['id']} is the default model again.")
    except registry.RegistryError as exc:
        show_error(str(exc))
