"""Putting a correction back into a picture.

* :func:`correction_weight` / :func:`feather_mask` / :func:`blend`: correct only inside a (feathered) mask and
  at a given strength, keeping an alpha channel untouched (what ``RestoreX.correct(strength=, mask=)`` does).
* :func:`correct_sequence_blended`: the same for a video clip (sequence.correct_sequence), used by the
  ExposureCorrectVideo node.

Pure torch. Images are (B, C, H, W) float in [0, 1] with C in {1, 3, 4}; masks are (B, H, W), (H, W) or
(B, 1, H, W) float in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .blending import blend, correction_weight, feather_mask
from .errors import ImageInputError
from .sequence import HOLD

__all__ = ["blend", "correct_sequence_blended", "correction_weight", "feather_mask"]

if TYPE_CHECKING:
    from .model import RestoreX


def correct_sequence_blended(model: RestoreX, frames: Tensor, *, window: int = 9, hold: int = HOLD, seed: int = 0,
                             steps: int | None = None, tile: int | None = None, overlap: int = 32,
                             strength: float = 1.0, mask: Tensor | None = None, feather: int = 0,
                             auto_strength: bool = True, max_memory: int | None = None,
                             progress: Callable[[int, int], None] | None = None,
                             interrupt: Callable[[], None] | None = None) -> Tensor:
    """:func:`.sequence.correct_sequence` on a clip, each frame blended back as ``RestoreX.correct`` blends.

    Args:
        frames: (T, C, H, W) float in [0, 1], C in {1, 3, 4}, on any device (each frame moves to the model's
            device when it runs; the result is made on ``frames``' device).
        mask: None, one mask for every frame, or one per frame ((T, H, W) or (T, 1, H, W)); any size.
        tile, overlap, max_memory: as in ``RestoreX.restore`` ("auto" planned for one frame).
        auto_strength: for weights with a correction gate, each frame keeps the share the gate gives it
            (:func:`.sequence.iter_corrected`).
        progress: called as (done, T) per frame; interrupt: called between frames, raises to stop.
    Returns:
        (T, C, H, W) in ``frames``' dtype.
    """
    from .sequence import check_frames, iter_corrected

    _, h, w = check_frames(frames)
    t_count = frames.shape[0]
    if mask is not None and mask.ndim >= 3 and mask.shape[0] not in (1, t_count):
        raise ImageInputError(f"{mask.shape[0]} masks for {t_count} frames; give one mask per frame or a single "
                              "mask for the whole clip")

    def weight(t: int) -> Tensor:  # (1, 1, H or 1, W or 1), made frame by frame: a clip of masks is large
        m = None if mask is None else mask if mask.ndim == 2 or mask.shape[0] == 1 else mask[t : t + 1]
        return correction_weight(m, batch=1, height=h, width=w, strength=strength, feather=feather)

    weight(0)  # checks the strength and the mask's layout before any work
    if strength == 0 or (mask is not None and not bool((mask > 0).any())):
        return frames.clone()
    out = torch.empty_like(frames)
    for t, corrected in iter_corrected(model, frames, window=window, hold=hold, seed=seed, steps=steps, tile=tile,
                                       overlap=overlap, max_memory=max_memory, auto_strength=auto_strength,
                                       progress=progress, interrupt=interrupt):
        out[t] = blend(frames[t : t + 1], corrected, weight(t).to(frames.device))[0]
    return out
