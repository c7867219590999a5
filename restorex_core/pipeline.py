"""The FFEDM sampling loop (the model does not own it; docs/method.md §4.1 and §4.4, DiffIR's p_sample chain)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .arch.prior_diffusion import FFEDM
from .scheduler import DDPMScheduler, Generators, randn


def sample_priors(
    ffedm: FFEDM,
    scheduler: DDPMScheduler,
    cond: Tensor,
    *,
    steps: int | None = None,
    generator: Generators = None,
    target: Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Run the reverse chain in FFEDM's diffusion space; differentiable end to end.

    Args:
        cond: (B, N, d) encoded degraded priors c_i.
        generator: one, or a list of one per batch item (each item's noise then does not depend on the batch).
        target: (B, N, d) encoded target priors (training only): start from q(x_T | target), as DiffIR does.
    Returns:
        (B, N, d) x_0 after the last step.
    """
    noise = randn(cond.shape, generator).to(cond.device)
    scheduler.set_timesteps(steps)
    t_start = int(scheduler.timesteps[0])
    x = noise if target is None else scheduler.add_noise(target, noise, t_start)
    for i, t in enumerate(scheduler.timesteps.tolist()):
        t_batch = torch.full((cond.shape[0],), t, device=cond.device, dtype=torch.long)
        model_output = ffedm(x, t_batch, cond)
        x = scheduler.step(model_output, t, x, generator=generator).prev_sample
        if callback is not None:
            callback(i + 1, scheduler.num_inference_steps)
    return x
