"""ExposureCorrectVideo: a clip (an IMAGE batch of frames) corrected without flicker."""

from __future__ import annotations

import torch
from torch import Tensor

from restorex_core.compose import correct_sequence_blended

from .method_nodes import AUTO_STRENGTH, CATEGORY, FEATHER, MODEL, OVERLAP, SEED, STEPS, STRENGTH, TILE
from .runtime import ManagedRestoreX, image_out, prepare


class ExposureCorrectVideo:
    """Corrects video frames without flicker: the same FFEDM noise for every frame, priors smoothed over a window
    of frames, brightness held steady at the same scene points (a hunting auto-exposure is evened out, cuts and
    real changes of light followed)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL,
                "frames": ("IMAGE", {"tooltip": "The clip: a batch of frames of one size (from Load Video, Load "
                                                "Image Batch, ...). RGBA keeps its alpha untouched."}),
                "window": ("INT", {"default": 9, "min": 1, "max": 99, "step": 2, "tooltip": "Frames the priors "
                                   "are smoothed over (odd, centred). 1 = each frame on its own, as Exposure "
                                   "Correct."}),
                "hold": ("INT", {"default": 0, "min": 0, "max": 9999, "tooltip": "Frames (odd) over which the "
                                 "brightness at the same scene points is held steady: a hunting or drifting camera "
                                 "is evened out, while a cut or a change of light starts afresh. 0 = the whole "
                                 "shot (each stretch between cuts and changes of light); 1 = not held."}),
                "seed": SEED, "steps": STEPS,
                "strength": STRENGTH, "feather": FEATHER,
                "tile": TILE, "overlap": OVERLAP,
            },
            "optional": {"mask": ("MASK", {"tooltip": "Correct only where the mask is 1: one mask for the whole "
                                                      "clip or one per frame (any size: resized to the frames)."}),
                         "auto_strength": AUTO_STRENGTH},
        }

    RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY = ("IMAGE",), ("frames",), "correct", CATEGORY
    OUTPUT_TOOLTIPS = ("The corrected frames.",)
    DESCRIPTION = " ".join(__doc__.split())

    def correct(self, model: ManagedRestoreX, frames: Tensor, window: int, hold: int, seed: int, steps: int,
                strength: float, feather: int, tile: int, overlap: int, mask: Tensor | None = None,
                auto_strength: bool = True) -> tuple[Tensor]:
        clip = frames.movedim(-1, 1)  # (T, C, H, W) on the host; each frame moves to the device when it runs
        with torch.inference_mode():  # memory and the tile planned for one frame
            net, _, run = prepare(model, frames[:1], tile=tile)
            out = correct_sequence_blended(net, clip, window=window, hold=hold, seed=seed, steps=steps or None,
                                           overlap=overlap, strength=strength, mask=mask, feather=feather,
                                           auto_strength=auto_strength, **run)
            return (image_out(out, frames),)
