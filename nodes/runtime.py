"""ComfyUI glue shared by the nodes: the model under ComfyUI's model management, IMAGE layout, progress,
interrupts, and tiled runs with out-of-memory back-off (the pattern of ComfyUI's ImageUpscaleWithModel).

ComfyUI modules are imported inside the functions, so this module imports without ComfyUI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from restorex_core import RestoreX
from restorex_core.priors import Priors

from .memory import memory_required, tile_for_free_memory

logger = logging.getLogger(__name__)

MIN_TILE = 64  # below this a tile is mostly overlap; the OOM back-off gives up
Progress = Callable[[int, int], None]


def comfy_mm():  # comfy.model_management, imported lazily
    import comfy.model_management

    return comfy.model_management


class RestoreXPatcherModule(nn.Module):
    """The module handed to ModelPatcher. ModelPatcher writes ``.device`` and its bookkeeping attributes onto
    the module it manages; RestoreX's ``device`` is a read-only property, so it sits one level down."""

    def __init__(self, model: RestoreX, device: torch.device) -> None:
        super().__init__()
        self.restorex = model
        self.device = device


@dataclass(eq=False)
class ManagedRestoreX:
    """What travels on a RESTOREX_MODEL link: a RestoreX plus the ModelPatcher that lets ComfyUI load it to
    the GPU when a node needs it and offload it when another model needs the memory."""

    model: RestoreX
    patcher: object  # comfy.model_patcher.ModelPatcher
    source: str

    @classmethod
    def create(cls, model: RestoreX, *, load_device: torch.device, offload_device: torch.device,
               source: str) -> ManagedRestoreX:
        import comfy.model_patcher

        target = RestoreXPatcherModule(model.eval(), offload_device)
        patcher = comfy.model_patcher.ModelPatcher(target, load_device=load_device, offload_device=offload_device)
        return cls(model, patcher, source)

    @property
    def device(self) -> torch.device:
        return self.patcher.load_device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def load(self, memory_required: int = 0) -> RestoreX:
        """Free ``memory_required`` bytes (plus the weights) on the device, move the model there, return it."""
        comfy_mm().load_models_gpu([self.patcher], memory_required=int(memory_required), force_full_load=True)
        return self.model

    def image_in(self, image: Tensor) -> Tensor:
        """ComfyUI IMAGE (B, H, W, C) -> (B, C, H, W) on the model's device, in the image's own dtype."""
        if image.ndim != 4:
            raise ValueError(f"an IMAGE must be (B, H, W, C), got shape {tuple(image.shape)}")
        return image.movedim(-1, 1).to(self.device)

    def __repr__(self) -> str:
        return f"RestoreX({self.source}, {self.device}, {self.dtype})"


def image_out(x: Tensor, original: Tensor | None = None) -> Tensor:
    """(B, C, H, W) -> ComfyUI IMAGE (B, H, W, C) float32 in [0, 1] on the intermediate device. With
    ``original`` (an RGBA IMAGE) its alpha channel is copied back bit for bit."""
    out = x.movedim(1, -1).to(comfy_mm().intermediate_device(), torch.float32).clamp(0.0, 1.0)
    if original is not None and original.shape[-1] == 4 and out.shape == original.shape:
        out[..., 3] = original[..., 3].to(out)
    return out


def priors_out(priors: Priors) -> Priors:
    """Priors leave a node on the intermediate device (CPU), as IMAGE tensors do."""
    return priors.to(comfy_mm().intermediate_device())


def interrupt() -> None:
    """An interrupt point for the core's ``interrupt=`` arguments: raises when the user pressed Cancel."""
    comfy_mm().throw_exception_if_processing_interrupted()


def progress() -> Progress:
    """A (done, total) callback driving a ComfyUI progress bar; every call is an interrupt point."""
    mm = comfy_mm()
    import comfy.utils

    bars: dict[int, object] = {}

    def update(done: int, total: int) -> None:
        if total not in bars:
            bars[total] = comfy.utils.ProgressBar(total)
        bars[total].update_absolute(done, total)
        mm.throw_exception_if_processing_interrupted()

    return update


Runner = Callable[[RestoreX, Tensor, int | None, int, Progress], Tensor]  # (model, x, tile, overlap, progress)


def run_tiled(managed: ManagedRestoreX, image: Tensor, run: Runner, *, tile: int, overlap: int) -> Tensor:
    """Run ``run(model, x, tile, overlap, progress)`` under ComfyUI's memory management; return its output.

    ``image`` is a ComfyUI IMAGE; ``x`` is that image as (B, C, H, W) on the model's device, moved there
    after memory was freed and the model loaded. ``tile`` 0 picks the largest tile that fits in the free
    memory (None = untiled). Out of memory halves the tile and tries again, down to MIN_TILE; then the
    out-of-memory error is raised as ComfyUI expects it. Tiles picked here use at most a quarter of the tile
    as overlap.
    """
    mm = comfy_mm()
    mm.throw_exception_if_processing_interrupted()
    if image.ndim != 4:
        raise ValueError(f"an IMAGE must be (B, H, W, C), got shape {tuple(image.shape)}")
    b, h, w, _ = image.shape
    config = managed.model.config.restormer
    model = managed.load(memory_required(config, managed.dtype, batch=b, height=h, width=w, tile=tile or None))
    x = managed.image_in(image)
    chosen, ours = (tile or None), False
    if tile == 0:
        free = mm.get_free_memory(managed.device)
        chosen, ours = tile_for_free_memory(config, managed.dtype, free, batch=b, height=h, width=w), True
    while True:
        try:
            return run(model, x, chosen, min(overlap, chosen // 4) if ours and chosen else overlap, progress())
        except mm.OOM_EXCEPTION as e:  # retried outside the except block so the failed attempt is freed
            error = e
        smaller = (chosen or max(h, w)) // 2 // 8 * 8
        if smaller < MIN_TILE:
            raise error
        logger.warning("RestoreX ran out of memory with tile %s; retrying with tile %d", chosen, smaller)
        chosen, ours = smaller, True
        mm.soft_empty_cache()
