"""Training data entry point: ``build_dataset`` and the paired training transform.

The dataset classes live in :mod:`training.datasets` (LCDP, MSEC, SICE, generic pairs),
:mod:`training.stacks` (bracketed stacks) and :mod:`training.synthetic` (synthetic exposure); this
module re-exports them.  Every item is ``dict(input=(3, H, W) float32 in [0, 1], target=(3, H, W),
name=str, exposure=str)``.

Example::

    from training.data import PairedTransform, build_dataset
    train = build_dataset("stacks", "/data/stacks", exclude=["mef_waterloo"], transform=PairedTransform(224))
    test = build_dataset("stacks", "/data/stacks", scenes=["mef_waterloo"], pairs="rule")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import (
    DatasetError,
    LCDPDataset,
    MSECDataset,
    Pair,
    PairedFolderDataset,
    PairedImageDataset,
    SICEDataset,
    ev_label,
    load_image,
)
from .stacks import StackDataset, rule_roles
from .synthetic import SyntheticExposureDataset, find_images, render_exposure

__all__ = ["DATASETS", "DatasetError", "LCDPDataset", "MSECDataset", "Pair", "PairedFolderDataset",
           "PairedImageDataset", "PairedTransform", "SICEDataset", "StackDataset", "SyntheticExposureDataset",
           "build_dataset", "ev_label", "load_image", "render_exposure", "rule_roles"]

DATASETS = ("lcdp", "msec", "sice", "pairs", "stacks", "synthetic")


class PairedTransform:
    """Random crop, flips and rot90, applied identically to ``input`` and ``target``.

    Args:
        crop: output side in pixels; None keeps the full image.
        flip: random horizontal and vertical flips.
        rot90: random rotation by a multiple of 90 degrees (square crops keep their shape).
        small: what to do when a side is shorter than ``crop``: ``"resize"`` (bicubic upscale, keeping
            the aspect ratio) or ``"pad"`` (reflect padding, replicate where the image is too small).
        generator: torch RNG; None uses the global one (seeded per DataLoader worker by torch).
    """

    def __init__(self, crop: int | None = None, *, flip: bool = True, rot90: bool = True,
                 small: str = "resize", generator: torch.Generator | None = None) -> None:
        if small not in ("resize", "pad"):
            raise ValueError(f"small={small!r}; use 'resize' or 'pad'")
        if crop is not None and crop < 1:
            raise ValueError(f"crop={crop} must be a positive number of pixels")
        self.crop, self.flip, self.rot90, self.small, self.generator = crop, flip, rot90, small, generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator)) if high > 1 else 0

    def _fit(self, x: Tensor) -> Tensor:
        c, (h, w) = self.crop, x.shape[-2:]
        if h >= c and w >= c:
            return x
        if self.small == "resize":
            s = c / min(h, w)
            size = (max(c, math.ceil(h * s)), max(c, math.ceil(w * s)))
            return F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0.0, 1.0)
        ph, pw = max(0, c - h), max(0, c - w)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x[None], pad, mode=mode)[0]

    def __call__(self, item: dict) -> dict:
        x, y = item["input"], item["target"]
        if x.shape != y.shape:
            raise DatasetError(f"{item.get('name')}: input {tuple(x.shape)} and target {tuple(y.shape)} differ")
        if self.crop is not None:
            x, y = self._fit(x), self._fit(y)
            h, w = x.shape[-2:]
            top, left = self._randint(h - self.crop + 1), self._randint(w - self.crop + 1)
            x = x[:, top:top + self.crop, left:left + self.crop]
            y = y[:, top:top + self.crop, left:left + self.crop]
        if self.flip:
            if self._randint(2):
                x, y = x.flip(-1), y.flip(-1)
            if self._randint(2):
                x, y = x.flip(-2), y.flip(-2)
        if self.rot90:
            k = self._randint(4)
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        return {**item, "input": x.contiguous(), "target": y.contiguous()}


def build_dataset(kind: str, root: str | Path, split: str | None = None, **kw: Any) -> Dataset:
    """Build one of :data:`DATASETS` from ``root``.

    Args:
        kind: ``lcdp`` | ``msec`` | ``sice`` | ``pairs`` | ``stacks`` | ``synthetic``.
        root: the dataset folder (layouts in :mod:`training.datasets` / :mod:`training.stacks`).
        split: ``train`` | ``valid`` | ``test`` (LCDP default ``test``, MSEC default ``test``); ignored by
            ``stacks`` and ``synthetic``, which are split by scene / by the files given.
        **kw: passed to the class: ``transform`` for all; ``expert`` and ``targets`` (MSEC);
            ``scenes`` (SICE, stacks); ``exclude`` and ``pairs`` (stacks); ``input_dir`` / ``gt_dir``
            (pairs); for ``synthetic``: ``source="folder"`` (every image below root) or ``"stacks"``
            (the GT frame of each stack scene, with ``scenes`` / ``exclude``), plus the
            :class:`SyntheticExposureDataset` options.
    """
    kind = kind.lower()
    if kind == "lcdp":
        return LCDPDataset(root, split or "test", **kw)
    if kind == "msec":
        return MSECDataset(root, split or "test", **kw)
    if kind == "sice":
        return SICEDataset(root, split, **kw)
    if kind == "pairs":
        return PairedFolderDataset(root, split, **kw)
    if kind == "stacks":
        return StackDataset(root, split, **kw)
    if kind == "synthetic":
        source = kw.pop("source", "folder")
        if source == "stacks":
            sel = {k: kw.pop(k) for k in ("scenes", "exclude") if k in kw}
            files = StackDataset(root, **sel).gt_files()
        elif source == "folder":
            files = find_images(root)
        else:
            raise ValueError(f"source={source!r}; use 'folder' or 'stacks'")
        return SyntheticExposureDataset(files, **kw)
    raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASETS)}")
