"""Classical exposure-correction baselines, scored next to the model by ``training.evaluate``.

Every baseline maps a (3, H, W) float image in [0, 1] to one of the same shape; ``target`` is used only
by the oracle.

* ``identity``: the input itself (the floor).
* ``gamma-oracle``: the single global gamma ``x ** g`` that maximises PSNR against the GT.  It looks
  at the GT, so it is an ORACLE: an upper bound for any global power curve, not a method.
* ``auto-gamma``: the non-oracle gamma that maps the mean luminance (Rec. 709 weights on the sRGB
  values) to 0.5.
* ``clahe``: contrast-limited adaptive histogram equalisation (Zuiderveld 1994, written here in numpy)
  on the HSV value channel, 8 x 8 tiles, clip limit 0.01 of a tile's pixels (scikit-image's default
  normalisation), bilinear blending of the tile mappings; the RGB pixel is scaled by V'/V, which keeps
  hue and saturation.
* ``he``: global histogram equalisation of the HSV value channel, applied the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

LUMA = (0.2126, 0.7152, 0.0722)


def identity(x: Tensor, target: Tensor | None = None) -> Tensor:
    return x.clone()


def apply_gamma(x: Tensor, gamma: float) -> Tensor:
    return x.clamp(0.0, 1.0) ** gamma


def _levels(x: Tensor) -> np.ndarray:
    return np.round(x.detach().cpu().double().clamp(0, 1).numpy() * 255.0).astype(np.int64).ravel()


def best_gamma(x: Tensor, target: Tensor, *, lo: float = 0.05, hi: float = 20.0) -> float:
    """The gamma in [lo, hi] maximising the 8-bit PSNR of ``x ** gamma`` against ``target``.

    A 1-D search (log-spaced grid, then two finer grids around the best point).  Each candidate is
    scored exactly through the joint histogram of 8-bit input and target levels, so its cost does not
    depend on the image size (inputs that are not 8-bit are rounded to 8 bits for the search only).
    """
    joint = np.bincount(_levels(x) * 256 + _levels(target), minlength=256 * 256).reshape(256, 256)
    a_levels, b_levels = np.nonzero(joint)
    counts = joint[a_levels, b_levels].astype(np.float64)
    a, b = a_levels / 255.0, b_levels.astype(np.float64)

    def sse(g: float) -> float:
        return float((counts * (np.round(255.0 * a**g) - b) ** 2).sum())

    grid = np.exp(np.linspace(math.log(lo), math.log(hi), 61))
    for _ in range(3):
        errs = [sse(g) for g in grid]
        i = int(np.argmin(errs))
        left, right = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = float(grid[i])
        grid = np.exp(np.linspace(math.log(left), math.log(right), 21))
    return best


def gamma_oracle(x: Tensor, target: Tensor | None = None) -> Tensor:
    if target is None:
        raise ValueError("gamma-oracle needs the ground truth: it is an oracle, not a method")
    return apply_gamma(x, best_gamma(x, target))


def auto_gamma(x: Tensor, target: Tensor | None = None) -> Tensor:
    """Gamma with mean luminance ** gamma == 0.5."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    m = float((x.clamp(0, 1) * w).sum(0).mean())
    m = min(max(m, 1e-3), 1.0 - 1e-3)
    return apply_gamma(x, math.log(0.5) / math.log(m))


def _rescale_value(x: Tensor, v_new: np.ndarray) -> Tensor:
    """Replace the HSV value by ``v_new`` (H, W) in [0, 1], keeping hue and saturation."""
    rgb = x.detach().cpu().double().clamp(0, 1).numpy()  # (3, H, W)
    v = rgb.max(0)
    scale = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    out = np.where(v > 0, rgb * scale, v_new[None].repeat(3, 0))  # black pixels become grey
    return torch.from_numpy(out.clip(0.0, 1.0)).to(dtype=x.dtype, device=x.device)


def histogram_equalization(x: Tensor, target: Tensor | None = None) -> Tensor:
    """Global histogram equalisation of the value channel (level -> its CDF)."""
    v = np.round(x.detach().cpu().double().clamp(0, 1).numpy().max(0) * 255.0).astype(np.int64)
    cdf = np.cumsum(np.bincount(v.ravel(), minlength=256)) / v.size
    return _rescale_value(x, cdf[v])


def clahe_value(v: np.ndarray, *, tiles: int = 8, clip_limit: float = 0.01, bins: int = 256) -> np.ndarray:
    """CLAHE of one channel of integer levels ``v`` (H, W) in [0, bins); returns floats in [0, 1].

    Written here rather than calling scikit-image's ``equalize_adapthist``: that would add scikit-image and
    scipy (~100 MB) to the ``train`` install for one baseline; tests/test_evaluate.py checks this one
    against scikit-image (a test dependency only).
    """
    h, w = v.shape
    ny, nx = min(tiles, h), min(tiles, w)
    ys = np.round(np.linspace(0, h, ny + 1)).astype(int)
    xs = np.round(np.linspace(0, w, nx + 1)).astype(int)
    maps = np.empty((ny, nx, bins))
    for i in range(ny):
        for j in range(nx):
            tile = v[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            hist = np.bincount(tile.ravel(), minlength=bins).astype(np.float64)
            limit = max(1.0, math.floor(clip_limit * tile.size))
            excess = np.maximum(hist - limit, 0.0).sum()
            hist = np.minimum(hist, limit) + excess / bins  # redistribute the clipped counts uniformly
            maps[i, j] = np.cumsum(hist) / hist.sum()
    # Bilinear blend of the four nearest tile mappings, weights from the distance to tile centres.
    cy, cx = (ys[:-1] + ys[1:]) / 2.0, (xs[:-1] + xs[1:]) / 2.0
    fy = np.interp(np.arange(h) + 0.5, cy, np.arange(ny))
    fx = np.interp(np.arange(w) + 0.5, cx, np.arange(nx))
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    y1, x1 = np.minimum(y0 + 1, ny - 1), np.minimum(x0 + 1, nx - 1)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    return ((1 - wy) * (1 - wx) * maps[y0, x0, v] + (1 - wy) * wx * maps[y0, x1, v]
            + wy * (1 - wx) * maps[y1, x0, v] + wy * wx * maps[y1, x1, v])


def clahe(x: Tensor, target: Tensor | None = None, *, tiles: int = 8, clip_limit: float = 0.01) -> Tensor:
    """CLAHE on the HSV value channel (module docstring)."""
    v = np.round(x.detach().cpu().double().clamp(0, 1).numpy().max(0) * 255.0).astype(np.int64)
    return _rescale_value(x, clahe_value(v, tiles=tiles, clip_limit=clip_limit))


@dataclass(frozen=True)
class Baseline:
    key: str
    label: str  # as printed in the tables
    fn: Callable[[Tensor, Tensor | None], Tensor]
    oracle: bool = False


BASELINES: dict[str, Baseline] = {b.key: b for b in (
    Baseline("identity", "Input (identity)", identity),
    Baseline("gamma-oracle", "Best global gamma (oracle)", gamma_oracle, oracle=True),
    Baseline("auto-gamma", "Auto-gamma (mean luma -> 0.5)", auto_gamma),
    Baseline("clahe", "CLAHE (V, 8x8, clip 0.01)", clahe),
    Baseline("he", "Histogram equalisation (V)", histogram_equalization),
)}


def get_baseline(key: str) -> Baseline:
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {key!r}; use one of {', '.join(BASELINES)}")
    return BASELINES[key]
