"""What a model cannot do, in plain words, from its own card (never text written for another model).

The About page's limitations used to describe the first model's training data; a card records the
sources a model was trained on, how it frames faces and its held-out rate on each source, so the
limitations follow whichever model is active.
"""

from __future__ import annotations

from pathlib import Path


def _names(card) -> tuple[list[str], list[str], list[str]]:
    """(real sources, fake sources, sources of unknown class) the card says the model was trained on."""
    training = card.training or {}
    per_source = ((card.metrics or {}).get("test") or {}).get("per_source") or []
    label = {r["source"]: r["label"] for r in per_source}
    named = list(training.get("sources") or [])
    if not named:  # older cards: folders, by their last component (never a path of the trainer's machine)
        data = training.get("data")
        folders = (list(data) if isinstance(data, (list, tuple)) else [data]) + list(training.get("extra_real") or [])
        named = [Path(str(s).rstrip("/\\")).name for s in folders if s]
        for s in training.get("extra_real") or []:
            label.setdefault(Path(str(s).rstrip("/\\")).name, "real")
    named = list(dict.fromkeys(named))
    return ([s for s in named if label.get(s) == "real"], [s for s in named if label.get(s) == "fake"],
            [s for s in named if s not in label])


def limitations(card) -> list[str]:
    """Markdown bullets: what this model was trained on, where it measured weakest, how it frames faces."""
    real, fake, unknown = _names(card)
    out = []
    if real or fake or unknown:
        parts = ([f"real photos from {', '.join(real)}"] if real else []) + (
            [f"AI-generated faces from {', '.join(fake)}"] if fake else []) + (
            [f"{', '.join(unknown)} (real and AI-generated photos)"] if unknown else [])
        out.append(f"**{card.name}** was trained on {'; '.join(parts)}. It learns the traces of the generators "
                   "in that data.")
    else:
        out.append(f"**{card.name}**'s card does not record its training data: measure it on your own labelled "
                   "photos (Evaluate page) before trusting it.")
    out.append("Images from **other generators** (other GANs or diffusion models, face swaps, future models) "
               "**may not be detected**: a REAL verdict is not proof that a photo is real.")
    per_source = ((card.metrics or {}).get("test") or {}).get("per_source") or []
    fakes = [r for r in per_source if r.get("label") == "fake"]
    reals = [r for r in per_source if r.get("label") == "real"]
    if fakes:
        r = min(fakes, key=lambda r: r["rate"])
        out.append(f"Even on a generator it was trained on, not every fake is caught: on its held-out test images "
                   f"it detected {r['rate']:.1%} of the {r['source']} fakes (95% interval {r['ci95_low']:.1%} to "
                   f"{r['ci95_high']:.1%}, {r['n']} images).")
    if reals:
        r = max(reals, key=lambda r: r["rate"])
        out.append(f"**Real photos raise false alarms**, more so far from its training data (phone snapshots, "
                   f"group photos, profile views, filters, screenshots): on its held-out test images it flagged "
                   f"{r['rate']:.1%} of the {r['source']} photos as fake ({r['n']} images).")
    else:
        out.append("**Real photos far from the training data** (phone snapshots, group photos, profile views, "
                   "heavy filters, screenshots) **may raise false alarms**.")
    pre = card.preprocessing
    if getattr(pre, "align", None) == "face":
        out.append(f"Each face is judged in one fixed {pre.crop} px framing and the image takes its most "
                   "suspicious face; small or blurred faces are unreliable, and with no face found it sees "
                   "only the centre square of the image.")
    else:
        out.append(f"It judges the centre square of the whole image ({pre.crop} px after resizing), not each "
                   "face: a face near the edge may be cut off, and several faces share one verdict.")
    out.append("Grad-CAM heatmaps are coarse (a grid of about 7x7 cells, upsampled) and show where the model "
               "looked, not why in human terms.")
    out.append("Never use a verdict on its own to accuse anyone of anything.")
    return out
