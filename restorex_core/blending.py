"""Blending a correction back into a picture: at a strength, inside a (feathered) mask, alpha kept.

What ``RestoreX.correct(strength=, mask=, feather=)`` and :mod:`restorex_core.compose` use. Pure torch; images
are (B, C, H, W) float in [0, 1] with C in {1, 3, 4}; masks (B, H, W), (H, W) or (B, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ImageInputError


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
