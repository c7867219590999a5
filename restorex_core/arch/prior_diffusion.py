"""FFEDM: the frequency-domain feature-enhancement diffusion model's networks (docs/method.md §4).

Each prior P_i (B, D) is moved to the frequency domain with an orthonormal rfft, real and imaginary
parts packed side by side (B, 2 * (D // 2 + 1)); a small conditional MLP denoises it there; the inverse
transform brings it back. The sampling loop is not here: it lives in ``restorex_core.pipeline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

PredictionType = Literal["sample", "epsilon"]  # what the denoiser predicts: x_0, or the noise (diffusers' names)


@dataclass(frozen=True, kw_only=True)
class FFEDMConfig:
    prior_dim: int = 256  # D, must equal pem.dim
    num_priors: int = 4  # one independent denoiser per prior (docs/method.md §4.3)
    fft: bool = True  # False = the paper's "DM" ablation: diffuse P_i itself
    n_res: int = 1  # hidden Linear+LReLU layers after the input layer (DiffIR: 1)
    timesteps: int = 4  # T (DiffIR: 4)
    beta_start: float = 0.1
    beta_end: float = 0.99
    objective: PredictionType = "sample"  # DiffIR's code predicts x0; "epsilon" = eq. 6, stochastic sampling

    def __post_init__(self) -> None:
        if self.objective not in ("sample", "epsilon"):
            raise ValueError(f"ffedm.objective must be 'sample' (predict x0) or 'epsilon' (predict the noise), "
                             f"not {self.objective!r}")

    @property
    def width(self) -> int:
        """Size of the diffused vector: 2 * (D // 2 + 1) packed rfft reals, or D without FFT."""
        return 2 * (self.prior_dim // 2 + 1) if self.fft else self.prior_dim


def to_freq(p: Tensor) -> Tensor:
    """(..., D) -> (..., 2 * (D // 2 + 1)): cat(Re, Im) of the orthonormal rfft, computed in fp32."""
    f = torch.fft.rfft(p.float(), dim=-1, norm="ortho")
    return torch.cat([f.real, f.imag], dim=-1)


def from_freq(z: Tensor, n: int) -> Tensor:
    """Inverse of :func:`to_freq` (the imaginary DC/Nyquist parts are ignored, as irfft does)."""
    k = z.shape[-1] // 2
    z = z.float()
    return torch.fft.irfft(torch.complex(z[..., :k], z[..., k:]), n=n, dim=-1, norm="ortho")


class Denoiser(nn.Module):
    """x0_theta(x_t, t, c): MLP on cat[c, t / (10 T), x_t] with a linear head (coefficients are signed)."""

    def __init__(self, width: int, n_res: int, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps
        layers: list[nn.Module] = [nn.Linear(2 * width + 1, width), nn.LeakyReLU(0.1)]
        for _ in range(n_res):
            layers += [nn.Linear(width, width), nn.LeakyReLU(0.1)]
        layers.append(nn.Linear(width, width))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x_t, cond: (B, d); t: (B,) integer timesteps -> (B, d)."""
        t_in = (t.to(x_t.dtype) / (self.timesteps * 10)).unsqueeze(-1)  # (B, 1), DiffIR's time scaling
        return self.mlp(torch.cat([cond, t_in, x_t], dim=-1))


class FFEDM(nn.Module):
    """The four independent denoisers plus the (inverse) frequency transform."""

    def __init__(self, config: FFEDMConfig) -> None:
        super().__init__()
        self.config = config
        self.denoisers = nn.ModuleList(
            Denoiser(config.width, config.n_res, config.timesteps) for _ in range(config.num_priors)
        )

    def encode(self, priors: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, d) fp32 diffusion space."""
        return to_freq(priors) if self.config.fft else priors.float()

    def decode(self, z: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, D) fp32."""
        return from_freq(z, self.config.prior_dim) if self.config.fft else z.float()

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x_t, cond: (B, N, d); t: (B,) -> model output (B, N, d): x0_hat or eps_hat per the objective."""
        dtype = self.denoisers[0].mlp[0].weight.dtype
        x_t, cond = x_t.to(dtype), cond.to(dtype)
        out = [den(x_t[:, i], t, cond[:, i]) for i, den in enumerate(self.denoisers)]
        return torch.stack(out, dim=1).float()
