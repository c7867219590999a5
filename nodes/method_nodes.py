"""The method's three parts as nodes: ExtractCLIPPriors -> FFEDMEnhance -> RestormerInject.

Extract CLIP Priors keeps its input name ``stage`` (saved workflows refer to it); the core calls it ``source``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from restorex_core import Priors

from .runtime import ManagedRestoreX, image_out, interrupt, prepare, priors_out, progress

CATEGORY = "image/restoration/RestoreX"
MODEL = ("RESTOREX_MODEL", {"tooltip": "From Load RestoreX Model."})
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Seed of the FFEDM noise x_T; the same seed gives the same result on every device."})
STEPS = ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "FFEDM reverse steps; 0 = all the steps the "
                                                                 "model was trained with (4 for the paper model)."})
TILE = ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip": "Restormer tile size in pixels; 0 = "
                "automatic from the free memory (untiled when it fits). Out of memory halves the tile."})
OVERLAP = ("INT", {"default": 32, "min": 0, "max": 1024, "step": 8, "tooltip": "Overlap between tiles in pixels: "
                   "at least 8, and at most (tile - 8) / 2."})
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                      "tooltip": "Blend with the input: 0 = unchanged, 1 = fully corrected."})
AUTO_STRENGTH = ("BOOLEAN", {"default": True,
                             "tooltip": "Leave well-exposed photos alone: weights with a correction gate (the "
                                        "bundled default) give each photo only the share of the correction it "
                                        "needs, and a good photo comes back unchanged. Off: always the full "
                                        "correction. Weights without a gate always correct in full."})
FEATHER = ("INT", {"default": 16, "min": 0, "max": 512,
                   "tooltip": "Soft edge of the mask, in pixels (Gaussian). Ignored without a mask."})


class ExtractCLIPPriors:
    """CLIP block features of the image -> four prior vectors (the Prior Extraction Module)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": MODEL,
            "image": ("IMAGE", {"tooltip": "The image the priors describe (RGB, RGBA or any batch)."}),
            "stage": (["input", "reference"], {"default": "input", "tooltip": "input: a badly exposed photo "
                      "(enhance its priors with FFEDM next). reference: take the image as well exposed (priors "
                      "of a reference photo: blend them in, or inject them directly)."}),
        }}

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("RESTOREX_PRIORS",), ("priors",), "extract", CATEGORY
    OUTPUT_TOOLTIPS = ("One prior vector per tapped CLIP block, per image.",)
    DESCRIPTION = " ".join(__doc__.split())

    def extract(self, model: ManagedRestoreX, image: Tensor, stage: str) -> tuple[Priors]:
        net = model.load()
        with torch.inference_mode():
            interrupt()
            return (priors_out(net.extract_priors(model.image_in(image), source=stage)),)


class FFEDMEnhance:
    """Fourier-domain diffusion (FFEDM) turns a badly exposed photo's priors into a well-exposed image's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": MODEL, "priors": ("RESTOREX_PRIORS", {"tooltip": "Input-stage priors from "
                             "Extract CLIP Priors."}), "seed": SEED, "steps": STEPS}}

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("RESTOREX_PRIORS",), ("priors",), "enhance", CATEGORY
    OUTPUT_TOOLTIPS = ("Enhanced priors, ready for Restormer Inject.",)
    DESCRIPTION = " ".join(__doc__.split())

    def enhance(self, model: ManagedRestoreX, priors: Priors, seed: int, steps: int) -> tuple[Priors]:
        net = model.load()
        with torch.inference_mode():
            out = net.enhance_priors(priors, steps=steps or None, seed=seed, callback=progress(), interrupt=interrupt)
        return (priors_out(out),)


class RestormerInject:
    """The prior-injected Restormer: corrects the image guided by the priors (tiled, out-of-memory safe)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": MODEL,
            "image": ("IMAGE", {"tooltip": "The image to correct; RGBA keeps its alpha untouched."}),
            "priors": ("RESTOREX_PRIORS", {"tooltip": "Enhanced, reference or blended priors: one set per image, "
                                                      "or one set for the whole batch."}),
            "tile": TILE, "overlap": OVERLAP,
        }}

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("IMAGE",), ("image",), "inject", CATEGORY
    OUTPUT_TOOLTIPS = ("The corrected image.",)
    DESCRIPTION = " ".join(__doc__.split())

    def inject(self, model: ManagedRestoreX, image: Tensor, priors: Priors, tile: int, overlap: int) -> tuple[Tensor]:
        with torch.inference_mode():
            net, x, run = prepare(model, image, tile=tile)
            return (image_out(net.restore(x, priors, overlap=overlap, **run), image),)
