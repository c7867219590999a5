"""Run an image-to-image function over overlapping tiles with feathered blending.

The priors stay global (computed once from the whole image); only the Restormer runs per tile, so memory
is bounded by the tile size, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .errors import TileError

MULTIPLE_OF = 8  # the restorer's size multiple (PriorRestormer.multiple_of: three 2x downsamples)


def min_tile(overlap: int, multiple_of: int = MULTIPLE_OF) -> int:
    """Smallest sound tile for ``overlap``: the restorer's deepest level sees at least 4 x 4 pixels of every
    tile, and every tile keeps at least ``multiple_of`` pixels of its own between the two overlaps."""
    return max(4 * multiple_of, 2 * overlap + multiple_of)


def check_tiling(tile: object, overlap: object, *, multiple_of: int = MULTIPLE_OF,
                 names: tuple[str, str] = ("tile", "overlap")) -> None:
    """Refuse a tile and overlap that would show seams, naming every problem at once (:class:`TileError`).

    The one rule every host uses (the library, the command line, each node): ``tile`` is None (one pass),
    "auto" or a size in pixels; when it may tile (a size or "auto"), ``overlap`` is at least ``multiple_of``
    pixels (less leaves visible seams: 62/255 at overlap 0), and a size is at least :func:`min_tile`.
    ``names`` are the host's names for the two settings (the command line: "--tile", "--overlap").
    """
    t, o = names
    if tile is None:
        return
    problems = []
    if isinstance(tile, str) and tile != "auto" or not isinstance(tile, (int, str)) or isinstance(tile, bool):
        raise TileError(f"{t} must be None (one pass), 'auto' or a size in pixels, got {tile!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool):
        raise TileError(f"{o} must be a whole number of pixels, got {overlap!r}")
    if overlap < multiple_of:
        problems.append(f"{o} {overlap} leaves visible seams between tiles: use at least {multiple_of} pixels "
                        f"(the restorer's multiple of {multiple_of}); the default is 32")
    least = min_tile(max(overlap, multiple_of), multiple_of)
    if isinstance(tile, int) and tile < least:
        problems.append(f"{t} {tile} is too small: tiles must be at least {least} pixels (4 x the restorer's "
                        f"multiple of {multiple_of}, and 2 x {o} plus that multiple), or the tile grid shows")
    if problems:
        raise TileError(f"{t} {tile} with {o} {overlap}: " + "; ".join(problems) + f". Valid: {o} >= "
                        f"{multiple_of} and {t} >= max({4 * multiple_of}, 2 x {o} + {multiple_of}), e.g. {t} 512 "
                        f"with {o} 32; or no tiling")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def feather(length: int, overlap: int, ramp_start: bool, ramp_end: bool, device: torch.device) -> Tensor:
    """1-D blending weights on the sides that touch another tile.

    The outer quarter of the overlap gets weight 0 (those pixels saw the tile's zero padding, the main
    source of seams), the next half ramps linearly to 1. Two tiles overlap by at least ``overlap`` pixels,
    so every pixel keeps a positive total weight.
    """
    d = torch.arange(length, device=device, dtype=torch.float32)
    w = torch.ones(length, device=device)
    if overlap > 0:
        dead, ramp = overlap / 4, max(overlap / 2, 1.0)
        if ramp_start:
            w = torch.minimum(w, ((d + 0.5 - dead) / ramp).clamp(0, 1))
        if ramp_end:
            w = torch.minimum(w, ((length - d - 0.5 - dead) / ramp).clamp(0, 1))
    return w


def tiled_apply(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    tile: int,
    overlap: int,
    progress: Callable[[int, int], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> Tensor:
    """Apply ``fn`` ((B, C, h, w) -> (B, C, h, w)) to ``x`` (B, C, H, W) tile by tile and blend.

    ``progress`` is called as (done, total) after every tile; ``interrupt`` before every tile (it raises to stop).
    """
    check_tiling(tile, overlap)
    b, c, h, w = x.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = torch.zeros((b, c, h, w), dtype=torch.float32, device=x.device)
    weight = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x.device)
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        th = min(tile, h - y0)
        wy = feather(th, overlap, y0 > 0, y0 + th < h, x.device)
        for x0 in xs:
            tw = min(tile, w - x0)
            wx = feather(tw, overlap, x0 > 0, x0 + tw < w, x.device)
            if interrupt is not None:
                interrupt()
            piece = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw])
            mask = (wy[:, None] * wx[None, :])[None, None]  # (1, 1, th, tw)
            out[:, :, y0 : y0 + th, x0 : x0 + tw] += piece.float().to(x.device) * mask
            weight[:, :, y0 : y0 + th, x0 : x0 + tw] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    return (out / weight).to(x.dtype)
