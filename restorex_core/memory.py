"""How much memory a Restormer pass needs, how much the device has, and the tile that fits.

One cost model for every host (the command line, ComfyUI, scripts): peak memory grows linearly with the
pixels a pass sees, with slopes measured by ``benchmarks/bench_memory.py`` (benchmarks/RESULTS.md), not
derived from the architecture by hand. ``RestoreX.restore(tile="auto")`` plans with it and halves the tile
when a pass runs out of memory anyway.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .arch.restormer import RestormerConfig
from .errors import DeviceError

# Peak activation values per pixel, per channel of the Restormer's first level (``dim``), of one forward
# under inference_mode: the max RSS slope of RestoreX.restore on a CPU, 49.1 (fp32) and 51.5 (bf16) for the
# bundled default (benchmarks/RESULTS.md, "Memory per pixel"), rounded up. Higher than the 32-34 measured
# before restore() kept freed blocks in malloc's heap (restorex_core/allocator.py): reuse trades some
# fragmentation for 2x speed. The peak sits in the full-resolution levels, whose width is 2 x dim in every
# config, so the depth of the lower levels does not change it.
RESTORMER_VALUES_PER_PIXEL = 52
# Whole-image buffers of a tiled run, per image pixel, whatever the tile (fp32): the checked input, its mirrored
# and padded copies, the blend sums and weights, their quotient and the clamped output, 7 x 12 + 4 bytes,
# rounded up (benchmarks/RESULTS.md: checked against the 12 MP command-line run's peak).
IMAGE_BYTES_PER_PIXEL = 96
HEADROOM = 0.5  # of the memory reported available: other programs, the allocator's slack, the file's own copy
# The most an automatic plan takes on a CPU: tiles of ~900 px at 4K already cost only ~8% in overlap, so more
# memory would barely speed a run up, while a 12 MP photo stays within 4 GB of RAM in all (README).
CPU_BUDGET = 3 << 30
MIN_TILE = 128  # the smallest tile a plan picks: below this a tile is mostly overlap and border
BACKOFF_MIN_TILE = 64  # running out of memory halves the tile down to this, then gives up (every host alike)
GUIDE_SIZE = 1024  # long side of the whole-image pass that gives tiles their attention maps (README: fidelity)


def restormer_bytes_per_pixel(config: RestormerConfig, dtype: torch.dtype) -> int:
    """Peak memory of one Restormer pass per pixel it sees (the 8-pixel border and padding included)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return RESTORMER_VALUES_PER_PIXEL * config.dim * itemsize + 16


def image_bytes(height: int, width: int, batch: int = 1) -> int:
    """What a tiled run keeps for the whole image, whatever the tile."""
    return IMAGE_BYTES_PER_PIXEL * height * width * batch


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors, and the CPU allocator's RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def budget_from_free(free_bytes: int) -> int:
    """The budget a plan takes from memory reported free (by the system, or by a host such as ComfyUI after it
    offloaded other models): HEADROOM x that memory."""
    return int(max(free_bytes, 0) * HEADROOM)


def default_budget(device: torch.device | str) -> int:
    """What ``tile="auto"`` plans for without ``max_memory``: HEADROOM x the available memory (CPU: at most
    CPU_BUDGET)."""
    budget = budget_from_free(available_memory(device))
    return min(budget, CPU_BUDGET) if torch.device(device).type == "cpu" else budget


def pass_bytes(config: RestormerConfig, dtype: torch.dtype, *, height: int, width: int, batch: int = 1,
               tile: int | None = None) -> int:
    """Peak memory of a run over images of ``height`` x ``width`` as the Restormer sees them (border included):
    one pass over a tile (or the whole image), plus the whole-image buffers. What a host asks to have free."""
    pixels = height * width if tile is None else min(tile, height) * min(tile, width)
    return restormer_bytes_per_pixel(config, dtype) * pixels * batch + image_bytes(height, width, batch)


def total_memory(device: torch.device | str) -> int | None:
    """All the memory of ``device`` in bytes, used or not: a GPU's, or the machine's RAM (None where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_budget(budget: int, device: torch.device | str, *, name: str = "max_memory") -> None:
    """Refuse a memory budget larger than all of ``device``'s memory: a plan for memory the machine does not
    have runs out of it instead of tiling (:class:`DeviceError`, naming the machine's memory)."""
    total = total_memory(device)
    if total is not None and budget > total:
        where = "RAM" if torch.device(device).type == "cpu" else f"memory on {device}"
        raise DeviceError(f"{name} {_gib(budget)} is more than this machine's {_gib(total)} of {where}: give at "
                          f"most that, or leave it out to plan for the memory available now")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def available_memory(device: torch.device | str) -> int:
    """Bytes a pass on ``device`` can use now: free GPU memory (plus what torch holds cached), or on the CPU
    the system's available RAM, capped by a container's (cgroup) limit."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return _ram_available()


def _ram_available() -> int:
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:  # macOS and the BSDs have no /proc: physical pages, less than ideal but bounded
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError):
            available = 4 << 30
    try:  # cgroup v2: a container's limit, which /proc/meminfo does not show
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(available), 0)


@dataclass(frozen=True)
class TilePlan:
    tile: int | None  # None: the whole image in one pass
    guide_size: int  # long side of the guide pass (only used when tiled)
    budget: int  # bytes the plan was made for


def plan_tiles(config: RestormerConfig, dtype: torch.dtype, *, height: int, width: int, batch: int = 1,
               budget: int, guide_size: int = GUIDE_SIZE, multiple: int = 64) -> TilePlan:
    """The largest tile (a multiple of ``multiple``, at least MIN_TILE) whose pass fits in ``budget`` bytes
    next to the whole-image buffers, or no tiling when the whole image fits. The guide pass must fit too:
    its long side shrinks below ``guide_size`` when the budget is small.

    Args:
        height, width: the image as the Restormer sees it (border included).
    """
    per_pixel = restormer_bytes_per_pixel(config, dtype) * batch
    if height * width * per_pixel <= budget:
        return TilePlan(None, guide_size, budget)
    room = max(budget - image_bytes(height, width, batch), 0)
    side = max(MIN_TILE, int(math.sqrt(room / per_pixel)) // multiple * multiple)
    guide = max(MIN_TILE, min(guide_size, int(math.sqrt(room / per_pixel * max(height, width) / min(height, width)))
                              // 8 * 8))
    return TilePlan(side, guide, budget)
