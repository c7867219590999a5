"""Image tensor checks and the channel/padding conventions shared by every entry point."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ImageInputError

LUMA = (0.299, 0.587, 0.114)  # Rec. 601, for returning grayscale inputs as grayscale
RANGE_TOLERANCE = 1.0 / 255  # values this far outside [0, 1] are rounding noise and are clamped


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB-encoded values (clamped to [0, 1]) -> linear light, same shape and dtype (IEC 61966-2-1)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear light (clamped to [0, 1]) -> sRGB-encoded values, same shape and dtype; inverse of srgb_to_linear."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


_XYZ_FROM_LINEAR = ((0.4124564, 0.3575761, 0.1804375),
                    (0.2126729, 0.7151522, 0.0721750),
                    (0.0193339, 0.1191920, 0.9503041))
_D65_WHITE = (0.95047, 1.0, 1.08883)


def srgb_to_lab(x: Tensor) -> Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> CIELAB (D65): L* in [0, 100], a*, b*; same shape and dtype.

    Differentiable everywhere (the cube root's steep start is the standard's linear segment), so losses
    can use it; metrics pass float64.
    """
    lin = srgb_to_linear(x)
    m = torch.tensor(_XYZ_FROM_LINEAR, dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    t = xyz / torch.tensor(_D65_WHITE, dtype=x.dtype, device=x.device).view(3, 1, 1)
    knee = (6 / 29) ** 3
    f = torch.where(t > knee, t.clamp_min(knee) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-3)


def check_images(images: Tensor, *, name: str = "images") -> Tensor:
    """Validate a (B, C, H, W) float batch in [0, 1] with C in {1, 3, 4}; return it clamped to [0, 1]."""
    if not isinstance(images, Tensor):
        raise ImageInputError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ImageInputError(f"{name} must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b == 0:
        raise ImageInputError(f"{name} is an empty batch (B = 0): pass at least one image")
    if c not in (1, 3, 4):
        raise ImageInputError(f"{name} has {c} channels; RestoreX takes 1 (gray), 3 (RGB) or 4 (RGBA) channels")
    if h == 0 or w == 0:
        raise ImageInputError(f"{name} has an empty size {h}x{w}")
    if not images.is_floating_point():
        raise ImageInputError(f"{name} must be float in [0, 1], got {images.dtype}; divide 8-bit data by 255")
    if not torch.isfinite(images).all():
        raise ImageInputError(f"{name} contains NaN or inf values; fix the node or file that produced them")
    lo, hi = float(images.min()), float(images.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ImageInputError(f"{name} must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]; "
                              "rescale it (8-bit data: divide by 255)")
    return images.clamp(0.0, 1.0)


@dataclass(frozen=True)
class SplitChannels:
    rgb: Tensor  # (B, 3, H, W)
    alpha: Tensor | None  # (B, 1, H, W), put back untouched
    gray: bool

    def merge(self, rgb: Tensor) -> Tensor:
        """Restored RGB -> the input's channel layout."""
        if self.gray:
            weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
            return (rgb * weights).sum(dim=1, keepdim=True)
        if self.alpha is not None:
            return torch.cat([rgb, self.alpha.to(rgb.device, rgb.dtype)], dim=1)
        return rgb


def split_channels(images: Tensor) -> SplitChannels:
    c = images.shape[1]
    if c == 1:
        return SplitChannels(images.expand(-1, 3, -1, -1), None, True)
    if c == 4:
        return SplitChannels(images[:, :3], images[:, 3:], False)
    return SplitChannels(images, None, False)


def pad_border(x: Tensor, margin: int) -> Tensor:
    """Mirror ``margin`` pixels onto all four sides (replicate where the image is too small to mirror).

    The Restormer's convolutions zero-pad at the image border, which it otherwise renders as a
    one-pixel coloured line along the edges; with a mirrored margin no output pixel is a border pixel.
    """
    if margin <= 0:
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if margin < h and margin < w else "replicate"
    return F.pad(x, (margin, margin, margin, margin), mode=mode)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple (reflect where the image is large enough, else replicate)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def luma_mean(images: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B,) mean Rec. 601 luma (gray: the channel itself; alpha ignored)."""
    if images.shape[1] == 1:
        return images.float().mean(dim=(1, 2, 3))
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    return (images[:, :3].float() * weights).sum(dim=1).mean(dim=(1, 2))
