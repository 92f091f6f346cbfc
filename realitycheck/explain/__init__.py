"""Why did the model say "fake"? Class-activation heatmaps, checked for faithfulness, drawn for people.

Built on pytorch-grad-cam. `explain()` (or an `Explainer` you hold) returns one `Explanation` per
image: a heatmap in [0, 1] at the size of the image region the model actually saw
(`Preprocessing.crop_box`), the class it explains (the predicted one unless asked otherwise), and a
faithfulness check (does removing the hottest 20% of pixels hurt the model's confidence more than
removing a random 20%?).

| module | owns |
|---|---|
| `methods` | the registry of CAM methods: factory, slow or not, needs gradients, the note for users |
| `explainer` | running a method on a model without disturbing it; the private copy and its lifetime |
| `faithfulness` | the remove-the-hottest-pixels check and its sentence |
| `render` | overlays, outlines, colour bars, panels, PNG bytes |
"""

from realitycheck.explain.explainer import (
    DEFAULT_BATCH_SIZE,
    Explainer,
    Explanation,
    PrivateCopy,
    estimate_seconds,
    explain,
    explainer_for,
    model_lock,
    shared_copy,
)
from realitycheck.explain.faithfulness import REMOVE_FRACTION, Faithfulness
from realitycheck.explain.methods import (
    DEFAULT_METHOD,
    METHOD_NOTES,
    METHODS,
    SLOW_METHODS,
    Method,
    get_method,
)
from realitycheck.explain.render import (
    HotRegion,
    colorbar_image,
    hot_regions,
    outline_hot_regions,
    overlay,
    render_panel,
    side_by_side,
    to_png_bytes,
)

__all__ = [
    "METHODS", "SLOW_METHODS", "DEFAULT_METHOD", "METHOD_NOTES", "Method", "get_method", "Explanation",
    "Explainer", "PrivateCopy", "shared_copy", "Faithfulness", "REMOVE_FRACTION", "DEFAULT_BATCH_SIZE",
    "explain", "explainer_for", "estimate_seconds", "model_lock", "hot_regions", "HotRegion",
    "overlay", "outline_hot_regions", "side_by_side", "colorbar_image", "render_panel", "to_png_bytes",
]
