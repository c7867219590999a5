"""Exponential moving average of a model's weights (DiffIR/basicsr ``params_ema``, decay 0.999).

The average lives in a full copy of the model (eval mode, no gradients), so validation and export use
it like any model.  Only the entries that change during training are averaged: the trainable
parameters and the floating-point buffers; frozen weights are copied once.  Early on the decay is
warmed up as ``min(decay, (1 + step) / (10 + step))`` so short runs are not dominated by the random
initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        buffers = {name for name, b in model.named_buffers() if b.is_floating_point()}
        self.names = sorted((trainable | buffers) & set(model.state_dict()))  # non-persistent buffers are fixed

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend ``model`` (the unwrapped module being trained) into the average after optimiser step ``step``."""
        d = self.decay_at(step)
        src, dst = model.state_dict(), self.model.state_dict()
        for name in self.names:
            dst[name].lerp_(src[name].to(dst[name].dtype), 1.0 - d)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], *, strict: bool = True) -> None:
        self.model.load_state_dict(state, strict=strict)
