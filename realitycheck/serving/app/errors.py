"""Errors on the page: one clear line, the details folded away, never a traceback.

Every page body runs under `run_page`, so an unexpected failure is logged on the server and shown as
one line instead of Streamlit's traceback (which would show server paths and code to the user).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st

from realitycheck.serving.app import public

log = logging.getLogger("realitycheck.serving.app")


def one_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


def show_error(message: str, details: str | None = None) -> None:
    """`st.error` with one line, plus an expander with the details when there are any.

    In public mode server paths are taken out of both (`access.redact`)."""
    message, details = public.safe(str(message)), public.safe(details) if details else details
    st.error(one_line(message), icon=":material/error:")
    if details and details.strip() and details.strip() != one_line(message):
        with st.expander("Details"):
            st.text(details)


def show_unexpected(exc: BaseException, where: str) -> None:
    """An unexpected failure: logged with its traceback on the server, shown as one line here."""
    log.exception("unexpected error in %s", where)
    show_error(
        f"Something went wrong in {where}: {one_line(exc)}",
        details=f"{type(exc).__name__}: {exc}\n\nThe full report is in the server log. "
                "Reload the page to start over; your session history is kept.",
    )


def run_page(body: Callable[[], None], where: str) -> None:
    """Run a page body; an unexpected exception becomes `show_unexpected` instead of a traceback.

    Streamlit's own control flow (st.rerun, st.stop, st.switch_page) derives from BaseException and
    passes through.
    """
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything a page may raise
        show_unexpected(exc, where)
