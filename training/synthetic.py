"""Synthetic exposure errors rendered from well-exposed photographs.

Camera model (an "unprocessing" model in the spirit of Brooks et al., CVPR 2019, written here from
its equations).  A camera maps sensor irradiance ``E`` in [0, 1] to an 8-bit sRGB value as

    I = round(255 * T(S(clip(E + n, 0, 1)))) / 255

with ``S`` the sRGB OETF (IEC 61966-2-1), ``T(x) = 3x^2 - 2x^3`` a smooth S-shaped tone curve
(inverse ``T^-1(y) = 1/2 - sin(asin(1 - 2y) / 3)``), ``clip`` the sensor saturating at full well, and
``n`` Poisson-Gaussian sensor noise: ``E + n = k * Poisson(E / k) + N(0, r^2)`` with shot-noise gain
``k`` and read noise ``r``, both sampled log-uniformly per image.  To change the exposure by ``ev``
stops we invert the camera on the well-exposed photo ``G`` (``E = S^-1(T^-1(G))``, noise and
quantisation of ``G`` ignored), scale the irradiance by ``2**ev`` and run the camera forward again.
Because the noise acts on the scaled irradiance, an under-exposed render collects fewer "photons"
and is relatively noisier, as on a real sensor; an over-exposed render clips its highlights.

The target of each item is the photo itself.  Items are deterministic functions of
``(seed, epoch, index)``: call ``set_epoch`` to draw fresh exposures each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import IMAGE_EXTS, DatasetError, ev_label, load_image


def srgb_decode(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] -> sRGB-encoded."""
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def tone_curve(x: np.ndarray) -> np.ndarray:
    """The camera's S-curve ``3x^2 - 2x^3`` on [0, 1]."""
    return 3.0 * x**2 - 2.0 * x**3


def inverse_tone_curve(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`tone_curve` on [0, 1]."""
    return 0.5 - np.sin(np.arcsin(np.clip(1.0 - 2.0 * y, -1.0, 1.0)) / 3.0)


def render_exposure(image: np.ndarray, ev: float, rng: np.random.Generator | None = None, *,
                    shot: float = 0.0, read: float = 0.0) -> np.ndarray:
    """Re-expose a well-exposed sRGB photo by ``ev`` stops through the camera model above.

    Args:
        image: (H, W, 3) float in [0, 1], sRGB.
        ev: exposure change in stops (negative darkens).
        rng: noise generator; required when ``shot`` or ``read`` is non-zero.
        shot: shot-noise gain ``k`` (the irradiance of one "photon"); 0 disables it.
        read: read-noise standard deviation ``r`` in irradiance units; 0 disables it.
    Returns:
        (H, W, 3) float32 in [0, 1], quantised to 8 bits.
    """
    e = srgb_decode(inverse_tone_curve(image.astype(np.float64))) * 2.0**ev  # irradiance seen by the sensor
    if shot > 0 or read > 0:
        if rng is None:
            raise ValueError("render_exposure needs an rng when noise is on")
        if shot > 0:
            e = rng.poisson(np.maximum(e, 0.0) / shot) * shot
        if read > 0:
            e = e + rng.normal(0.0, read, size=e.shape)
    out = tone_curve(srgb_encode(np.clip(e, 0.0, 1.0)))
    return (np.round(out * 255.0) / 255.0).astype(np.float32)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > 0 else 0.0


def find_images(root: str | Path) -> list[Path]:
    """Every image file below ``root`` (recursive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DatasetError(f"no images below {root}")
    return files


class SyntheticExposureDataset(Dataset):
    """Badly exposed renders of well-exposed photos (camera model in the module docstring).

    Args:
        files: the well-exposed photos (see :func:`find_images`).
        ev_range: EV shift sampled uniformly from this interval, avoiding ``|ev| < min_abs_ev``.
        evs: fixed EV shifts instead of sampling; the dataset then has ``len(files) * len(evs)`` items.
        seed: base seed; each item draws from ``default_rng((seed, epoch, index))``.
        noise: sample Poisson-Gaussian noise; ``shot_range`` / ``read_range`` bound ``k`` and ``r``.
        transform: optional callable on the item dict (e.g. ``PairedTransform``).
    """

    def __init__(self, files: Iterable[str | Path], *, ev_range: tuple[float, float] = (-3.0, 2.5),
                 min_abs_ev: float = 0.5, evs: Sequence[float] | None = None, seed: int = 0,
                 noise: bool = True, shot_range: tuple[float, float] = (1e-4, 2e-3),
                 read_range: tuple[float, float] = (5e-4, 5e-3),
                 transform: Callable[[dict], dict] | None = None) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise DatasetError("SyntheticExposureDataset got no source photos")
        lo, hi = ev_range
        if evs is None and not (lo < hi and max(-lo, hi) > min_abs_ev):
            raise ValueError(f"ev_range {ev_range} leaves nothing outside |ev| < {min_abs_ev}")
        self.ev_range, self.min_abs_ev = (float(lo), float(hi)), float(min_abs_ev)
        self.evs = None if evs is None else [float(e) for e in evs]
        self.seed, self.epoch, self.noise = int(seed), 0, bool(noise)
        self.shot_range, self.read_range = shot_range, read_range
        self.transform = transform

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files) * (len(self.evs) if self.evs else 1)

    def _sample_ev(self, rng: np.random.Generator) -> float:
        lo, hi = self.ev_range
        under, over = max(0.0, -self.min_abs_ev - lo), max(0.0, hi - self.min_abs_ev)
        u = rng.uniform(0.0, under + over)  # uniform over [lo, -m] U [m, hi]
        return lo + u if u < under else self.min_abs_ev + (u - under)

    def __getitem__(self, index: int) -> dict:
        per = len(self.evs) if self.evs else 1
        path = self.files[index // per]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        ev = self.evs[index % per] if self.evs else round(self._sample_ev(rng), 2)
        shot = _log_uniform(rng, *self.shot_range) if self.noise else 0.0
        read = _log_uniform(rng, *self.read_range) if self.noise else 0.0
        target = load_image(path)
        x = render_exposure(target.permute(1, 2, 0).numpy(), ev, rng, shot=shot, read=read)
        item = {"input": torch.from_numpy(x).permute(2, 0, 1).contiguous(), "target": target,
                "name": f"{path.stem}@{ev_label(ev)}", "exposure": ev_label(ev), "ev": float(ev)}
        return self.transform(item) if self.transform is not None else item


def expose_tensor(image: Tensor, ev: float, *, seed: int | None = None, shot: float = 0.0,
                  read: float = 0.0) -> Tensor:
    """:func:`render_exposure` on a (3, H, W) tensor in [0, 1]; returns a new (3, H, W) float32 tensor."""
    rng = np.random.default_rng(seed) if (shot > 0 or read > 0) else None
    out = render_exposure(image.detach().cpu().permute(1, 2, 0).numpy(), ev, rng, shot=shot, read=read)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()
