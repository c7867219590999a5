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
import torch.nn.functional as F
from torch import Tensor

from .errors import ImageInputError
from .sequence import HOLD

if TYPE_CHECKING:
    from .model import RestoreX


def feather_mask(mask: Tensor, radius: int) -> Tensor:
    """Soften a mask's edge with a separable Gaussian (sigma = radius / 2, kernel 2 * radius + 1).

    Args:
        mask: (B, 1, H, W) float in [0, 1].
        radius: feather width in pixels; 0 returns the mask unchanged. An all-zero mask stays exactly zero.
    """
    if radius < 0:
        raise ValueError(f"feather radius must be >= 0, got {radius}")
    if radius == 0:
        return mask
    sigma = radius / 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=mask.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    out = F.pad(mask, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))  # along W
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))  # along H
    return out.clamp(0.0, 1.0)


def correction_weight(mask: Tensor | None, *, batch: int, height: int, width: int, strength: float,
                      feather: int = 0) -> Tensor:
    """Per-pixel weight w of the corrected image: ``out = (1 - w) * original + w * corrected``.

    Args:
        mask: None (everywhere) or a mask of any size (resized bilinearly to H x W); a batch of one serves
            every image.
        strength: 0 (unchanged) .. 1 (fully corrected).
        feather: edge softening radius in pixels (see :func:`feather_mask`).
    Returns:
        (B or 1, 1, H or 1, W or 1) float32 in [0, 1].
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if mask is None:
        return torch.full((1, 1, 1, 1), float(strength))
    m = mask.detach().float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ImageInputError(f"a mask must be (B, H, W), (H, W) or (B, 1, H, W), got shape {tuple(mask.shape)}")
    if m.shape[0] not in (1, batch):
        raise ImageInputError(f"a batch of {m.shape[0]} masks cannot serve a batch of {batch} images; "
                              "give one mask per image or a single mask for all")
    if not torch.isfinite(m).all():
        raise ImageInputError("the mask contains NaN or infinite values")
    m = m.clamp(0.0, 1.0)
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return feather_mask(m, feather) * float(strength)


def blend(original: Tensor, corrected: Tensor, weight: Tensor) -> Tensor:
    """``lerp(original, corrected, weight)`` on the colour channels; an alpha channel (C = 4) is kept as is.

    A weight of exactly 0 gives ``original`` back bit for bit, and exactly 1 gives ``corrected``.
    """
    if original.shape != corrected.shape:
        raise ImageInputError(f"cannot blend images of shapes {tuple(original.shape)} and {tuple(corrected.shape)}")
    out = torch.lerp(original, corrected.to(original), weight.to(original))
    if original.shape[1] == 4:
        out[:, 3:] = original[:, 3:]
    return out


def correct_sequence_blended(model: RestoreX, frames: Tensor, *, window: int = 9, hold: int = HOLD, seed: int = 0,
                             steps: int | None = None, tile: int | None = None, overlap: int = 32,
                             strength: float = 1.0, mask: Tensor | None = None, feather: int = 0,
                             max_memory: int | None = None, progress: Callable[[int, int], None] | None = None,
                             interrupt: Callable[[], None] | None = None) -> Tensor:
    """:func:`.sequence.correct_sequence` on a clip, each frame blended back as ``RestoreX.correct`` blends.

    Args:
        frames: (T, C, H, W) float in [0, 1], C in {1, 3, 4}, on any device (each frame moves to the model's
            device when it runs; the result is made on ``frames``' device).
        mask: None, one mask for every frame, or one per frame ((T, H, W) or (T, 1, H, W)); any size.
        tile, overlap, max_memory: as in ``RestoreX.restore`` ("auto" planned for one frame).
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
                                       overlap=overlap, max_memory=max_memory, progress=progress,
                                       interrupt=interrupt):
        out[t] = blend(frames[t : t + 1], corrected, weight(t).to(frames.device))[0]
    return out
