"""The provenance panel: what the file declares, shown beside the model's verdict (never mixed in).

All reading and weighing is `realitycheck.intake.provenance`; this only renders its `Provenance`.
"""

from __future__ import annotations

import streamlit as st

from realitycheck.intake import provenance as P
from realitycheck.serving.app import public

ICONS = {P.AI_GENERATED: ":material/smart_toy:", P.AI_EDITED: ":material/auto_fix_high:",
         P.CAMERA: ":material/photo_camera:", P.OTHER: ":material/description:", P.NONE: ":material/help:"}


def render(prov: P.Provenance | None, label: str | None, demo: bool = False, key: str = "") -> None:
    """A disagreement first (prominent), then the declaration, then the details folded away."""
    if prov is None:
        return
    clash = P.disagreement(prov, label)
    if clash:
        st.error(f"**Model and file disagree.** {clash}", icon=":material/report:")
    title = f"**What the file declares:** {P.KIND_WORDS[prov.kind]}"
    icon = ICONS.get(prov.kind)
    if prov.declares_ai and not clash:
        st.warning(f"{title}. {prov.summary}", icon=icon)
    elif prov.kind in (P.CAMERA, P.OTHER) and not clash:
        st.info(f"{title}. {prov.summary}", icon=icon)
    elif prov.kind == P.NONE:
        st.caption(f"{icon} {title}. {prov.summary}")
    else:
        st.caption(f"{icon} {prov.summary}")
    if demo or not (prov.evidence or prov.notes):
        return
    with st.expander("Provenance details"):
        for line in prov.evidence:
            st.markdown(f"- {line}")
        for note in prov.notes:
            st.caption(f":material/info: {note}")
        st.caption("Metadata is evidence about the file, not about the pixels: unsigned metadata can be forged, "
                   "and most shared images carry none. The verdict above is the model's alone.")


def render_counts(declared: dict | None) -> None:
    """Evaluate page: per-group counts of what the files declare, and the disagreements first."""
    if not declared:
        return
    n_clash = int(declared.get("disagreements") or 0)
    if n_clash:
        st.error(f"**{n_clash} file(s) where the model and the file's own declaration disagree** "
                 "(e.g. the file declares AI, the model says real).", icon=":material/report:")
    rows = [{"group": g, "files": c.get("files", 0), "declare AI": c.get("declared_ai", 0),
             **{P.KIND_WORDS[k]: c.get(k, 0) for k in P.KINDS}} for g, c in (declared.get("by_group") or {}).items()]
    with st.expander(f"What the files declare (provenance): {int(declared.get('declared_ai') or 0)} declare AI",
                     expanded=bool(n_clash)):
        st.dataframe(rows, hide_index=True, width="stretch")
        for c in declared.get("disagreement_files") or []:
            st.markdown(f"- `{public.shown_path(c['path'])}`: the file declares **{P.KIND_WORDS[c['provenance']]}**, "
                        f"the model says **{c['predicted']}**")
        st.caption("Read from each file's metadata; never part of p(fake). Unsigned metadata can be forged, and "
                   "most shared images carry none.")
