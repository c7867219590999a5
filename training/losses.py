"""Training losses of CLIP-RestoreX (docs/method.md §6) and the per-stage objective (docs/method.md §7).

* L1: ``mean |I_out - I_gt|`` on the unclamped Restormer output (a clamp would stop the gradient of
  pixels pushed outside [0, 1]).
* L_p (eq. 8): ``mean_i |P'_i - P_gt_i|``, the enhanced priors against the stage-1 teacher's priors of
  the GT, teacher detached.  The mean over the priors keeps its scale independent of how many are tapped.
* L_SAP (eq. 9): ``sum_i |psi_i(I_out) - psi_i(I_gt)|_1`` over the tapped CLIP blocks, each term a mean
  L1; ``psi_i`` is the same vector the priors use (``pem.token`` pooling, CLS by default) or, with
  ``tokens="all"``, the whole token sequence.  The GT side runs under no_grad; the output side
  back-propagates through CLIP and its preprocessing (squash resize, normalisation) into the image.
  The encoder's own parameters never receive L_SAP gradients: a frozen CLIP has none anyway, and a
  trainable encoder could otherwise lower L_SAP by collapsing its features.
* eps (eq. 6, only with ``ffedm.objective = "epsilon"``): MSE between the predicted and the true noise at a
  random t, with ``x_t`` from the core's ``model.scheduler.add_noise`` (no second noise schedule).

:class:`Objective` is an ``nn.Module`` whose forward returns the loss terms of one batch, so the
trainer can wrap it in DistributedDataParallel as one unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from restorex_core import Priors, RestoreX
from restorex_core.arch.clip_vit import ClipVision
from restorex_core.arch.pem import pool_tokens
from restorex_core.arch.tone import apply_curves
from restorex_core.images import srgb_to_lab

from .baselines import LUMA

SapTokens = Literal["prior", "all"]


def l1_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error, computed in fp32."""
    return F.l1_loss(output.float(), target.float())


def _gaussian_blur(x: Tensor, sigma: float = 1.5, radius: int = 5) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (same size out)."""
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_loss(output: Tensor, target: Tensor) -> Tensor:
    """``1 - SSIM`` (11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1), fp32.

    The field's usual term against washed-out regression: unlike L1 it rewards local contrast and
    structure, which a model hedging toward mid-grey loses.
    """
    x, y = output.float(), target.float()
    mx, my = _gaussian_blur(x), _gaussian_blur(y)
    vx = _gaussian_blur(x * x) - mx * mx
    vy = _gaussian_blur(y * y) - my * my
    cxy = _gaussian_blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1.0 - ssim.mean()


def opponent_chroma(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 2, H, W) opponent chroma (R - G, (R + G) / 2 - B): zero for greys."""
    r, g, b = x.float().unbind(dim=1)
    return torch.stack((r - g, 0.5 * (r + g) - b), dim=1)


def colour_loss(output: Tensor, target: Tensor) -> Tensor:
    """Colour term: L1 between the opponent chroma of output and target at 1/4 resolution (hue and
    saturation of regions, not of noise), plus the mismatch of each image's mean chroma magnitude
    (the desaturation that a per-pixel L1 tolerates when the model hedges toward grey)."""
    co, ct = (F.avg_pool2d(opponent_chroma(t), 4, ceil_mode=True) for t in (output, target))
    local = F.l1_loss(co, ct)
    sat = (co.norm(dim=1).flatten(1).mean(1) - ct.norm(dim=1).flatten(1).mean(1)).abs().mean()
    return local + sat


def cast_loss(output: Tensor, target: Tensor) -> Tensor:
    """Colour-cast term: L1 between each image's mean opponent chroma (its white balance) in output and
    target.  ``colour_loss`` spreads a global tint over every local cell, where it competes with the
    content; this names it once per image (the warm veil the v2 default left on darkened, clipped skies)."""
    co, ct = (opponent_chroma(t).mean(dim=(2, 3)) for t in (output, target))
    return F.l1_loss(co, ct)


def blown_target(target: Tensor, lq: Tensor, *, low: float = 0.9, high: float = 0.98, strength: float = 1.0) -> Tensor:
    """The target with the input's blown regions kept as they are: where the input's darkest channel (after a
    small blur, so single pixels don't count) is above ``high`` the target becomes the input, below ``low`` it
    stays, with a linear ramp between.  A clipped region holds nothing of what the target has there (a fused
    target's sky detail comes from frames the model never sees), so an L1 toward it trains the mean of all
    possible skies: the grey-beige veil issue 22 names.  Kept as the input, it trains "a blown region comes
    out as a clean, bright highlight, or in the colour the input hints at".  ``strength`` < 1 keeps that share of
    the input there (0.5: halfway between the input's white and the target)."""
    x = lq[:, :3].float()
    m = strength * ((_gaussian_blur(x).amin(dim=1, keepdim=True) - low) / (high - low)).clamp(0.0, 1.0)
    return (m * x + (1.0 - m) * target.float()).to(target.dtype)


def tone_loss(output: Tensor, target: Tensor) -> Tensor:
    """Global tone term: per image, the L1 between output and target of the mean luma (its brightness) and
    of the standard deviation of the luma at 1/4 resolution (its global contrast, the contrast of regions,
    not of noise).  Measured on real photos, the defaults' errors were global: outputs 8-11 /255 too dark on
    under-exposed inputs, with 1.36x the references' contrast (issue 22); a per-pixel L1 spreads such an
    error thinly over every pixel, where it competes with the content; this names it once per image."""
    w = output.new_tensor(LUMA).view(1, 3, 1, 1)
    yo, yt = (F.avg_pool2d((t.float() * w).sum(1, keepdim=True), 4, ceil_mode=True).flatten(1)
              for t in (output, target))
    return ((yo.mean(1) - yt.mean(1)).abs() + (yo.std(1) - yt.std(1)).abs()).mean()


def lab_chroma_loss(output: Tensor, target: Tensor) -> Tensor:
    """Perceptual colour term: L1 between the CIELAB a*, b* of output and target at 1/4 resolution, in units
    of 100 (a b* error of 20 alone, a light blue sky gone grey-teal, costs 0.1).  ``colour_loss`` measures
    chroma as sRGB channel differences, which are not spaced as the eye sees hue and saturation; this term is.
    Tried against v3's teal skies, it did not move them (weights/README.md, "Sixth session")."""
    lo, lt = (srgb_to_lab(F.avg_pool2d(t.float(), 4, ceil_mode=True))[:, 1:] for t in (output, target))
    return F.l1_loss(lo, lt) / 100.0


def highlight_loss(output: Tensor, target: Tensor, lq: Tensor, threshold: float = 0.9) -> Tensor:
    """Clipped-highlight term: L1 of output and target at 1/4 resolution (colour and level of regions) over
    only the cells where the input is clipped (its brightest channel >= ``threshold``), averaged over those
    cells; 0 for a batch without any.  The whole-image terms give the few clipped cells of a picture (a blown
    sky) little weight, and a model that cannot see their colour settles there for a neutral grey."""
    mask = F.avg_pool2d((lq[:, :3].float().amax(dim=1, keepdim=True) >= threshold).float(), 4, ceil_mode=True)
    po, pt = (F.avg_pool2d(t.float(), 4, ceil_mode=True) for t in (output, target))
    return ((po - pt).abs().mean(dim=1, keepdim=True) * mask).sum() / mask.sum().clamp_min(1.0)


def highlight_cast_loss(output: Tensor, target: Tensor, lq: Tensor, *, bright: float = 0.78,
                        grey: float = 0.1, min_cells: float = 0.01) -> Tensor:
    """Highlight white-balance term: per image, the squared difference between the *mean* opponent chroma of
    output and target over the input's bright, near-colourless regions (at 1/4 resolution, the cells whose
    darkest channel is >= ``bright`` and whose channel spread is <= ``grey``), averaged over the images with at
    least ``min_cells`` of such cells; 0 for a batch without any.

    Whether such a region is a blown blue sky or a white wall is told, in the data, mostly by the faint tint
    the region keeps as a whole (a region-mean b* of -1 against +1 separates them with AUC 0.9; eighth
    session, weights/README.md), which a per-pixel loss leaves buried in noise.  Naming the region's mean
    once per image gives that cue a clean gradient; squared, so that where the cue is unsure the model is
    pulled to the mean of the targets' colours, not to their (grey) median.  Tried as v10: it moved held-out
    blue skies by 2-4 b* and cost 1.3 dB on over-exposed stack frames (not shipped)."""
    cells = F.avg_pool2d(lq[:, :3].float(), 4, ceil_mode=True)
    darkest = cells.amin(dim=1)
    mask = ((darkest >= bright) & (cells.amax(dim=1) - darkest <= grey)).float()  # (B, h, w)
    area = mask.flatten(1).sum(1)
    keep = area >= min_cells * mask[0].numel()
    if not bool(keep.any()):
        return output.sum() * 0.0
    co, ct = (F.avg_pool2d(opponent_chroma(t), 4, ceil_mode=True) for t in (output, target))
    mo, mt = ((c * mask[:, None]).flatten(2).sum(2) / area.clamp_min(1.0)[:, None] for c in (co, ct))
    return ((mo - mt) ** 2).sum(1)[keep].mean()


def prior_loss(enhanced: Priors, teacher: Priors) -> Tensor:
    """Eq. 8: mean over priors and elements of ``|P'_i - P_gt_i|``; the teacher is detached."""
    return F.l1_loss(enhanced.stacked().float(), teacher.stacked().detach().float())


def clip_features(clip: ClipVision, images: Tensor, *, encoder_grad: bool = False) -> list[Tensor]:
    """Tapped block outputs of ``images`` (B, 3, H, W) in [0, 1]; gradients always reach ``images``.

    With ``encoder_grad=False`` the encoder runs on detached copies of its parameters, so none of its
    weights receives a gradient from this call (whether or not they are trainable elsewhere).
    """
    if encoder_grad:
        return clip(images)
    params = {name: p.detach() for name, p in clip.named_parameters()}
    return functional_call(clip, params, (images,))


def _psi(tokens: Tensor, mode: str) -> Tensor:
    return tokens if mode == "all" else pool_tokens(tokens, mode)


def sap_loss(clip: ClipVision, output: Tensor, target: Tensor, *, token: str = "cls",
             tokens: SapTokens = "prior", encoder_grad: bool = False) -> Tensor:
    """Eq. 9: sum over the tapped blocks of the mean L1 between CLIP features of output and target.

    Args:
        output: (B, 3, H, W) restored image (may slightly leave [0, 1]; CLIP's preprocessing clamps).
        target: (B, 3, H, W) ground truth in [0, 1].
        token: the priors' pooling (``pem.token``: cls | mean | cls+mean), used when ``tokens="prior"``.
        tokens: ``"prior"`` compares the pooled vectors Z_i; ``"all"`` every token of each tapped block.
    """
    if tokens not in ("prior", "all"):
        raise ValueError(f"loss.sap_tokens must be 'prior' or 'all', not {tokens!r}")
    mode = "all" if tokens == "all" else token
    with torch.no_grad():
        ref = [_psi(t, mode) for t in clip_features(clip, target)]
    out = [_psi(t, mode) for t in clip_features(clip, output, encoder_grad=encoder_grad)]
    return torch.stack([F.l1_loss(o.float(), r.float()) for o, r in zip(out, ref, strict=True)]).sum()


def eps_loss(model: RestoreX, priors: Priors, teacher: Priors) -> Tensor:
    """Eq. 6: ``|eps - eps_theta(x_t, c, t)|^2`` with t uniform in [0, T) per sample."""
    x0 = model.ffedm.encode(teacher.stacked().detach())  # (B, N, d) fp32
    cond = model.ffedm.encode(priors.stacked())
    t = torch.randint(0, model.scheduler.num_train_timesteps, (x0.shape[0],))
    noise = torch.randn(x0.shape).to(x0.device)
    x_t = model.scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model.ffedm(x_t, t.to(x0.device), cond), noise)


def residual_mean_loss(out: Tensor, toned: Tensor) -> Tensor:
    """Mean |per-image, per-channel mean of the Restormer's residual| (``out - toned``; not in the paper).

    Behind the global tone path (``restorex_core.arch.tone``) the curve sets each image's tone and the Restormer's
    residual is meant for local work: lifting a shadow here, darkening a lamp there, denoising. A residual whose
    channel means move shifts the whole image's brightness or colour, which is the curve's job; left free, it
    learns the training set's average correction and applies it to photos that need none. Zero for a residual
    that only redistributes light within the image."""
    return (out.float() - toned.float()).mean(dim=(-2, -1)).abs().mean()


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    prior: float = 1.0  # L_p (stage 2)
    sap: float = 1.0  # L_SAP
    ssim: float = 0.0  # 1 - SSIM on the output (not in the paper; the default recipe's answer to flat outputs)
    colour: float = 0.0  # colour_loss (not in the paper; against desaturated outputs)
    cast: float = 0.0  # cast_loss (not in the paper; against a global colour cast)
    highlight: float = 0.0  # highlight_loss (not in the paper; against grey clipped skies)
    lab: float = 0.0  # lab_chroma_loss (not in the paper; against teal skies)
    highlight_cast: float = 0.0  # highlight_cast_loss (not in the paper; against grey blown skies)
    tone: float = 0.0  # tone_loss (not in the paper; against global brightness and contrast errors)
    residual_mean: float = 0.0  # residual_mean_loss (not in the paper; keeps the global tone to the tone path)
    keep_blown: bool = False  # image terms toward blown_target (not in the paper; against grey veils on clipped skies)
    blown_share: float = 1.0  # keep_blown: the share of the input kept in its blown regions (blown_target strength)
    eps: float = 1.0  # eq. 6 term, ffedm.objective = "epsilon" only
    sap_tokens: SapTokens = "prior"
    sap_encoder_grad: bool = False  # let L_SAP train a trainable encoder too (risks feature collapse)


class Objective(nn.Module):
    """One training step's forward: the loss terms of a batch for stage 1 or stage 2.

    Stage 1: priors from the GT by PEM-S1 drive the Restormer on the degraded input; L1 + L_SAP.
    Stage 2: the frozen teacher (CLIP + PEM-S1) gives P_gt from the GT; PEM-S2 reads the input, FFEDM
    enhances its priors through the unrolled chain started from q(x_T | P_gt); L_p + L1 + L_SAP.
    ``diffusion_only`` (stage 2 warm-up) returns L_p alone and skips the Restormer.
    """

    def __init__(self, model: RestoreX, *, stage: int, weights: LossWeights) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"train.stage must be 1 or 2, not {stage!r}")
        self.model, self.stage, self.weights = model, stage, weights

    def forward(self, lq: Tensor, gt: Tensor, diffusion_only: bool = False) -> dict[str, Tensor]:
        m, w = self.model, self.weights
        use_priors = m.config.restormer.prior_dim > 0
        terms: dict[str, Tensor] = {}
        vectors, toned = None, lq
        if use_priors and self.stage == 1:
            vectors = list(m.extract_priors(gt, source="reference").vectors)
        elif use_priors:
            with torch.no_grad():
                teacher = m.extract_priors(gt, source="reference")
            priors = m.extract_priors(lq, source="input")
            if m.config.ffedm.objective == "epsilon":  # eq. 6, plus L_p through the full stochastic chain
                terms["eps"] = eps_loss(m, priors, teacher)
                enhanced = m.enhance_priors(priors)
            else:  # DiffIR: x0 prediction, chain started from q(x_T | P_gt), backpropagated end to end
                enhanced = m.enhance_priors(priors, target=teacher)
            terms["prior"] = prior_loss(enhanced, teacher)
            vectors = list(enhanced.vectors)
            if m.tone is not None:  # the global tone path: the Restormer works on the curved input
                toned = apply_curves(lq, m.tone(list(priors.vectors), lq), m.config.tone.guard)
        if not (diffusion_only and self.stage == 2 and use_priors):
            out = m.restormer(toned.to(m.dtype), vectors)  # (B, 3, H, W), unclamped
            if w.keep_blown:  # the image terms only: the teacher's priors still read the real target
                gt = blown_target(gt, lq, strength=w.blown_share)
            terms["l1"] = l1_loss(out, gt)
            if w.ssim > 0:
                terms["ssim"] = ssim_loss(out, gt)
            if w.colour > 0:
                terms["colour"] = colour_loss(out, gt)
            if w.cast > 0:
                terms["cast"] = cast_loss(out, gt)
            if w.highlight > 0:
                terms["highlight"] = highlight_loss(out, gt, lq)
            if w.lab > 0:
                terms["lab"] = lab_chroma_loss(out, gt)
            if w.highlight_cast > 0:
                terms["highlight_cast"] = highlight_cast_loss(out, gt, lq)
            if w.tone > 0:
                terms["tone"] = tone_loss(out, gt)
            if w.residual_mean > 0:
                terms["residual_mean"] = residual_mean_loss(out, toned)
            if w.sap > 0:
                terms["sap"] = sap_loss(m.clip, out, gt, token=m.config.pem.token, tokens=w.sap_tokens,
                                        encoder_grad=w.sap_encoder_grad)
        terms["loss"] = sum(getattr(w, k) * v for k, v in terms.items())
        return terms
