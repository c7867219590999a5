"""The CLIP image encoder that feeds the Prior Extraction Module (docs/method.md §2).

The trunk is open_clip's own ``VisionTransformer`` (a dependency, not a copy), built from a
:class:`ClipVisionConfig`.  What this module adds is what the method needs around it:

* preprocessing as differentiable tensor ops (squash-resize, OpenAI mean/std), so the L_SAP loss can
  backpropagate through CLIP into the restored image;
* ``forward_intermediates``: the residual stream after the tapped blocks, before ``ln_post``;
* ``prune_intermediate_layers``: drops the blocks after the last tap and the pooling head;
* freezing: a frozen trunk stays in eval mode whatever ``.train()`` is called on its parent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import Tensor, nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, kw_only=True)
class ClipVisionConfig:
    """Shape of the CLIP vision trunk; the defaults are OpenAI's ViT-B/32."""

    image_size: int = 224  # size the positional embedding was trained for (7x7 patches + CLS)
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    output_dim: int = 512  # the projection head; kept so full CLIP files load strictly, pruned after
    quick_gelu: bool = True  # OpenAI weights were trained with QuickGELU; GELU silently changes every feature
    taps: tuple[int, ...] = (3, 6, 9, 12)  # 1-based blocks whose outputs become priors (paper: 3, 6, 9, 12)
    input_size: int = 224  # images are squash-resized to this; != image_size interpolates the pos-embed
    trainable: bool = False  # the paper freezes CLIP; a trained encoder is stored in the checkpoint
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        if not self.taps or any(t < 1 or t > self.layers for t in self.taps):
            raise ValueError(f"clip.taps {self.taps} must be 1-based block numbers in 1..{self.layers}")
        if tuple(sorted(set(self.taps))) != tuple(self.taps):
            raise ValueError(f"clip.taps {self.taps} must be strictly increasing")
        if self.input_size % self.patch_size:
            raise ValueError(f"clip.input_size {self.input_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2 + 1


def config_from_state_dict(sd: dict[str, Tensor]) -> ClipVisionConfig:
    """Infer the trunk's shape from an open_clip visual state dict (no ``visual.`` prefix)."""
    width, _, patch, _ = sd["conv1.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    grid = round(math.sqrt(sd["positional_embedding"].shape[0] - 1))
    mlp_hidden = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return ClipVisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=layers,
        heads=max(1, width // 64),  # not recoverable from shapes; every OpenAI/open_clip ViT uses 64-wide heads
        mlp_ratio=mlp_hidden / width,
        output_dim=sd["proj"].shape[1] if "proj" in sd else 512,
        taps=tuple(sorted({max(1, round(layers * f)) for f in (0.25, 0.5, 0.75, 1.0)})),
        input_size=grid * patch,
    )


def detect(sd: dict[str, Tensor]) -> bool:
    """True for an open_clip-style ViT visual state dict (no ``visual.`` prefix)."""
    needed = ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight",
              "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.weight")
    return all(k in sd for k in needed)


class ClipVision(nn.Module):
    """CLIP ViT image trunk with tapped intermediate blocks.

    ``forward(images)`` takes ``(B, 3, H, W)`` float in [0, 1] of any size and returns the residual
    stream after each tapped block, a list of ``(B, N, width)`` tensors (token 0 is CLS), before ``ln_post``.
    """

    def __init__(self, config: ClipVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(
            image_size=config.image_size,
            patch_size=config.patch_size,
            width=config.width,
            layers=config.layers,
            heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            output_dim=config.output_dim,
            act_layer=QuickGELU if config.quick_gelu else nn.GELU,
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.pruned = False
        if not config.trainable:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> ClipVision:
        # A frozen trunk never leaves eval mode: parent.train() must not switch it.
        return super().train(mode and self.config.trainable)

    def prune_intermediate_layers(self) -> None:
        """Drop the blocks after the last tap, ``ln_post`` and the projection: they never run."""
        last = max(self.config.taps)
        self.visual.transformer.resblocks = self.visual.transformer.resblocks[:last]
        self.visual.ln_post = nn.Identity()
        self.visual.proj = None
        self.pruned = True

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, S, S) normalised, differentiable (squash resize, docs/method.md §2.3).

        Computed in fp32 whatever the trunk's dtype (bicubic resampling is fragile, and has no CPU bf16 kernel),
        then cast to the trunk's dtype.
        """
        s = self.config.input_size
        x = images.float()
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        x = (x.clamp(0.0, 1.0) - self.mean.float()) / self.std.float()
        return x.to(self.visual.conv1.weight.dtype)

    def _positional_embedding(self) -> Tensor:
        pos = self.visual.positional_embedding  # (1 + g*g, W)
        grid_in = self.config.image_size // self.config.patch_size
        grid_out = self.config.input_size // self.config.patch_size
        if grid_in == grid_out:
            return pos
        cls, patches = pos[:1], pos[1:]
        patches = patches.reshape(1, grid_in, grid_in, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid_out, grid_out), mode="bicubic", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid_out * grid_out, -1)], dim=0)

    def _embed(self, x: Tensor) -> Tensor:
        v = self.visual
        x = v.conv1(x)  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W), patches in row-major order
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + g*g, W)
        x = x + self._positional_embedding().to(x.dtype)
        return v.ln_pre(x)

    def forward_intermediates(self, images: Tensor, indices: tuple[int, ...] | None = None) -> list[Tensor]:
        """Residual stream after each 1-based block in ``indices`` (default: the config's taps).

        Args:
            images: (B, 3, H, W) float in [0, 1], any H, W.
        Returns:
            one (B, N, width) tensor per index, token 0 = CLS, before ``ln_post``.
        """
        indices = self.config.taps if indices is None else tuple(indices)
        blocks = self.visual.transformer.resblocks
        if max(indices) > len(blocks) or min(indices) < 1:
            raise ValueError(f"block indices {indices} outside 1..{len(blocks)}")
        x = self._embed(self.preprocess(images))
        wanted, out = set(indices), {}
        for i, block in enumerate(blocks[: max(indices)], start=1):
            x = block(x)  # (B, N, W), batch-first as in open_clip >= 2.26
            if i in wanted:
                out[i] = x
        return [out[i] for i in indices]

    forward = forward_intermediates

