"""Prior Extraction Module heads (docs/method.md §3): one MLP per tapped CLIP block, feature -> prior P_i."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

TokenMode = Literal["cls", "mean", "cls+mean"]
InputNorm = Literal["none", "layernorm"]


@dataclass(frozen=True, kw_only=True)
class PEMConfig:
    in_dim: int = 768  # CLIP width
    dim: int = 256  # D, the prior size (DiffIR's IPR size; keeps injection at 2.65 M params)
    num_priors: int = 4  # one head per tapped block
    token: TokenMode = "cls"  # Z_i = CLS token of block i (docs/method.md §3.1)
    input_norm: InputNorm = "none"  # "layernorm" tames the unnormalised residual stream (docs/method.md §3.2)

    def __post_init__(self) -> None:
        if self.token not in ("cls", "mean", "cls+mean"):
            raise ValueError(f"pem.token must be one of cls, mean, cls+mean, not {self.token!r}")
        if self.input_norm not in ("none", "layernorm"):
            raise ValueError(f"pem.input_norm must be none or layernorm, not {self.input_norm!r}")

    @property
    def feature_dim(self) -> int:
        return self.in_dim * (2 if self.token == "cls+mean" else 1)


def pool_tokens(tokens: Tensor, mode: TokenMode) -> Tensor:
    """(B, N, W) block output -> (B, W) or (B, 2W) feature vector Z_i."""
    if mode == "cls":
        return tokens[:, 0]
    if mode == "mean":
        return tokens[:, 1:].mean(dim=1)
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)


class PEMHead(nn.Module):
    """[LayerNorm] -> Linear(W, D) -> LReLU(0.1) -> Linear(D, D) -> LReLU(0.1)."""

    def __init__(self, config: PEMConfig) -> None:
        super().__init__()
        f = config.feature_dim
        self.norm = nn.LayerNorm(f) if config.input_norm == "layernorm" else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(f, config.dim), nn.LeakyReLU(0.1), nn.Linear(config.dim, config.dim), nn.LeakyReLU(0.1)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.mlp(self.norm(z))  # (B, D)


class PriorExtraction(nn.Module):
    """Block outputs -> prior vectors, one head per block."""

    def __init__(self, config: PEMConfig) -> None:
        super().__init__()
        self.config = config
        self.heads = nn.ModuleList(PEMHead(config) for _ in range(config.num_priors))

    def forward(self, block_tokens: list[Tensor]) -> list[Tensor]:
        """list of (B, N, W) -> list of (B, D)."""
        if len(block_tokens) != len(self.heads):
            raise ValueError(f"PEM has {len(self.heads)} heads but got {len(block_tokens)} block outputs")
        dtype = self.heads[0].mlp[0].weight.dtype
        pooled = (pool_tokens(t, self.config.token).to(dtype) for t in block_tokens)
        return [head(z) for head, z in zip(self.heads, pooled, strict=True)]
