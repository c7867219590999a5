"""Working with priors: BlendPriors (mix two sets) and VisualizePriors (a chart shown on the node)."""

from __future__ import annotations

import torch

from restorex_core import Priors

from .method_nodes import CATEGORY
from .preview import temp_previews
from .runtime import image_out, priors_out
from .visualize import render_priors


class BlendPriors:
    """Mixes two sets of priors, e.g. a photo's enhanced priors toward a reference photo's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "priors": ("RESTOREX_PRIORS", {"tooltip": "Priors at weight 0 (e.g. the photo's enhanced priors)."}),
            "toward": ("RESTOREX_PRIORS", {"tooltip": "Priors at weight 1 (e.g. a reference photo's). A single set "
                                                      "serves a whole batch."}),
            "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                 "0 = priors, 1 = toward; in between, a linear mix."}),
        }}

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("RESTOREX_PRIORS",), ("priors",), "blend", CATEGORY
    OUTPUT_TOOLTIPS = ("(1 - weight) * priors + weight * toward.",)
    DESCRIPTION = " ".join(__doc__.split())

    def blend(self, priors: Priors, toward: Priors, weight: float) -> tuple[Priors]:
        return (priors_out(priors.lerp(toward, weight)),)


class VisualizePriors:
    """Draws the prior vectors and their Fourier amplitudes as a chart, shown on the node and given as an IMAGE
    (to save it, or to compare charts side by side)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "priors": ("RESTOREX_PRIORS", {"tooltip": "Any priors: extracted, enhanced or blended."}),
            "width": ("INT", {"default": 896, "min": 400, "max": 4096, "step": 16, "tooltip": "Chart width in "
                                                                                              "pixels."}),
        }}

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("IMAGE",), ("chart",), "visualize", CATEGORY
    OUTPUT_TOOLTIPS = ("One chart per image of the batch: each prior's values and Fourier amplitudes.",)
    OUTPUT_NODE = True  # runs (and shows its chart) even with nothing connected to its output, as Preview Image
    DESCRIPTION = " ".join(__doc__.split())

    def visualize(self, priors: Priors, width: int) -> dict:
        with torch.inference_mode():
            chart = image_out(render_priors(priors, width=width))
        return {"ui": {"images": temp_previews(chart, "RestoreX_priors")}, "result": (chart,)}
