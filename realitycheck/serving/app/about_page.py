"""About page: how RealityCheck works, what the numbers mean, and what it cannot do."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from realitycheck import REPO_ROOT
from realitycheck.analysis import plots
from realitycheck.model import model_limits
from realitycheck.model.checkpoints import ModelCard
from realitycheck.serving.app.errors import run_page
from realitycheck.serving.app.model_cache import active_model_path, card_of

REAL, FAKE = plots.COLORS["real"], plots.COLORS["fake"]

FLOW = """
1. **Image intake.** The file is decoded safely (`realitycheck.intake.images.load_image`): EXIF rotation is
   applied, transparency is put on white, animated GIFs use their first frame, and broken, truncated,
   oversized (over 50 MB or 40 megapixels) or non-image files are refused with a clear message.
2. **Faces.** The YuNet face detector finds each face and five landmarks (eyes, nose, mouth corners).
3. **Preprocessing from the model card.** Every checkpoint carries a card that says exactly how images
   must be prepared for it. Face-aligned models (the default) turn each face so the eyes are level
   and crop it to one fixed framing; each face gets its own verdict and the image takes the most
   suspicious one. Whole-image models resize the shorter side and crop the **centre square**. The
   colours are normalised either way.
4. **Classifier.** A convolutional network ({network}) outputs **p(fake)**, the probability that the
   photo is AI-generated.
5. **Decision.** The verdict is **FAKE** when p(fake) is at or above the threshold (the model card's,
   chosen on validation data, unless you move the slider), otherwise **REAL**. When the image's
   features lie outside what the model was trained on, it also says **unfamiliar image**: the verdict
   is then unreliable.
6. **Grad-CAM.** A heatmap shows which parts of the face (or centre square) the model judged pushed it towards its verdict,
   and a faithfulness check tests whether those parts really matter to it.
"""

NUMBERS = """
- **p(fake) / p(real)**: the model's probability (in %) that the photo is AI-generated / real; they add
  up to 100%. They are the model's confidence, not a guarantee: check the calibration chart on the
  Evaluate page to see how far they can be taken at face value.
- **Threshold**: p(fake) at or above it means FAKE. Raising it gives fewer false alarms on real photos
  but lets more fakes through; lowering it does the opposite.
- **Time (ms)**: decoding, face check and the model's forward pass for that image.
- **Does the heatmap matter to the model?** The highlighted 20% of the picture is hidden (filled in
  from its surroundings), then a random 20%. If hiding the highlighted part lowers the model's
  confidence clearly more than hiding random parts, the heatmap shows evidence the model really
  uses; if not, treat the heatmap with caution.
- **Where**: the evidence is described relative to the face the detector found and its landmarks (eyes,
  nose, mouth corners): "on the face, around the mouth", or "outside the face: clothing or background".
- **Accuracy**: share of photos given the right verdict. **Balanced accuracy**: the average of the hit
  rates on real and on fake photos (not flattered by an unbalanced test set).
- **ROC-AUC**: the chance that a random fake photo gets a higher p(fake) than a random real photo; 0.5 is
  guessing, 1.0 is perfect. It does not depend on the threshold.
- **Precision (fake)**: of the photos flagged as fake, the share that really are. **Recall (fake)**: of the
  fake photos, the share caught. **F1** balances the two.
- **False-alarm rate (real)**: the share of real photos wrongly flagged as fake.
"""

LICENCES = """
- **FFHQ** (Flickr-Faces-HQ, NVIDIA) images and the **StyleGAN**-generated faces used for training and
  evaluation are licensed **CC BY-NC-SA 4.0** (non-commercial, share-alike); models trained on them
  inherit that restriction in practice: research, education and demos.
- The example gallery in `sample_images/`: four AI-generated faces (SDXL, FLUX.1) from the SFHQ-T2I
  dataset, MIT licence (Copyright (c) 2024 David Beniaguev); four studio portraits from the Face
  Research Lab London Set by Lisa DeBruine and Benedict Jones, CC BY 4.0; two public-domain portraits
  (NASA, US Navy). Each file's source and licence: `sample_images/README.md`.
- The original project's examples, when shown, come from its public repository.
- RealityCheck itself is MIT-licensed; Grad-CAM comes from pytorch-grad-cam (MIT).
"""


RESPONSIBLE = """
- **p(fake) is a score, not the chance that this photo is fake.** What a FAKE verdict is worth depends
  on how common fakes are where your photos come from: set it in the sidebar ("Prevalence"), and each
  verdict says how often a verdict like it is right there.
- **A REAL verdict is not proof.** Faces from generators the model never saw are mostly missed.
- **Never the sole evidence against a person.** Treat a FAKE verdict as a reason to look further:
  the image's source, its provenance, other photos, asking the person.
- Uploads stay in this session's memory; reports and CSVs hold thumbnails and names: handle them
  as carefully as the photos.
"""


def _responsible_use_text() -> str | None:
    path = REPO_ROOT / "docs" / "responsible-use.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _from_card(describe: Callable[[ModelCard], str], none_loaded: str, unreadable: str) -> str:
    """What `describe` says of the active model's card; `none_loaded` / `unreadable` when there is no card to read."""
    path = active_model_path()
    if path is None:
        return none_loaded
    try:
        card = card_of(path)
    except Exception:  # noqa: BLE001 - an unreadable card is reported on the Models page
        return unreadable
    return describe(card)


def _network_words(card: ModelCard) -> str:
    p = card.preprocessing
    mirror = "; it averages each photo with its mirror image" if p.mirror_average else ""
    return (f"the active model **{card.name}** is a `{card.arch}` network reading {p.crop} px squares, "
            f"as its model card says{mirror}")


def _network() -> str:
    """The active model's architecture, read from its card (never a name written into this page)."""
    return _from_card(_network_words, "none loaded yet: see the Models page", "the active model's card cannot be read")


def _limits() -> str:
    """The active model's limitations, generated from its card (`model_limits`)."""
    return _from_card(lambda card: "\n".join(f"- {line}" for line in model_limits.limitations(card)),
                      "- No model is loaded yet: its limitations are shown here once one is (see the Models page).",
                      "- The active model's card cannot be read, so its limitations are unknown.")


def render() -> None:
    st.title("How RealityCheck works")
    st.markdown(
        f"RealityCheck tells whether a face photo is a real photograph "
        f'(<b style="color:{REAL}">REAL</b>) or AI-generated (<b style="color:{FAKE}">FAKE</b>), '
        "shows which parts of the face the decision rests on, and measures how well a model does on "
        "labelled photos. Real is always green and fake always red, in every chart.",
        unsafe_allow_html=True,
    )
    st.header("From photo to verdict")
    st.markdown(FLOW.format(network=_network()))
    st.header("What the numbers mean")
    st.markdown(NUMBERS)
    st.header("Limitations")
    st.warning("A detector trained on one family of generators is not a general fake detector.", icon=":material/warning:")
    st.markdown(_limits())
    st.header("Using it responsibly")
    st.markdown(RESPONSIBLE)
    guide = _responsible_use_text()
    if guide:
        with st.expander("The whole guide: what p(fake) means, the base-rate effect, blind spots, privacy, "
                         "legal caveats (docs/responsible-use.md)"):
            st.markdown(guide.split("\n", 1)[1] if guide.startswith("# ") else guide)
    else:
        st.caption("The full guide is docs/responsible-use.md in the RealityCheck repository.")
    st.header("Data and licences")
    st.markdown(LICENCES)
    st.header("Privacy")
    st.markdown("Uploaded photos stay in the memory of this server for your browser session only and are "
                "not written to the shared model folder; evaluation uploads are unpacked into a temporary "
                "folder that is deleted with the session. Session history is private to your tab.")


if __name__ == "__main__":  # run by st.navigation (Streamlit executes page files as __main__)
    run_page(render, "the About page")
