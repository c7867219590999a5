"""How much memory a Restormer pass needs, and the tile that fits in what ComfyUI reports free.

Sizing for the host's memory manager, not part of the method: ``run_tiled`` in runtime.py asks ComfyUI to
free this much before it loads the model, and picks the tile from the free memory it then reports.
"""

from __future__ import annotations

import math

import torch

from restorex_core.arch.restormer import RestormerConfig


def restore_bytes_per_pixel(config: RestormerConfig, dtype: torch.dtype) -> int:
    """Peak activation memory of one Restormer forward per input pixel (upper estimate).

    The widest full-resolution levels (decoder level 1 and refinement, 2 * dim channels) hold the block
    input, the LayerNorm output, 3 * 2 * dim q/k/v channels and their depthwise conv, and the gated FFN's
    2 * ffn * 2 * dim hidden channels, plus the encoder skip; about 32 * dim values per pixel. Add the
    input/output images and padding.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(32 * config.dim * itemsize + 16 * 4)


def tile_for_memory(free_bytes: int, *, height: int, width: int, bytes_per_pixel: int, min_tile: int = 128,
                    multiple: int = 64, headroom: float = 0.5) -> int | None:
    """The tile size that fits in ``headroom * free_bytes``, or None when the whole image fits untiled.

    Returns a multiple of ``multiple``, never below ``min_tile``.
    """
    budget = max(free_bytes, 0) * headroom
    if height * width * bytes_per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / bytes_per_pixel)) // multiple * multiple
    return max(min_tile, side)
