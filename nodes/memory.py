"""ComfyUI's side of memory sizing: what to ask its model management to free, and the tile that fits in the
memory it then reports free. The cost model itself (measured bytes per pixel, tile planning) is the core's
(restorex_core.memory), shared with the command line.
"""

from __future__ import annotations

import torch

from restorex_core.arch.restormer import RestormerConfig
from restorex_core.memory import HEADROOM, image_bytes, plan_tiles, restormer_bytes_per_pixel
from restorex_core.model import BORDER


def memory_required(config: RestormerConfig, dtype: torch.dtype, *, batch: int, height: int, width: int,
                    tile: int | None) -> int:
    """Bytes to ask ComfyUI to free before a run: one pass over the tile (or the whole image) plus the
    whole-image buffers."""
    h, w = height + 2 * BORDER, width + 2 * BORDER
    pixels = h * w if tile is None else min(tile, h) * min(tile, w)
    return restormer_bytes_per_pixel(config, dtype) * pixels * batch + image_bytes(h, w, batch)


def tile_for_free_memory(config: RestormerConfig, dtype: torch.dtype, free_bytes: int, *, batch: int, height: int,
                         width: int) -> int | None:
    """The tile whose pass fits in HEADROOM x ComfyUI's free memory (None: the whole image fits untiled)."""
    return plan_tiles(config, dtype, height=height + 2 * BORDER, width=width + 2 * BORDER, batch=batch,
                      budget=int(max(free_bytes, 0) * HEADROOM)).tile
