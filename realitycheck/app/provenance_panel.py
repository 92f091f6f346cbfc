"""The provenance panel: what the file declares, shown beside the model's verdict (never mixed in).

All reading and weighing is `realitycheck.provenance`; this only renders its `Provenance`.
"""

from __future__ import annotations

import streamlit as st

from realitycheck import provenance as P

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
