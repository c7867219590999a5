"""PSNR and SSIM in the exposure-correction papers' protocol.

RGB at full resolution, both images rounded to 8 bits first (``round(clamp(x, 0, 1) * 255)``), data
range 255.  SSIM (Wang et al. 2004) uses an 11x11 Gaussian window with sigma 1.5 (a separable
kernel of radius 5, normalised to sum 1), K1 = 0.01, K2 = 0.03, population (not sample) covariances,
evaluated only where the window fits inside the image ("valid"), averaged over the pixels and then
over the three channels.  This equals scikit-image's
``structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255, channel_axis=-1)``, which filters with reflection and then crops the 5-pixel border.
Computed in float64 with torch, on whatever device the images are on.

Also the sky rule of the held-out look figures and the sky-rich training mix (:func:`sky_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5), scikit-image's truncate=3.5 -> an 11-tap window
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])  # the 4-neighbour Laplacian


def quantize(x: Tensor) -> Tensor:
    """Float image in [0, 1] -> float64 values in {0, ..., 255} (clamped and rounded, as when saved)."""
    return torch.round(x.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0)


def _as_batch(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, bool]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W) images, got shape {tuple(pred.shape)}")
    single = pred.dim() == 3
    return (pred[None], target[None], True) if single else (pred, target, False)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of 8-bit-rounded images.

    Args:
        pred, target: (C, H, W) or (B, C, H, W) float in [0, 1].
    Returns:
        a scalar tensor for one image, (B,) for a batch; ``inf`` where the images are identical.
    """
    p, t, single = _as_batch(pred, target)
    mse = (quantize(p) - quantize(t)).pow(2).flatten(1).mean(1)
    out = 10.0 * torch.log10(DATA_RANGE**2 / mse)  # mse == 0 gives inf
    return out[0] if single else out


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS, *, device=None) -> Tensor:
    """The normalised 1-D Gaussian taps, (2 * radius + 1,) float64."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter(x: Tensor, taps: list[float]) -> Tensor:
    """Separable 'valid' filtering of (..., H, W) as in-place weighted sums of shifted views.

    (Several times faster than float64 ``conv2d``, which has no optimised CPU kernel.)
    """
    n = len(taps)
    w, h = x.shape[-1] - n + 1, x.shape[-2] - n + 1
    rows = x[..., :, 0:w] * taps[0]
    for k in range(1, n):
        rows.add_(x[..., :, k:k + w], alpha=taps[k])
    out = rows[..., 0:h, :] * taps[0]
    for k in range(1, n):
        out.add_(rows[..., k:k + h, :], alpha=taps[k])
    return out


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM of 8-bit-rounded RGB images, averaged over channels (see the module docstring).

    Args:
        pred, target: (C, H, W) or (B, C, H, W) float in [0, 1], H and W >= 11.
    Returns:
        a scalar tensor for one image, (B,) for a batch.
    """
    p, t, single = _as_batch(pred, target)
    b, c, h, w = p.shape
    win = 2 * SSIM_RADIUS + 1
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {h}x{w}")
    g = gaussian_window().tolist()
    x, y = quantize(p), quantize(t)
    mu_x, mu_y, xx, yy, xy = _filter(torch.stack([x, y, x * x, y * y, x * y]), g)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    out = s.reshape(b, c, -1).mean(-1).mean(-1)  # per channel, then over channels
    return out[0] if single else out


def image_metrics(pred: Tensor, target: Tensor) -> tuple[float, float]:
    """(PSNR dB, SSIM) of one (C, H, W) image pair as Python floats."""
    return float(psnr(pred, target)), float(ssim(pred, target))


def best_curve(pred: Tensor, target: Tensor) -> Tensor:
    """``pred`` through the per-channel global tone curve that brings it closest to ``target`` (least squares):
    each 8-bit level of a channel of ``pred`` becomes the mean of ``target`` over the pixels at that level.
    No global curve, monotone or not, scores higher; ``psnr(best_curve(p, t), t)`` is what ``p`` would score
    with its global tone right and its local content as it is (issue 22: the defaults' error is global).

    Args:
        pred, target: (C, H, W) float in [0, 1], same shape.
    Returns:
        (C, H, W) float64 in [0, 1].
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"best_curve takes two (C, H, W) images of one shape, not {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    levels = quantize(pred).long().flatten(1)  # (C, HW) in 0..255
    t = target.detach().to(torch.float64).clamp(0.0, 1.0).flatten(1)
    sums = torch.zeros(pred.shape[0], 256, dtype=torch.float64).scatter_add_(1, levels, t)
    counts = torch.zeros_like(sums).scatter_add_(1, levels, torch.ones_like(t))
    curve = sums / counts.clamp(min=1.0)
    return curve.gather(1, levels).view(pred.shape)


def detail(image: Tensor) -> float:
    """Fine detail of one (3, H, W) image: mean |Laplacian| (:data:`LAPLACE`, each channel, no padding)."""
    k = LAPLACE.to(image).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(torch.nn.functional.conv2d(image[None, :3], k, groups=3).abs().mean())


def detail_ratio(output: Tensor, target: Tensor) -> float:
    """Fine detail of output against target (:func:`detail`): 1.0 keeps the target's texture; below 1 is smoothed
    (a denoiser that wipes texture off clean photos), above 1 sharpened or noisy."""
    return detail(output) / max(detail(target), 1e-8)


def mean_or_nan(values: Sequence[float]) -> float:
    """The mean of ``values``; NaN for none (a table cell with no image to average)."""
    return sum(values) / len(values) if values else math.nan


SKY = (55.0, -8.0)  # a pixel with CIELAB L* above and b* below these is light blue: sky-like
MIN_SKY = 0.02  # the fraction of sky-like pixels from which an image counts as showing a blue sky


def sky_mask(lab: Tensor) -> Tensor:
    """(3, H, W) CIELAB -> (H, W) bool: the light-blue, sky-like pixels (:data:`SKY`)."""
    return (lab[0] > SKY[0]) & (lab[2] < SKY[1])
