"""ComfyUI glue shared by the nodes: the model under ComfyUI's model management, IMAGE layout, progress,
interrupts, and the memory budget. Tiles, their rules and the out-of-memory back-off are the core's
(RestoreX.restore): a node hands it ComfyUI's free memory and hooks, nothing more.

ComfyUI modules are imported inside the functions, so this module imports without ComfyUI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from restorex_core import RestoreX
from restorex_core.memory import budget_from_free
from restorex_core.priors import Priors

logger = logging.getLogger(__name__)

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


def prepare(managed: ManagedRestoreX, image: Tensor, *, tile: int) -> tuple[RestoreX, Tensor, dict]:
    """Before a core call: free memory for the run and load the model (ComfyUI's model management), move the
    IMAGE there as (B, C, H, W); return (model, x, the core's run settings).

    The settings are ``tile`` (0: "auto"), ``max_memory`` (HEADROOM x what ComfyUI reports free once the
    model is loaded), a progress bar and the interrupt check; the core plans, validates and backs off.
    """
    mm = comfy_mm()
    mm.throw_exception_if_processing_interrupted()
    if image.ndim != 4:
        raise ValueError(f"an IMAGE must be (B, H, W, C), got shape {tuple(image.shape)}")
    b, h, w, _ = image.shape
    model = managed.load(managed.model.memory_required(b, h, w, tile=tile or None))
    x = managed.image_in(image)
    budget = budget_from_free(mm.get_free_memory(managed.device))
    return model, x, {"tile": tile or "auto", "max_memory": budget, "progress": progress(), "interrupt": interrupt}
