"""DDPM noise schedule and reverse step for FFEDM (docs/method.md §4.1), a plain class in diffusers' shape.

Notation (Ho et al. 2020; the paper's eqs. 2-6):
    beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s
    (2) q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    (4) posterior mean  mu_t = coef1_t * x0_hat + coef2_t * x_t
        coef1_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
        coef2_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    (5) posterior variance  sigma_t^2 = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
DiffIR's code (and our default) predicts x0 and samples deterministically: x_{t-1} = mu_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .arch.prior_diffusion import FFEDMConfig, PredictionType

BetaSchedule = Literal["sqrt_linear", "linear"]
Generators = torch.Generator | list[torch.Generator] | None  # a list: one generator per batch item (diffusers)


@dataclass(frozen=True)
class StepOutput:
    prev_sample: Tensor  # x_{t-1}
    pred_original_sample: Tensor  # x0_hat


class DDPMScheduler:
    """Tables in float64, handed out in the sample's dtype; every op is differentiable."""

    def __init__(
        self,
        *,
        num_train_timesteps: int = 4,
        beta_start: float = 0.1,
        beta_end: float = 0.99,
        beta_schedule: BetaSchedule = "sqrt_linear",
        prediction_type: PredictionType = "sample",
        stochastic: bool = False,
    ) -> None:
        if prediction_type not in ("sample", "epsilon"):
            raise ValueError(f"prediction_type must be 'sample' or 'epsilon', not {prediction_type!r}")
        if beta_schedule == "sqrt_linear":  # DiffIR's make_beta_schedule('linear'): linspace of sqrt, squared
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64, device="cpu")
        else:
            raise ValueError(f"beta_schedule must be 'sqrt_linear' or 'linear', not {beta_schedule!r}")
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.stochastic = stochastic
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.set_timesteps(num_train_timesteps)  # all T steps: coefficients(t) are then the DDPM posterior's

    @classmethod
    def from_config(cls, config: FFEDMConfig) -> DDPMScheduler:
        """FFEDM's scheduler: its T, betas and objective; "epsilon" samples stochastically (eq. 5)."""
        return cls(num_train_timesteps=config.timesteps, beta_start=config.beta_start, beta_end=config.beta_end,
                   prediction_type=config.objective, stochastic=config.objective == "epsilon")

    def set_timesteps(self, num_inference_steps: int | None = None, device: torch.device | str | None = None) -> None:
        """Spread ``num_inference_steps`` (<= T) evenly over the T training steps, last step t = 0."""
        n = self.num_train_timesteps if num_inference_steps is None else int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"steps must be in 1..{self.num_train_timesteps}, got {n}")
        last = self.num_train_timesteps - 1
        steps = [last] if n == 1 else [round(last * (n - 1 - i) / (n - 1)) for i in range(n)]
        self.timesteps = torch.tensor(steps, dtype=torch.long, device=device or "cpu")
        self.num_inference_steps = n
        # previous timestep of each step; -1 means "the chain ends": alpha_bar_{-1} = 1
        self._prev = {t: (steps[i + 1] if i + 1 < n else -1) for i, t in enumerate(steps)}

    def _alpha_bar(self, t: int) -> Tensor:
        return self.alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=torch.float64, device="cpu")

    def coefficients(self, t: int) -> tuple[float, float, float]:
        """(coef1, coef2, variance) of the step t -> prev(t), eqs. 4-5 with respaced alphas."""
        ab_t, ab_prev = self._alpha_bar(t), self._alpha_bar(self._prev.get(t, t - 1))
        alpha_t = ab_t / ab_prev
        beta_t = 1.0 - alpha_t
        coef1 = ab_prev.sqrt() * beta_t / (1.0 - ab_t)
        coef2 = alpha_t.sqrt() * (1.0 - ab_prev) / (1.0 - ab_t)
        var = beta_t * (1.0 - ab_prev) / (1.0 - ab_t)
        return float(coef1), float(coef2), float(var)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor | int) -> Tensor:
        """Eq. 2: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

        Args:
            original_samples, noise: (B, ...) x_0 and eps.
            timesteps: one int for the whole batch, or (B,) integers, one per sample.
        """
        t = torch.as_tensor(timesteps).to("cpu", torch.long)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != original_samples.shape[0]):
            raise ValueError(f"timesteps must be an int or one per sample ({original_samples.shape[0]},), got shape "
                             f"{tuple(t.shape)}")
        ab = self.alphas_cumprod[t]
        ab = ab.reshape(*ab.shape, *[1] * (original_samples.ndim - ab.ndim))  # broadcast over the sample's dims
        sqrt_ab = ab.sqrt().to(original_samples.device, original_samples.dtype)
        sqrt_one_minus_ab = (1 - ab).sqrt().to(original_samples.device, original_samples.dtype)
        return sqrt_ab * original_samples + sqrt_one_minus_ab * noise

    def step(self, model_output: Tensor, t: int, sample: Tensor, generator: Generators = None) -> StepOutput:
        """One reverse step x_t -> x_{t-1}."""
        t = int(t)
        ab_t = self.alphas_cumprod[t]
        if self.prediction_type == "sample":
            x0_hat = model_output
        else:  # eq. 3 inverted: x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
            x0_hat = (sample - float((1 - ab_t).sqrt()) * model_output) / float(ab_t.sqrt())
        coef1, coef2, var = self.coefficients(t)
        prev = coef1 * x0_hat + coef2 * sample  # eq. 4
        if self.stochastic and self._prev.get(t, -1) >= 0 and var > 0:  # eq. 5's noise term
            noise = randn(sample.shape, generator)
            prev = prev + var**0.5 * noise.to(device=sample.device, dtype=sample.dtype)
        return StepOutput(prev_sample=prev, pred_original_sample=x0_hat)


def randn(shape: tuple[int, ...] | torch.Size, generator: Generators) -> Tensor:
    """Standard normal float32 noise on the generator's device (the CPU without one).

    A list of generators draws batch item b from ``generator[b]`` alone, so an item gets the same noise
    whatever batch it is in.
    """
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}: give one per item")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32, device=g.device)
                          for g in generator]).to(generator[0].device if generator else "cpu")
    device = generator.device if generator is not None else "cpu"
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device=device)
