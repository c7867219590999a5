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
from collections.abc import Callable
from dataclasses import dataclass
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

__all__ = ["DATASETS", "DatasetError", "DatasetSpec", "LCDPDataset", "MSECDataset", "Pair", "PairedFolderDataset",
           "PairedImageDataset", "PairedTransform", "SICEDataset", "StackDataset", "SyntheticExposureDataset",
           "build_dataset", "dataset_spec", "ev_label", "load_image", "render_exposure", "rule_roles"]

@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset kind: everything the trainer, the evaluator and :func:`build_dataset` need to know.

    Attributes:
        title: the name in reports ("LCDP").
        build: ``(root, split, **options) -> Dataset``.
        options: the selection options it takes from a config or the command line (scenes, pairs, expert...),
            by the names both use; other keywords (``transform``, the synthetic generator's) pass through.
        splits: it has split folders (train / valid / test); False: ``split`` is not used.
        default_split: the split when none is given.
        scenes: it is split into train / validation by scene lists (``scenes``), not by folders.
    """

    title: str
    build: Callable[..., Dataset]
    options: tuple[str, ...] = ()
    splits: bool = True
    default_split: str | None = None
    scenes: bool = False


def _synthetic(root: str | Path, split: str | None = None, *, source: str = "folder", **kw: Any) -> Dataset:
    """Synthetic exposures of well-exposed photos: every image below root, or each stack scene's GT frame."""
    chosen = {k: v for k in ("scenes", "exclude") if (v := kw.pop(k, None)) is not None}
    if source == "stacks":
        files = StackDataset(root, **chosen).gt_files()
    elif source == "folder":
        if chosen:
            raise ValueError(f"{', '.join(chosen)} choose stack scenes: use source='stacks' with them")
        files = find_images(root)
    else:
        raise ValueError(f"source={source!r}; use 'folder' or 'stacks'")
    return SyntheticExposureDataset(files, **kw)


# The one registry of dataset kinds: a new dataset is one entry here.
DATASETS: dict[str, DatasetSpec] = {
    "lcdp": DatasetSpec(title="LCDP", build=LCDPDataset, default_split="test"),
    "msec": DatasetSpec(title="MSEC", build=MSECDataset, options=("expert", "targets"), default_split="test"),
    "sice": DatasetSpec(title="SICE", build=SICEDataset, options=("scenes",), scenes=True),
    "pairs": DatasetSpec(title="Pairs", build=PairedFolderDataset, options=("input_dir", "gt_dir")),
    "stacks": DatasetSpec(title="Stacks", build=StackDataset, splits=False, scenes=True,
                          options=("scenes", "exclude", "pairs", "target", "fusion_alpha", "fused_cache", "identity")),
    "synthetic": DatasetSpec(title="Synthetic", build=_synthetic, splits=False,
                             options=("source", "scenes", "exclude")),
}


def dataset_spec(kind: str) -> DatasetSpec:
    try:
        return DATASETS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASETS)}") from None


class PairedTransform:
    """Random crop, flips and rot90, applied identically to ``input`` and ``target``.

    Args:
        crop: output side in pixels; None keeps the full image.
        flip: random horizontal and vertical flips.
        rot90: random rotation by a multiple of 90 degrees (square crops keep their shape).
        upright: keep the image's up direction: horizontal flips only, never a vertical flip or a rotation
            (the sky stays above the ground, where a photo's colour and light come from).
        small: what to do when a side is shorter than ``crop``: ``"resize"`` (bicubic upscale, keeping
            the aspect ratio) or ``"pad"`` (reflect padding, replicate where the image is too small).
        generator: torch RNG; None uses the global one (seeded per DataLoader worker by torch).
    """

    def __init__(self, crop: int | None = None, *, flip: bool = True, rot90: bool = True, upright: bool = False,
                 small: str = "resize", generator: torch.Generator | None = None) -> None:
        if small not in ("resize", "pad"):
            raise ValueError(f"small={small!r}; use 'resize' or 'pad'")
        if crop is not None and crop < 1:
            raise ValueError(f"crop={crop} must be a positive number of pixels")
        self.crop, self.flip, self.rot90, self.small, self.generator = crop, flip, rot90, small, generator
        self.upright = upright

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
            if not self.upright and self._randint(2):
                x, y = x.flip(-2), y.flip(-2)
        if self.rot90 and not self.upright:
            k = self._randint(4)
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        return {**item, "input": x.contiguous(), "target": y.contiguous()}


def build_dataset(kind: str, root: str | Path, split: str | None = None, **kw: Any) -> Dataset:
    """Build one of :data:`DATASETS` from ``root``.

    Args:
        kind: a key of :data:`DATASETS`: ``lcdp`` | ``msec`` | ``sice`` | ``pairs`` | ``stacks`` | ``synthetic``.
        root: the dataset folder (layouts in :mod:`training.datasets` / :mod:`training.stacks`).
        split: ``train`` | ``valid`` | ``test`` (LCDP default ``test``, MSEC default ``test``); ignored by
            ``stacks`` and ``synthetic``, which are split by scene / by the files given.
        **kw: passed to the class: ``transform`` for all; ``expert`` and ``targets`` (MSEC);
            ``scenes`` (SICE, stacks); ``exclude`` and ``pairs`` (stacks); ``input_dir`` / ``gt_dir``
            (pairs); for ``synthetic``: ``source="folder"`` (every image below root) or ``"stacks"``
            (the GT frame of each stack scene, with ``scenes`` / ``exclude``), plus the
            :class:`SyntheticExposureDataset` options.
    """
    spec = dataset_spec(kind)
    return spec.build(root, (split or spec.default_split) if spec.splits else None, **kw)
