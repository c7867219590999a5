"""ExposureCorrect: the whole method in one node, with a strength and an optional (feathered) mask."""

from __future__ import annotations

import torch
from torch import Tensor

from .method_nodes import AUTO_STRENGTH, CATEGORY, FEATHER, MODEL, OVERLAP, SEED, STEPS, STRENGTH, TILE
from .runtime import ManagedRestoreX, image_out, prepare


class ExposureCorrect:
    """Corrects under- and over-exposure in one step (priors -> FFEDM -> Restormer). Gives the same pixels as
    the staged graph with the same seed, steps and tile."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL,
                "image": ("IMAGE", {"tooltip": "The photo(s) to correct; RGBA keeps its alpha untouched."}),
                "seed": SEED, "steps": STEPS,
                "strength": STRENGTH, "feather": FEATHER,
                "tile": TILE, "overlap": OVERLAP,
            },
            "optional": {"mask": ("MASK", {"tooltip": "Correct only where the mask is 1 (any size: resized to "
                                                      "the image). Without a mask the whole image is corrected."}),
                         "auto_strength": AUTO_STRENGTH},
        }

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("IMAGE",), ("image",), "correct", CATEGORY
    OUTPUT_TOOLTIPS = ("The corrected image.",)
    DESCRIPTION = " ".join(__doc__.split())

    def correct(self, model: ManagedRestoreX, image: Tensor, seed: int, steps: int, strength: float, feather: int,
                tile: int, overlap: int, mask: Tensor | None = None, auto_strength: bool = True) -> tuple[Tensor]:
        with torch.inference_mode():
            net, x, run = prepare(model, image, tile=tile)
            out = net.correct(x, seed=seed, steps=steps or None, overlap=overlap, strength=strength,
                              mask=None if mask is None else mask.to(x.device), feather=feather,
                              auto_strength=auto_strength, **run)
            return (image_out(out, image),)
