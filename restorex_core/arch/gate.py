"""The correction gate (issue 22): how much of the network's correction each image gets, read off the input.

Not in the paper. The paper's network corrects every photo it is given, and one that needs no correction comes
out restyled (the shipped v3: 19.9 dB against itself on held-out well-exposed photos, 11-18 /255 brighter from -1
to 0 EV). The gate is a small MLP on the same features as the tone path (the raw input priors and the input's
histograms, ``restorex_core.arch.tone``) that gives each image one strength ``g`` in [0, 1]; the output is
``x + g (restored(x) - x)``, the blend the ``strength`` option already makes, so a good photo comes back as it is
(``g = 0``: bit for bit), a badly exposed one fully corrected (``g = 1``), and a mildly off one in between. It is
fitted after the network, on the network's own outputs for the training data (``training.gate``). It costs one MLP
per image and a mean per image: nothing a pixel would notice.

A photo's exposure is ambiguous: a well-exposed bright photo and a half-stop over-exposed one can look the same,
and a gate that holds back on the second leaves it too bright. ``brightening_only`` lets the gate hold back only a
correction that brightens the image (:func:`held_back`), so an over-exposed photo is always darkened in full; it
also keeps the network's darkening of a bright photo that needed none, and cross-validated on the training data it
left good photos alone far less often for the same cost on real frames (docs/weights_history.md), so it is off by
default.

The gate can also carry an **output curve** (``curve_steps > 0``; the bundled weights have none): a second small
MLP on the same features that picks, per image, a global curve applied to the Restormer's output
(:func:`apply_output_curve`): ``curve_steps`` quadratic steps per channel, ``v <- v + a v (1 - v)`` with
``|a| <= 1`` (each step is monotone and keeps 0 and 1, so whites stay white and blacks black, and a step can
brighten or darken), then a saturation scale about the pixel's luma. All coefficients zero: the identity. It aims at
the network's global error, which no strength can fix (a strength only mixes the input and the output). It is part
of the correction itself: :meth:`RestoreX.restore` applies it, ``auto_strength`` or not, and the strength is fitted
on the curved output (``training.gate --curve-steps``). Cross-validated on the default recipe's data it lifts the
renders and the good photos' full correction but moves the stack frames 2 dB away from their rule frames
(docs/weights_history.md, "An output curve"), so the default weights do not use it.

``hidden = 0`` (the default) is the paper's model: no gate, every image fully corrected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..images import LUMA, luma_mean
from .tone import histograms

# g = clamp(SPAN * sigmoid(z) - LOW, 0, 1): the sigmoid reaches 0 and 1 exactly at finite z, so a good photo can
# be left bit for bit and a bad one corrected in full, and the gradient is alive everywhere inside (0, 1)
SPAN, LOW = 1.5, 0.25
MAX_SATURATION_LOG = 0.5  # the output curve's saturation scale lies in [exp(-0.5), exp(0.5)]
CURVE_BAND = 1 << 22  # pixels per band of the output curve (apply_output_curve): an 8K photo's temporaries stay small
# a correction counts as brightening in full once it lifts the mean luma by this much (of 1), as not at all at 0:
# a ramp, so that a correction that barely changes the brightness gets no step in its strength
BRIGHTENING_RAMP = 0.01


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    hidden: int = 0  # the MLP's width; 0: no gate (the paper's model)
    bins: int = 32  # histogram bins per channel, as the tone path's
    prior_dim: int = 256  # D of the priors read (pem.dim)
    num_priors: int = 4  # priors read (one per CLIP tap)
    feature_side: int = 256  # histograms are read at this long side: the same for a 512 px and an 8K photo
    brightening_only: bool = False  # hold back only corrections that brighten the image (held_back)
    curve_steps: int = 0  # the output curve's quadratic steps per channel; 0: no output curve
    curve_hidden: int = 128  # the output curve MLP's width

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.bins < 2 or self.feature_side < 8:
            raise ValueError(f"gate needs hidden >= 0, bins >= 2 and feature_side >= 8, not {self.hidden}, "
                             f"{self.bins} and {self.feature_side}")
        if self.curve_steps < 0 or (self.curve_steps > 0 and self.curve_hidden < 1):
            raise ValueError(f"gate needs curve_steps >= 0 and, with an output curve, curve_hidden >= 1, not "
                             f"{self.curve_steps} and {self.curve_hidden}")

    @property
    def enabled(self) -> bool:
        return self.hidden > 0

    @property
    def feature_dim(self) -> int:
        return self.num_priors * self.prior_dim + 3 * self.bins

    @property
    def curve_params(self) -> int:
        """Numbers the output curve takes per image: 3 per step and a saturation scale (0 without a curve)."""
        return 3 * self.curve_steps + 1 if self.curve_steps else 0


def strength_from_logit(z: Tensor) -> Tensor:
    """The gate's last layer (B,) -> strengths (B,) in [0, 1] (see :data:`SPAN`)."""
    return (SPAN * torch.sigmoid(z) - LOW).clamp(0.0, 1.0)


def held_back(strength: Tensor, images: Tensor, corrected: Tensor, *, brightening_only: bool) -> Tensor:
    """The share of the correction each image keeps: the gate's ``strength`` (B,), or, ``brightening_only``, the
    gate's strength where the correction brightens the image (its mean luma rises by :data:`BRIGHTENING_RAMP` or
    more), 1 where it darkens, and in between on the ramp.

    Args:
        strength: (B,) in [0, 1] (:meth:`CorrectionGate.forward`).
        images, corrected: (B, C, H, W) float in [0, 1], the input and the network's full correction of it.
    Returns:
        (B,) fp32 in [0, 1].
    """
    strength = strength.float()
    if not brightening_only:
        return strength
    return kept_share(strength, (luma_mean(corrected) - luma_mean(images)).to(strength.device))


def kept_share(strength: Tensor, rise: Tensor) -> Tensor:
    """:func:`held_back` with ``brightening_only``, given each correction's mean-luma ``rise`` (B,) (the fit
    precomputes it): the gate's strength where the image brightens, 1 where it darkens, in between on the ramp."""
    brightening = (rise / BRIGHTENING_RAMP).clamp(0.0, 1.0)
    return 1.0 - brightening * (1.0 - strength)


def curve_from_logits(z: Tensor) -> Tensor:
    """The output-curve MLP's last layer (B, 3 S + 1) -> the curve's parameters (B, 3 S + 1): S x 3 step
    coefficients in (-1, 1), then the saturation scale in [exp(-0.5), exp(0.5)]. Zero logits: the identity."""
    return torch.cat([torch.tanh(z[:, :-1]), torch.exp(MAX_SATURATION_LOG * torch.tanh(z[:, -1:]))], dim=1)


def apply_output_curve(images: Tensor, params: Tensor) -> Tensor:
    """``images`` (B, 3, H, W) in [0, 1] through each image's output curve (:func:`curve_from_logits`'s (B or 1,
    3 S + 1)), in fp32 and in bands of rows, clamped to [0, 1]; returned in the images' dtype."""
    b, c, h, w = images.shape
    if c != 3:
        raise ValueError(f"the output curve takes RGB images (B, 3, H, W), got {tuple(images.shape)}")
    steps = (params.shape[1] - 1) // 3
    if params.shape[1] != 3 * steps + 1 or steps < 1 or params.shape[0] not in (1, b):
        raise ValueError(f"output-curve parameters of shape {tuple(params.shape)} do not fit {b} images: "
                         "(B or 1, 3 x steps + 1)")
    params = params.float().to(images.device)
    coeffs = params[:, :-1].reshape(-1, steps, 3, 1, 1)
    saturation = params[:, -1].view(-1, 1, 1, 1)
    luma = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)

    def curve(band: Tensor) -> Tensor:
        v = band.float().clamp(0.0, 1.0)
        for k in range(steps):
            v = v + coeffs[:, k] * v * (1.0 - v)
        y = (v * luma).sum(1, keepdim=True)
        return (y + saturation * (v - y)).clamp(0.0, 1.0).to(images.dtype)

    rows = max(1, CURVE_BAND // max(1, b * w))
    return torch.cat([curve(band) for band in images.split(rows, dim=2)], dim=2)


class CorrectionGate(nn.Module):
    """Priors + histograms -> one correction strength per image.

    Feature statistics are buffers (set from the training features by the fit); the last layer starts at zero
    with its bias where the strength is 1, so an untrained gate corrects every image fully (the paper's model).
    """

    def __init__(self, config: GateConfig) -> None:
        super().__init__()
        if not config.enabled:
            raise ValueError("CorrectionGate needs gate.hidden > 0 (0 means the model has no gate)")
        self.config = config
        n = config.feature_dim
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.net = nn.Sequential(nn.Linear(n, config.hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(config.hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, float(torch.logit(torch.tensor((1.0 + LOW) / SPAN))))
        self.curve_net = None
        if config.curve_steps:  # its last layer starts at zero: the identity curve
            self.curve_net = nn.Sequential(nn.Linear(n, config.curve_hidden), nn.GELU(), nn.Dropout(0.1),
                                           nn.Linear(config.curve_hidden, config.curve_params))
            nn.init.zeros_(self.curve_net[-1].weight)
            nn.init.zeros_(self.curve_net[-1].bias)

    def features(self, vectors: list[Tensor] | tuple[Tensor, ...], images: Tensor) -> Tensor:
        """The gate's input: the input priors (N x (B, D)) and the images' histograms -> (B, feature_dim) fp32."""
        c = self.config
        hist = histograms(images, c.bins, c.feature_side).to(vectors[0].device)
        return torch.cat([*(v.float() for v in vectors), hist], dim=1)

    def normalised(self, features: Tensor) -> Tensor:
        """(B, feature_dim) -> the MLPs' input, standardised by the training features' statistics, fp32."""
        return (features.float() - self.feature_mean.float()) / self.feature_std.float()

    def strength(self, features: Tensor) -> Tensor:
        """(B, feature_dim) -> (B,) fp32 strengths in [0, 1]."""
        z = self.normalised(features).to(self.net[0].weight.dtype)
        return strength_from_logit(self.net(z).float()[:, 0])

    def output_curve(self, features: Tensor) -> Tensor | None:
        """(B, feature_dim) -> (B, 3 S + 1) fp32 output-curve parameters (:func:`apply_output_curve`), None
        without an output curve."""
        if self.curve_net is None:
            return None
        z = self.normalised(features).to(self.curve_net[0].weight.dtype)
        return curve_from_logits(self.curve_net(z).float())

    def forward(self, vectors: list[Tensor] | tuple[Tensor, ...], images: Tensor) -> Tensor:
        return self.strength(self.features(vectors, images))
