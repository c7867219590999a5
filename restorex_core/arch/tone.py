"""The global tone path (issue 22): one monotone curve per channel, chosen from the input's priors and histograms,
applied to the input before the Restormer, whose residual then does the local work.

Not in the paper. On the held-out data the defaults' error was a global curve (``training.metrics.best_curve``:
the best curve of the *input* scores at least as high as the best curve of any default's output), and a curve
read off the input's own priors (``training.curve_probe``) scored 31-33 dB on well-exposed photos where the
paper's network scores 20-26. A curve is pixel-wise, so it tiles, batches and scales to 8K exactly; it costs
0.17-0.36 M multiply-adds per image (the priors' size decides) plus a lookup per pixel.

``knots = 0`` (the default) is the paper's model: no tone module, no extra weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class ToneConfig:
    knots: int = 0  # linear segments per channel curve; 0: no tone path (the paper's model)
    bins: int = 32  # histogram bins per channel, one of the head's inputs
    hidden: int = 256  # the head MLP's width
    prior_dim: int = 256  # D of the priors read (pem.dim)
    num_priors: int = 4  # priors read (one per CLIP tap)
    feature_side: int = 256  # histograms are read at this long side: the same for a 512 px and an 8K photo
    guard: tuple[float, float] = (0.9, 1.0)  # from/to which brightest channel a pixel takes one gain (apply_curves)
    hist_gamma: float = 1.0  # histograms are read on x ** (1 / hist_gamma): > 1 gives the dark tones more bins

    def __post_init__(self) -> None:
        if self.knots < 0 or self.bins < 2 or self.feature_side < 8:
            raise ValueError(f"tone needs knots >= 0, bins >= 2 and feature_side >= 8, not {self.knots}, "
                             f"{self.bins} and {self.feature_side}")
        if not self.hist_gamma > 0:
            raise ValueError(f"tone.hist_gamma must be > 0, not {self.hist_gamma}")
        if not 0.0 <= self.guard[0] < self.guard[1] <= 1.0:
            raise ValueError(f"tone.guard must be two levels 0 <= low < high <= 1, not {self.guard}")

    @property
    def enabled(self) -> bool:
        return self.knots > 0

    @property
    def feature_dim(self) -> int:
        return self.num_priors * self.prior_dim + 3 * self.bins


def histograms(images: Tensor, bins: int, side: int, gamma: float = 1.0) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3 * bins): the square root of each channel's normalised histogram, read at
    most ``side`` pixels on the long side (antialiased), so every size of the same photo gives about the same.

    ``gamma`` > 1 bins ``x ** (1 / gamma)``, giving the dark tones more bins: 32 linear bins hold the camera
    model's -4 EV render of a test photo in 7 bins per channel, gamma 2.2 in 14 (tests/test_tone.py)."""
    h, w = images.shape[-2:]
    if max(h, w) > side:
        s = side / max(h, w)
        images = F.interpolate(images.float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                               antialias=True)
    x = images.float().clamp(0, 1)
    if gamma != 1.0:
        x = x ** (1.0 / gamma)
    idx = (x * bins).long().clamp(max=bins - 1).flatten(2)  # (B, 3, N)
    counts = torch.zeros(*idx.shape[:2], bins, device=idx.device).scatter_add_(2, idx, torch.ones_like(
        idx, dtype=torch.float32))
    return (counts / idx.shape[2]).sqrt().flatten(1)


def _lookup(curves: Tensor, x: Tensor) -> Tensor:
    """Piecewise-linear ``curves`` (B, C, K + 1) at ``x`` (B, C, N) in [0, 1] -> (B, C, N)."""
    k = curves.shape[2] - 1
    pos = x * k
    i = pos.floor().clamp(max=k - 1)
    frac = pos - i
    i = i.long()
    lo, hi = curves.gather(2, i), curves.gather(2, i + 1)
    return lo + (hi - lo) * frac


def apply_curves(images: Tensor, curves: Tensor, guard: tuple[float, float] | None = (0.9, 1.0)) -> Tensor:
    """(B, 3, H, W) through per-channel piecewise-linear ``curves`` (B, 3, K + 1), their outputs at 0, 1/K, ..., 1.

    The clipped-region guard: a pixel whose brightest channel m is at or above ``guard[1]`` is scaled as a whole,
    all channels by the gain the three curves' mean curve gives m (c(m) / m), blended in smoothly from
    ``guard[0]``. Near clipping the input's channels hold little tone and a curve fitted to an over-exposed
    photo is steep there; applied per channel, it multiplies the small differences between nearly white
    channels into a strong tint (a blown pink sky turned salmon-red, an orange band at a clipping edge). One
    gain per pixel keeps the ratios between its channels, so white stays neutral and a pale hue stays pale.
    ``guard = None``: free channel curves everywhere. Computed in fp32 (a 16-bit image keeps its tones);
    returns fp32.
    """
    b, c = images.shape[:2]
    if curves.shape[:2] != (b, c) or c != 3:
        raise ValueError(f"curves {tuple(curves.shape)} do not fit images {tuple(images.shape)}: (B, 3, K + 1)")
    x = images.float().clamp(0, 1).flatten(2)  # (B, 3, N)
    curves = curves.float()
    out = _lookup(curves, x)
    if guard is None:
        return out.view(images.shape)
    m = x.amax(1, keepdim=True)  # (B, 1, N)
    gain = _lookup(curves.mean(1, keepdim=True), m) / m.clamp(min=1e-3)
    low, high = guard
    t = ((m - low) / (high - low)).clamp(0, 1)
    t = t * t * (3 - 2 * t)  # smoothstep: no edge where the guard starts
    return (out + (x * gain - out) * t).view(images.shape)


def identity_curves(batch: int, knots: int, *, device: torch.device | None = None) -> Tensor:
    """(B, 3, K + 1): curves that leave every image as it is."""
    return torch.linspace(0, 1, knots + 1, device=device).expand(batch, 3, knots + 1).clone()


class ToneCurve(nn.Module):
    """Priors + histograms -> monotone curves from 0: softplus increments, summed (no curve can invert a tone).

    Feature statistics are buffers (set from the training features by the fit); the last layer starts at zero
    with its bias at softplus^-1(1), so an untrained head is the identity curve.
    """

    def __init__(self, config: ToneConfig) -> None:
        super().__init__()
        if not config.enabled:
            raise ValueError("ToneCurve needs tone.knots > 0 (0 means the model has no tone path)")
        self.config = config
        n, h = config.feature_dim, config.hidden
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.net = nn.Sequential(nn.Linear(n, h), nn.GELU(), nn.Dropout(0.1), nn.Linear(h, h), nn.GELU(),
                                 nn.Linear(h, 3 * config.knots))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, math.log(math.e - 1.0))

    def features(self, vectors: list[Tensor] | tuple[Tensor, ...], images: Tensor) -> Tensor:
        """The head's input: the input priors (N x (B, D)) and the images' histograms -> (B, feature_dim) fp32."""
        c = self.config
        hist = histograms(images, c.bins, c.feature_side, c.hist_gamma).to(vectors[0].device)
        return torch.cat([*(v.float() for v in vectors), hist], dim=1)

    def curves(self, features: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, 3, K + 1) fp32 curves, 0 at 0."""
        k = self.config.knots
        net_dtype = self.net[0].weight.dtype
        z = ((features.float() - self.feature_mean.float()) / self.feature_std.float()).to(net_dtype)
        steps = F.softplus(self.net(z).float()).view(-1, 3, k) / k  # (B, 3, K), each > 0
        return torch.cat([steps.new_zeros(steps.shape[0], 3, 1), steps.cumsum(2)], dim=2)

    def forward(self, vectors: list[Tensor] | tuple[Tensor, ...], images: Tensor) -> Tensor:
        return self.curves(self.features(vectors, images))

