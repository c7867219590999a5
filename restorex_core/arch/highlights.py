"""Blown highlights kept bright (issue 22): where the input is clipped, the output is not let down to a grey veil.

Not in the paper. Where every channel of the input is clipped, the photo holds no detail and no colour, and a
network trained toward real targets outputs their mean there: on the default weights a flat grey-beige of about
215 /255, the same for a blown sky, a sunlit wall and a lamp, with no white left in the picture (on the held-out
over-exposed stack frames the output's 99th-percentile luma is 218 where the targets' is 241-248). This step lifts
the correction back toward white inside the clipped regions only:

    out = (1 - m) o + m max(o, level x)

``o`` is the network's output, ``x`` the input, ``level`` the brightness a clipped pixel comes back at (0.92: 235
/255, a clean highlight a shade below white) and ``m`` a mask of the clipped regions: a smoothstep of the input's
darkest channel from ``low`` to ``high``, then **eroded and blurred** by ``radius`` times the long side. Eroding
first keeps the soft edge inside the clipped region, so nothing glows over a dark mast or roof edge that meets
it, and isolated clipped specks (sensor noise at the clipping level) vanish instead of speckling a grey sky. The
mask is made at a reduced resolution (a blur radius of a few pixels) and upsampled, so an 8K photo costs about as
much as a 512 px one. ``max`` never darkens: a pixel the network already made brighter stays as it is.

Measured on the held-out over-exposed subsets (docs/weights_history.md, "v4.2"), the targets' own clipped regions
hold detail and colour from the darker frames, so a brighter highlight scores a little lower against them; by eye
the veil is gone. ``level = 0`` (the default) is the paper's model: no step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_RADIUS_PX = 4  # the mask is eroded and blurred at a resolution where the radius is about this many pixels
BAND = 1 << 22  # pixels per band of rows in the final blend: an 8K photo's temporaries stay small


@dataclass(frozen=True, kw_only=True)
class HighlightConfig:
    level: float = 0.0  # a clipped pixel's brightness after the step, of 1; 0: no step (the paper's model)
    low: float = 0.97  # the mask rises from 0 where the input's darkest channel is at `low`...
    high: float = 1.0  # ...to 1 where it is at `high`
    radius: float = 0.01  # the mask's erosion and blur, as a share of the image's long side

    def __post_init__(self) -> None:
        if not 0.0 <= self.level <= 1.0:
            raise ValueError(f"highlights.level must lie in [0, 1] (0: off), not {self.level}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"highlights needs 0 <= low < high <= 1, not low {self.low} and high {self.high}")
        if not 0.0 <= self.radius <= 0.1:
            raise ValueError(f"highlights.radius is a share of the long side in [0, 0.1], not {self.radius}")

    @property
    def enabled(self) -> bool:
        return self.level > 0.0


def _smoothstep(t: Tensor, low: float, high: float) -> Tensor:
    u = ((t - low) / (high - low)).clamp(0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _pool(m: Tensor, r: int, erode: bool) -> Tensor:
    """Separable (2r+1)-square min (``erode``) or mean filter of (B, 1, H, W), borders repeated."""
    if r < 1:
        return m
    k = 2 * r + 1
    for pad, kernel in (((r, r, 0, 0), (1, k)), ((0, 0, r, r), (k, 1))):
        p = F.pad(m, pad, mode="replicate")
        m = -F.max_pool2d(-p, kernel, stride=1) if erode else F.avg_pool2d(p, kernel, stride=1)
    return m


def clipped_mask(images: Tensor, config: HighlightConfig) -> Tensor:
    """The step's mask (B, 1, H, W) fp32 in [0, 1] of ``images`` (B, 3, H, W) in [0, 1]: the clipped regions,
    eroded and blurred by ``config.radius`` of the long side (module docstring)."""
    b, c, h, w = images.shape
    r = config.radius * max(h, w)
    factor = max(1, math.floor(r / MASK_RADIUS_PX))  # work where the radius is a few pixels
    m = _smoothstep(images.float().amin(1, keepdim=True), config.low, config.high)
    small = -F.max_pool2d(-m, factor, stride=factor, ceil_mode=True) if factor > 1 else m  # erodes as it shrinks
    rs = max(1, round(r / factor)) if r > 0 else 0
    small = _pool(_pool(small, rs, erode=True), rs, erode=False)
    if factor == 1:
        return small
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def keep_highlights(images: Tensor, restored: Tensor, config: HighlightConfig) -> Tensor:
    """``restored`` (B, 3, H, W) with the input ``images``' clipped regions lifted to ``config.level`` (module
    docstring), in bands of rows; in ``restored``'s dtype and device. Unchanged when the step is off."""
    if not config.enabled:
        return restored
    if images.shape != restored.shape or images.shape[1] != 3:
        raise ValueError(f"keep_highlights takes an RGB input and its correction of one shape, got "
                         f"{tuple(images.shape)} and {tuple(restored.shape)}")
    x = images.to(restored.device)
    mask = clipped_mask(x, config)
    if not bool((mask > 0).any()):
        return restored
    rows = max(1, BAND // max(1, restored.shape[0] * restored.shape[-1]))
    bands = []
    for lo in range(0, restored.shape[2], rows):
        o, xi, m = (t[:, :, lo:lo + rows].float() for t in (restored, x, mask))
        lifted = torch.maximum(o, config.level * xi)
        bands.append((o + m * (lifted - o)).clamp(0.0, 1.0).to(restored.dtype))
    return torch.cat(bands, dim=2)
