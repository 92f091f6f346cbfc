"""Public-mode glue: the deployment's settings (`realitycheck.serving.access`) as the pages need them.

The rules live in `realitycheck.serving.access`; here they meet session state (rate-limit stamps, this
session's own upload folders) and Streamlit messages.
"""

from __future__ import annotations

import dataclasses
import os
import time

import streamlit as st

from realitycheck.serving import access
from realitycheck.serving.app import state

RATE_STAMPS = "rate_stamps"  # list[float]: times of this session's recent classifications


def settings() -> access.AccessSettings:
    return access.current()


def is_public() -> bool:
    return settings().public


def session_dirs() -> list[str]:
    """This session's own temporary folders (uploaded checkpoints live there)."""
    out = []
    for tmp in st.session_state.get(state.TEMP_DIRS, []):
        name = getattr(tmp, "name", None) or getattr(tmp, "path", None)
        if name:
            out.append(str(name))
    return out


def allow_classifications(n: int) -> tuple[int, str | None]:
    """Count up to `n` classifications against the session's rate limit: (how many may run now, the
    message about the rest, or None when all may run)."""
    s = settings()
    if n <= 0 or s.classifications_per_minute <= 0:
        return n, None
    allowed, kept, wait = access.rate_allowance(st.session_state.get(RATE_STAMPS, []), time.monotonic(),
                                                s.classifications_per_minute, n)
    st.session_state[RATE_STAMPS] = kept
    if allowed == n:
        return n, None
    return allowed, access.rate_allowance_message(s.classifications_per_minute, allowed, n, wait)


def safe(text: str) -> str:
    """A message fit for this deployment: server paths removed in public mode."""
    return access.redact(text, settings())


def badge() -> None:
    """Sidebar note: which mode, and a settings file that was refused (then public, fail closed)."""
    s = settings()
    if s.problem:
        st.error(f"Settings file not used ({s.problem}); running in public mode.", icon=":material/lock:")
    elif s.public:
        st.caption(":material/lock: Public mode: uploads only; server paths are off.")


def shown_path(path, root: str | None = None) -> str:
    """A result's file as this deployment may show it: public mode shows it relative to the
    session's upload folder (or just its name), never the server folder it sits in."""
    p = str(path)
    if not is_public():
        return p
    if root and os.path.abspath(p).startswith(os.path.abspath(root) + os.sep):
        return os.path.relpath(os.path.abspath(p), os.path.abspath(root))
    return os.path.basename(p)


def shown_result(result, root: str | None = None):
    """An EvaluationResult copy whose paths and source are `shown_path`ed (for downloads); as is locally."""
    if not is_public():
        return result
    table = result.table.assign(path=[shown_path(p, root) for p in result.table["path"]],
                                error=[safe(str(e)) for e in result.table["error"]])
    return dataclasses.replace(result, table=table, source=safe(result.source))
