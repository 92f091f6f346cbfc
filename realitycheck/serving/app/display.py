"""How results are shown on every page: the verdict headline and what it means, thumbnails, counts and
durations in words."""

from __future__ import annotations

import base64
import html
import io

from PIL import Image

from realitycheck.analysis import plots
from realitycheck.analysis import prevalence as P
from realitycheck.model import inference
from realitycheck.serving.app import state

COLORS = plots.COLORS
THUMB_PX = 96


def verdict_html(label: str, p_fake: float, size: str = "normal", caveat: str | None = None) -> str:
    """The verdict headline; with a `caveat` (`face_table.verdict_caveat`) it is grey and says it is unreliable."""
    color = COLORS.get(label, plots.NEUTRAL) if not caveat else plots.NEUTRAL
    word = html.escape(label.upper()) + ("?" if caveat else "")
    note = (f'<div style="font-size:1.05rem;font-weight:600;color:#8a5a00">{html.escape(caveat[0].upper() + caveat[1:])}'
            "</div>") if caveat else ""
    if size == "large":
        return (f'<div style="font-size:3.2rem;font-weight:800;color:{color};line-height:1.1">{word}</div>{note}'
                f'<div style="font-size:1.3rem;color:#444">{p_fake:.0%} likely AI-generated · '
                f'{1 - p_fake:.0%} likely real</div>')
    return (f'<span style="font-size:1.6rem;font-weight:700;color:{color}">{word}</span>'
            f'<span style="color:#555"> &nbsp;p(fake) {p_fake:.1%} · p(real) {1 - p_fake:.1%}</span>{note}')


def verdict_meaning(clf: inference.Classifier, label: str, threshold: float) -> str:
    """The sentence beside a verdict: how often it is right at the session's prevalence (the sidebar's)."""
    rel = P.reliability(P.rates_from_card(clf.card), float(state.get(state.PREVALENCE)))
    return P.verdict_meaning(rel, label, threshold, plain=bool(state.get(state.DEMO)))


def duration_words(seconds: float) -> str:
    """An estimate in words: "under 1 s" rather than "about 0 s"."""
    return "under 1 s" if seconds < 1 else f"about {seconds:.0f} s"


def plural(n: int, word: str) -> str:
    """ "1 image", "2 images" (words whose plural adds an s)."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def thumbnail_data_url(img: Image.Image, px: int = THUMB_PX) -> str:
    """A small JPEG inline (data URL): table image columns show it without a file on the server."""
    thumb = img.convert("RGB").copy()
    thumb.thumbnail((px, px))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
