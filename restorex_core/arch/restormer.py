"""Restormer with prior injection (docs/method.md §5), written from the architecture description.

A 4-level U-Net of transformer blocks. Each block is
    x = x + MDTA(inject(LN(x), P)),   x = x + GDFN(inject(LN(x), P))
with the paper's eq. 7 as the injection: inject(y, P) = (W1 P) * y + W2 P, W1 and W2 the two halves of
one bias-free Linear(D, 2C). ``prior_dim = 0`` builds the plain Restormer (the "no prior" ablation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

Mapping = Literal["level", "sequential", "concat"]
# The 8 Levels in forward order: these attribute names are the state-dict key prefixes, so they never change.
LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
          "decoder_level3", "decoder_level2", "decoder_level1", "refinement")
LEVEL_DEPTH = (0, 1, 2, 3, 2, 1, 0, 0)  # 2x downsamplings above each Level: 0 = full resolution (refinement too)


@dataclass(frozen=True, kw_only=True)
class RestormerConfig:
    in_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)  # paper: [2,2,2,2] (Restormer default [4,6,6,8])
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    prior_dim: int = 256  # D; 0 = no injection
    num_priors: int = 4
    mapping: Mapping = "level"  # which prior feeds which Level (docs/method.md §5.3)
    scale_offset: bool = False  # inject (1 + W1 P) instead of W1 P: optional stabiliser, not in eq. 7
    checkpointing: bool = False  # activation checkpointing per block: -68% training memory, +20% time

    def __post_init__(self) -> None:
        if self.mapping not in ("level", "sequential", "concat"):
            raise ValueError(f"restormer.mapping must be level, sequential or concat, not {self.mapping!r}")

    @property
    def kernel_dim(self) -> int:
        """Input size of each injection Linear."""
        return self.prior_dim * self.num_priors if self.mapping == "concat" else self.prior_dim

    def level_priors(self) -> tuple[int, ...]:
        """Index of the prior each of the 8 Levels receives (-1: the concatenation of all)."""
        n = self.num_priors
        if self.mapping == "concat":
            return (-1,) * len(LEVELS)
        if self.mapping == "level":  # P1 -> enc1/dec1/refine, P2 -> L2, P3 -> L3, P4 -> latent (for n = 4)
            return tuple(round(depth * (n - 1) / 3) for depth in LEVEL_DEPTH)
        return tuple(i * n // len(LEVELS) for i in range(len(LEVELS)))  # sequential pairs along the forward path


class LayerNorm2d(nn.Module):
    """LayerNorm over channels per pixel, via F.layer_norm on a channels-last view (docs/method.md §9: 39% faster)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """LN(x), or with (B, C) ``scale`` and ``shift`` the injected ``LN(x) * scale + shift`` in one pass."""
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C): a free view of a channels_last tensor
        c = x.shape[-1:]
        if scale is None or shift is None:
            x = F.layer_norm(x, c, self.weight, self.bias, 1e-5)
        else:  # eq. 7 folded into the affine of the norm, (LN * w + b) * s + t, image by image: the same
            # arithmetic whatever the batch, so an image gets the same pixels alone and in a batch (in bf16 a
            # separate addcmul for batches rounded differently: up to 5/255 apart, docs/engine.md)
            outs = [F.layer_norm(x[i : i + 1], c, self.weight * scale[i], self.bias * scale[i] + shift[i], 1e-5)
                    for i in range(x.shape[0])]
            x = outs[0] if len(outs) == 1 else torch.cat(outs)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class PriorInjection(nn.Module):
    """Eq. 7: y' = (W1 P) * y + W2 P, per channel, broadcast over the image."""

    def __init__(self, prior_dim: int, channels: int, scale_offset: bool) -> None:
        super().__init__()
        self.kernel = nn.Linear(prior_dim, 2 * channels, bias=False)
        self.scale_offset = scale_offset

    def scale_shift(self, prior: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(B, D) prior -> (W1 P, W2 P), 2 x (B, C)."""
        scale, shift = self.kernel(prior.to(dtype)).chunk(2, dim=1)
        return (scale + 1.0 if self.scale_offset else scale), shift

    def forward(self, y: Tensor, prior: Tensor) -> Tensor:
        scale, shift = self.scale_shift(prior, y.dtype)
        return y * scale[:, :, None, None] + shift[:, :, None, None]


class TransposedAttention(nn.Module):
    """MDTA: attention across channels (C/h x C/h per head), linear in the number of pixels."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        # Shared-attention mode (tiling): "record" keeps the attention map of a whole-image pass, "replay"
        # uses it instead of the tile's own. Not state-dict entries.
        self.shared_mode: Literal["off", "record", "replay"] = "off"
        self.shared_attn: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # Pixels-major (B, HW, 3C): a free view of a channels_last tensor, the layout the CPU convolutions
        # run fastest in; nothing full-size is copied, normalised or multiplied outside a convolution.
        heads = self.heads
        qkv = self.qkv_dwconv(self.qkv(x))
        if self.shared_mode == "replay" and self.shared_attn is not None:
            attn = self.shared_attn
        else:
            attn = self._attention(qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3 * c)[:, :, : 2 * c], c)
            if self.shared_mode == "record":
                self.shared_attn = attn
        # out = project_out(per head: v @ attn^T) is one linear map over channels per pixel: fold the
        # attention (block-diagonal over heads) into project_out's weight and run one 1x1 convolution on v,
        # instead of a full-size matmul, its copies, then the convolution.
        eye = torch.eye(heads, device=attn.device, dtype=attn.dtype)
        mix = torch.einsum("bhij,hg->bhigj", attn, eye).reshape(-1, c, c)  # (B, C, C) block-diagonal
        weight = (self.project_out.weight.float().reshape(c, c) @ mix).to(qkv.dtype)[..., None, None]
        v = qkv[:, 2 * c :]
        bias = self.project_out.bias
        outs = [F.conv2d(v[i : i + 1], weight[i if weight.shape[0] > 1 else 0], bias) for i in range(b)]
        return outs[0] if b == 1 else torch.cat(outs)

    def _attention(self, qk: Tensor, c: int) -> Tensor:
        """(B, HW, 2C) q and k -> (B, heads, C/h, C/h) softmax(temperature * cos(q_i, k_j)), fp32.

        One Gram matrix of all q and k channels gives both the dot products and the squared norms:
        cos(q_i, k_j) = q_i . k_j / (max(|q_i|, eps) max(|k_j|, eps)), as F.normalize on q and k would,
        without normalised full-size copies of q and k (one read instead of three).  A 2-D mm per image:
        the batched matmul of a strided view copies it first in bf16 (10x slower on CPU)."""
        b, heads, ch = qk.shape[0], self.heads, c // self.heads
        gram = torch.stack([(qk[i].transpose(0, 1) @ qk[i]).float() for i in range(b)])  # (B, 2C, 2C)
        norm = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().clamp_min(1e-12)  # (B, 2C)
        cos = gram[:, :c, c:] / (norm[:, :c, None] * norm[:, None, c:])  # (B, C, C)
        cos = cos.reshape(b, heads, ch, heads, ch).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)  # (B, h, C/h, C/h)
        return (cos * self.temperature.float()).softmax(dim=-1)


class GatedFeedForward(nn.Module):
    """GDFN: 1x1 expand to 2 hidden, 3x3 depthwise, GELU(x1) * x2, 1x1 back."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1).mul_(x2))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, config: RestormerConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = TransposedAttention(dim, heads, config.bias)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GatedFeedForward(dim, config.ffn_expansion_factor, config.bias)
        injected = config.prior_dim > 0
        self.inject_attn = PriorInjection(config.kernel_dim, dim, config.scale_offset) if injected else None
        self.inject_ffn = PriorInjection(config.kernel_dim, dim, config.scale_offset) if injected else None

    def forward(self, x: Tensor, prior: Tensor | None) -> Tensor:
        # LN then eq. 7, fused into one pass over the pixels (LayerNorm2d with scale and shift)
        x = x + self.attn(self.norm1(x, *self.inject_attn.scale_shift(prior, x.dtype))
                          if self.inject_attn is not None else self.norm1(x))
        y = (self.norm2(x, *self.inject_ffn.scale_shift(prior, x.dtype)) if self.inject_ffn is not None
             else self.norm2(x))
        return x + self.ffn(y)


class Level(nn.Module):
    """The transformer blocks of one U-Net level on one side (encoder, latent, decoder or refinement),
    sharing one prior."""

    def __init__(self, dim: int, heads: int, depth: int, config: RestormerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, config) for _ in range(depth))
        self.checkpointing = config.checkpointing

    def forward(self, x: Tensor, prior: Tensor | None, interrupt: Callable[[], None] | None = None) -> Tensor:
        for block in self.blocks:
            if interrupt is not None:  # raises to stop: the longest a stop waits is one block
                interrupt()
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, prior, use_reentrant=False)
            else:
                x = block(x, prior)
        return x


def downsample(channels: int) -> nn.Module:
    """(B, C, H, W) -> (B, 2C, H/2, W/2)."""
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def upsample(channels: int) -> nn.Module:
    """(B, C, H, W) -> (B, C/2, 2H, 2W)."""
    return nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class PriorRestormer(nn.Module):
    """(B, 3, H, W) with H, W multiples of 8, plus priors -> (B, 3, H, W) (unclamped; global residual)."""

    multiple_of = 8  # three 2x downsamplings

    def __init__(self, config: RestormerConfig) -> None:
        super().__init__()
        self.config = config
        c, nb, hd = config.dim, config.num_blocks, config.heads
        self.patch_embed = nn.Conv2d(config.in_channels, c, 3, padding=1, bias=config.bias)
        self.encoder_level1 = Level(c, hd[0], nb[0], config)
        self.down1_2 = downsample(c)
        self.encoder_level2 = Level(c * 2, hd[1], nb[1], config)
        self.down2_3 = downsample(c * 2)
        self.encoder_level3 = Level(c * 4, hd[2], nb[2], config)
        self.down3_4 = downsample(c * 4)
        self.latent = Level(c * 8, hd[3], nb[3], config)
        self.up4_3 = upsample(c * 8)
        self.reduce_chan_level3 = nn.Conv2d(c * 8, c * 4, 1, bias=config.bias)
        self.decoder_level3 = Level(c * 4, hd[2], nb[2], config)
        self.up3_2 = upsample(c * 4)
        self.reduce_chan_level2 = nn.Conv2d(c * 4, c * 2, 1, bias=config.bias)
        self.decoder_level2 = Level(c * 2, hd[1], nb[1], config)
        self.up2_1 = upsample(c * 2)  # no channel reduction at level 1: the decoder works at 2C
        self.decoder_level1 = Level(c * 2, hd[0], nb[0], config)
        self.refinement = Level(c * 2, hd[0], config.num_refinement_blocks, config)
        self.output = nn.Conv2d(c * 2, config.in_channels, 3, padding=1, bias=config.bias)

    def route_priors(self, priors: list[Tensor] | None) -> list[Tensor | None]:
        """The prior each of the 8 Levels receives, in forward order."""
        if self.config.prior_dim == 0:
            return [None] * len(LEVELS)
        if priors is None or len(priors) != self.config.num_priors:
            got = "none" if priors is None else len(priors)
            raise ValueError(f"this Restormer takes {self.config.num_priors} priors, got {got}")
        full = torch.cat(priors, dim=-1) if self.config.mapping == "concat" else None
        return [full if i < 0 else priors[i] for i in self.config.level_priors()]

    @contextmanager
    def shared_attention(self, guide: Tensor, priors: list[Tensor] | None = None, *,
                         interrupt: Callable[[], None] | None = None) -> Iterator[None]:
        """Run every MDTA with the attention maps of a whole-image pass over ``guide``.

        MDTA's channel attention is a statistic of the whole extent it sees, so a tile on its own would be
        corrected by its own statistics (a dark corner brightened as if it were the whole photo). Inside this
        context each block reuses the (C/h x C/h) maps recorded on ``guide`` (the whole image, downscaled to
        bound memory, multiple of 8): tiles then share the image's global statistics as they share its priors.
        """
        with self.replay_attention(self.record_attention(guide, priors, interrupt=interrupt)):
            yield

    def record_attention(self, guide: Tensor, priors: list[Tensor] | None = None, *,
                         interrupt: Callable[[], None] | None = None) -> list[Tensor]:
        """The attention maps of every MDTA (forward order) in a pass over ``guide``: (B, heads, C/h, C/h) fp32
        each, a few kB per image, which a clip can keep per frame and smooth over time."""
        attns = self._attention_modules()
        try:
            for m in attns:
                m.shared_mode, m.shared_attn = "record", None
            self(guide, priors, interrupt=interrupt)
            return [m.shared_attn for m in attns]
        finally:
            for m in attns:
                m.shared_mode, m.shared_attn = "off", None

    @contextmanager
    def replay_attention(self, maps: list[Tensor]) -> Iterator[None]:
        """Run every MDTA with the given maps (from :meth:`record_attention`, possibly smoothed)."""
        attns = self._attention_modules()
        if len(maps) != len(attns):
            raise ValueError(f"{len(maps)} attention maps for {len(attns)} attention blocks")
        try:
            for m, a in zip(attns, maps, strict=True):
                m.shared_mode, m.shared_attn = "replay", a
            yield
        finally:
            for m in attns:
                m.shared_mode, m.shared_attn = "off", None

    def _attention_modules(self) -> list[TransposedAttention]:
        return [m for m in self.modules() if isinstance(m, TransposedAttention)]

    def forward(self, x: Tensor, priors: list[Tensor] | None = None, *,
                interrupt: Callable[[], None] | None = None, add_input: bool = True) -> Tensor:
        """``interrupt`` is called before every transformer block and raises to stop the pass.

        ``add_input=False`` returns only the residual ``output(d1)``, for a caller that adds it to the input
        in higher precision than the pass ran in (a bf16 sum keeps 8 bits: a 16-bit image would lose its tones).
        Any memory format works; channels_last runs fastest on CPUs (the output keeps the input's format).
        """
        p = dict(zip(LEVELS, self.route_priors(priors), strict=True))
        stop = interrupt
        e1 = self.encoder_level1(self.patch_embed(x), p["encoder_level1"], stop)  # (B, C, H, W)
        e2 = self.encoder_level2(self.down1_2(e1), p["encoder_level2"], stop)  # (B, 2C, H/2, W/2)
        e3 = self.encoder_level3(self.down2_3(e2), p["encoder_level3"], stop)  # (B, 4C, H/4, W/4)
        z = self.latent(self.down3_4(e3), p["latent"], stop)  # (B, 8C, H/8, W/8)
        d3 = self.reduce_chan_level3(torch.cat([self.up4_3(z), e3], dim=1))
        d3 = self.decoder_level3(d3, p["decoder_level3"], stop)  # (B, 4C, H/4, W/4)
        d2 = self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], dim=1))
        d2 = self.decoder_level2(d2, p["decoder_level2"], stop)  # (B, 2C, H/2, W/2)
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], dim=1), p["decoder_level1"], stop)  # (B, 2C, H, W)
        d1 = self.refinement(d1, p["refinement"], stop)
        residual = self.output(d1)
        return residual + x if add_input else residual  # global residual


def detect_plain_restormer(sd: dict[str, Tensor]) -> bool:
    """Un-prefixed keys of an original (non-injected) Restormer checkpoint, as spandrel detects them."""
    keys = ("patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "down1_2.body.0.weight",
            "latent.0.attn.temperature", "refinement.0.attn.temperature", "output.weight")
    return all(k in sd for k in keys)
