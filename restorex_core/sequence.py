"""Temporally stable exposure correction of a frame sequence (a video clip).

Corrected one by one, the frames of a clip flicker: each frame gets its own priors, and a camera's hunting
auto-exposure passes through the correction. :func:`correct_frames` keeps the method per frame but makes
what should not change over time stay put (measurements: benchmarks/RESULTS.md, "Video"):

1. **A cheap first pass over every frame** (CLIP sees a small resize of it): input priors, enhanced by FFEDM
   from **the same noise x_T for every frame** (the same seed), so a static scene gets the same priors.
2. **The enhanced priors are smoothed over time** with a centred box window of ``window`` frames (shorter at
   the ends of the clip), so an exposure error that hunts from frame to frame no longer moves them. The
   window is edge-aware: where the input exposure steps by more than ``cut_ev`` EV, the clip is cut and
   no window reaches across the step, so a real change of lighting is followed at once instead of ramped
   over the window.
3. **Global brightness is stabilised**: the first pass also restores a thumbnail of every frame (long side
   at most ``THUMBNAIL``) and records its mean brightness; each full frame is then scaled by the ratio of the
   smoothed to the frame's own thumbnail brightness. A real change of lighting survives: the smoothed curve
   follows it within the window.
4. **Tiled frames share smoothed attention statistics**: a tiled restore takes the attention maps of every
   MDTA block from a guide pass over the whole frame; the first pass runs that guide pass for every frame,
   keeps its maps (a few kB per frame) and smooths them over the same window.
5. **A second pass restores frame by frame** (tiled as :meth:`RestoreX.restore` tiles, with the smoothed
   maps), so memory does not grow with the clip: only priors, maps and one brightness value per frame are
   kept from the first pass.

``window=1`` skips 2 and 3 and gives exactly the per-frame result of :meth:`RestoreX.correct`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ImageInputError
from .images import LUMA, srgb_to_linear
from .priors import Priors

if TYPE_CHECKING:
    from .model import RestoreX

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]  # raises to stop, e.g. comfy.model_management.throw_exception_if_processing_interrupted
THUMBNAIL = 256  # long side of the first pass's brightness thumbnails: ~1/60 of a 1080p frame's pixels
MAX_GAIN = 2.0  # the brightness stabiliser never scales a frame by more than this (or less than its inverse)
# A sustained input exposure step of more than this many EV (half-window means, exposure_ev) is a real change
# of lighting, not averaged across. Measured on benchmarks/bench_video.py's clips (window 9): hunting of
# +-0.35 EV while the pan crosses the scene reaches at most 0.77, a camera drifting +1.5 EV over 24 frames
# 1.25, the +1.5 EV change of light (with hunting) 2.11.
CUT_EV = 1.5


def smooth_over_time(x: Tensor, window: int, *, mode: Literal["centred", "ema"] = "centred",
                     guide: Tensor | None = None, cut: float = 1.5) -> Tensor:
    """Smooth a (T, ...) series along T.

    Args:
        x: (T, ...) float.
        window: odd number of frames of the centred box (truncated and renormalised at the ends); for
            ``"ema"``, the causal exponential filter with the same mean delay for a step, alpha = 2 / (window + 1).
        guide: (T,) exposure of each input frame in EV (centred mode): where it steps by more than ``cut`` EV
            (a real change of lighting, :func:`lighting_steps`), no window reaches across the step; hunting of
            a fraction of ``cut`` is still averaged over the whole window.
    Returns:
        (T, ...) float32; ``window=1`` returns ``x`` unchanged.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    if window == 1:
        return x
    flat = x.float().reshape(x.shape[0], -1)  # (T, F)
    if mode == "ema":
        alpha, out, state = 2.0 / (window + 1), torch.empty_like(flat), flat[0]
        for t in range(flat.shape[0]):
            state = torch.lerp(state, flat[t], alpha)
            out[t] = state
        return out.reshape(x.shape)
    if mode != "centred":
        raise ValueError(f"mode must be 'centred' or 'ema', not {mode!r}")
    if window % 2 == 0:
        raise ValueError(f"a centred window needs an odd number of frames, got {window}; use {window + 1}")
    r, base = window // 2, flat[:1]
    if guide is not None:
        return (base + _edge_aware_mean(flat - base, r, guide.float().cpu(), cut)).reshape(x.shape)
    kernel = torch.ones(1, 1, window, dtype=flat.dtype)
    # Averaging differences from frame 0 keeps a constant series exactly constant (no rounding at the ends).
    sums = F.conv1d(F.pad((flat - base).T[:, None], (r, r)), kernel)[:, 0].T  # (T, F): zeros beyond the ends
    counts = F.conv1d(F.pad(torch.ones(1, 1, flat.shape[0]), (r, r)), kernel)[0, 0]  # (T,)
    return (base + sums / counts[:, None]).reshape(x.shape)


def lighting_steps(guide: Tensor, r: int, cut: float) -> Tensor:
    """(T,) guide -> (T,) bool, True at frame k when a change of lighting falls between frames k-1 and k: the
    means of the ``r`` frames before and the ``r`` frames from k on differ by more than ``cut``, and by more
    there than at the neighbouring boundaries (one boundary per step). Hunting of a fraction of ``cut``
    averages out within each side."""
    t_count, r = guide.shape[0], max(r, 1)
    sums = F.pad(guide.double().cumsum(0), (1, 0))  # sums[i] = guide[:i].sum()
    k = torch.arange(1, t_count)
    lo, hi = (k - r).clamp_min(0), (k + r).clamp_max(t_count)
    jump = ((sums[hi] - sums[k]) / (hi - k) - (sums[k] - sums[lo]) / (k - lo)).abs()  # (T-1,) at boundaries 1..T-1
    padded = F.pad(jump, (1, 1))
    peak = (jump >= padded[:-2]) & (jump >= padded[2:])
    return F.pad((jump > cut) & peak, (1, 0))  # frame 0 starts no step


def _edge_aware_mean(flat: Tensor, r: int, guide: Tensor, cut: float) -> Tensor:
    """(T, F) -> (T, F): per frame, the mean over the centred window t-r..t+r cut at the ends of the clip and
    at every change of lighting (:func:`lighting_steps`): a frame averages only frames of its own lighting."""
    t_count = flat.shape[0]
    segment = lighting_steps(guide, r, cut).cumsum(0)  # (T,) which stretch of constant lighting
    at = torch.arange(t_count)[:, None] + torch.arange(-r, r + 1)[None]  # (T, window) frame indices
    inside = (at >= 0) & (at < t_count)
    at = at.clamp(0, t_count - 1)
    weights = (inside & (segment[at] == segment[:, None])).float()  # (T, window)
    return (weights[..., None] * flat.cpu()[at]).sum(dim=1).to(flat.device) / weights.sum(dim=1, keepdim=True)


def exposure_ev(images: Tensor) -> Tensor:
    """(B, C, H, W) sRGB-encoded in [0, 1] -> (B,) log2 of the mean luminance in linear light: the frame's
    exposure in EV up to a constant (where nothing clips), for :func:`smooth_over_time`'s guide.  Measured in
    linear light, not as 2.2 x log2 of the encoded mean: sRGB's linear toe made that overstate the changes
    of dark, noisy frames up to 2.2x (a slow +1.5 EV drift of the camera's exposure read as a change of light)."""
    return torch.log2(luma_mean(srgb_to_linear(images.float())).clamp_min(1e-6))


def luma_mean(images: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B,) mean Rec. 601 luma (gray: the channel itself; alpha ignored)."""
    if images.shape[1] == 1:
        return images.float().mean(dim=(1, 2, 3))
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    return (images[:, :3].float() * weights).sum(dim=1).mean(dim=(1, 2))


def apply_gain(images: Tensor, gain: float) -> Tensor:
    """Scale the colour channels of (B, C, H, W) by ``gain``, clamped to [0, 1]; alpha is kept."""
    if gain == 1.0:
        return images
    out = images.clone()
    colour = slice(0, 3) if images.shape[1] == 4 else slice(None)
    out[:, colour] = (images[:, colour].float() * gain).clamp(0.0, 1.0).to(images.dtype)
    return out


def _thumbnail(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    scale = THUMBNAIL / max(h, w)
    if scale >= 1.0:
        return x
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    return F.interpolate(x.float(), size=size, mode="bilinear", antialias=True).clamp(0.0, 1.0).to(x.dtype)


@dataclass(frozen=True)
class SequencePlan:
    """What the first pass keeps: per-frame priors to inject and brightness gains (all small)."""

    priors: Priors  # T sets, smoothed over time
    gains: Tensor  # (T,) float32, 1 where nothing is stabilised
    attention: list[Tensor] | None = None  # tiled frames: per MDTA block (T, heads, C/h, C/h), smoothed


def check_frames(frames: Sequence[Tensor]) -> tuple[int, int, int]:
    """Validate a clip's layout cheaply; return (C, H, W). Values are checked frame by frame as they run."""
    if isinstance(frames, Tensor) and frames.ndim != 4:
        raise ImageInputError(f"frames must be (T, C, H, W), got shape {tuple(frames.shape)}; a single image "
                              "is (1, C, H, W), and a batch of clips must be corrected clip by clip")
    if len(frames) == 0:
        raise ImageInputError("the clip has no frames (T = 0)")
    first = frames[0]
    if first.ndim != 3:
        raise ImageInputError(f"every frame must be (C, H, W), got shape {tuple(first.shape)}")
    return tuple(first.shape)  # type: ignore[return-value]


def _frame(frames: Sequence[Tensor], t: int, shape: tuple[int, int, int]) -> Tensor:
    x = frames[t]
    if tuple(x.shape) != shape:
        raise ImageInputError(f"frame {t} is {tuple(x.shape)} but frame 0 is {shape}; every frame of a clip must "
                              "have the same channels and size (resize or crop them first)")
    return x[None]  # (1, C, H, W)


def plan_sequence(model: RestoreX, frames: Sequence[Tensor], *, window: int, seed: int | None = 0,
                  steps: int | None = None, stabilize: bool = True, smoothing: Literal["centred", "ema"] = "centred",
                  cut_ev: float | None = CUT_EV, tile: int | None = None, interrupt: Interrupt | None = None,
                  ) -> SequencePlan:
    """The first pass: priors of every frame (same FFEDM noise), smoothed; brightness gains; for frames that
    ``tile`` splits, the attention maps of each frame's guide pass, smoothed the same way. See the module."""
    shape = check_frames(frames)
    if window < 1 or (window % 2 == 0 and smoothing == "centred"):
        raise ValueError(f"window must be an odd number of frames >= 1, got {window}")
    per_frame, exposure = [], torch.empty(len(frames))
    for t in range(len(frames)):
        if interrupt is not None:
            interrupt()
        x = _frame(frames, t, shape).to(model.device)
        per_frame.append(model.enhance_priors(model.extract_priors(x, source="input"), steps=steps, seed=seed))
        exposure[t] = exposure_ev(_thumbnail(x)).cpu()
    priors = Priors.cat(per_frame)
    if window == 1:
        return SequencePlan(priors, torch.ones(len(frames)))
    guide = exposure if (cut_ev and smoothing == "centred") else None
    kw = {"mode": smoothing, "guide": guide, "cut": cut_ev or 1.0}
    stacked = smooth_over_time(priors.stacked(), window, **kw)  # (T, N, D)
    priors = Priors(tuple(stacked.unbind(dim=1)), priors.blocks, priors.source, priors.enhanced)
    gains, attention = torch.ones(len(frames)), None
    tiled = tile is not None and max(shape[1:]) > tile  # as RestoreX.restore decides (tile already resolved)
    if stabilize or tiled:
        levels, maps = torch.empty(len(frames)), []
        for t in range(len(frames)):
            if interrupt is not None:
                interrupt()
            x = _frame(frames, t, shape).to(model.device)
            if stabilize:
                levels[t] = luma_mean(model.restore(_thumbnail(x), priors[t])).cpu()
            if tiled:  # the guide pass the second pass would run, done once here and kept (a few kB)
                maps.append([a.cpu() for a in model.attention_maps(x, priors[t], interrupt=interrupt)])
        if stabilize:
            levels = levels.clamp_min(1e-3)
            gains = (smooth_over_time(levels, window, **kw) / levels).clamp(1 / MAX_GAIN, MAX_GAIN)
        if tiled:
            attention = [smooth_over_time(torch.cat(block), window, **kw) for block in zip(*maps, strict=True)]
    return SequencePlan(priors, gains, attention)


def iter_corrected(model: RestoreX, frames: Sequence[Tensor], *, window: int = 9, seed: int | None = 0,
                   steps: int | None = None, stabilize: bool = True, smoothing: Literal["centred", "ema"] = "centred",
                   cut_ev: float | None = CUT_EV, tile: int | Literal["auto"] | None = None, overlap: int = 32,
                   batch: int = 1, progress: Progress | None = None,
                   interrupt: Interrupt | None = None) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(t, corrected)`` for every frame in order, ``corrected`` (1, C, H, W) on the frame's device and dtype.

    Args:
        frames: a (T, C, H, W) tensor, or any sequence of (C, H, W) frames (e.g. one that reads files on
            access: each frame is read twice, once per pass, and never all at once).
        window: odd number of frames the priors and the brightness are smoothed over; 1 = per frame.
        smoothing: "centred" (the default: a box of ``window`` frames around each) or "ema" (causal, for
            comparison; benchmarks/RESULTS.md).
        cut_ev: a sustained change of input exposure of more than this many EV is a change of lighting,
            not hunting: the centred window does not average across it (``None``: a plain box).
        tile: as :meth:`RestoreX.restore`'s; "auto" is planned once for the clip's frame size. Tiled frames
            share their smoothed guide attention maps (module docstring, 4).
        batch: frames per Restormer pass in the second pass (memory grows with it; 1 keeps ``window=1``
            bit-exact with :meth:`RestoreX.correct`).
        progress: called as (done, T) after every frame of the second pass.
        interrupt: called before every frame of both passes; it stops the run by raising.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 frame, got {batch}")
    shape = check_frames(frames)
    if tile == "auto":  # one plan for the whole clip (every frame has the frame's size), as restore would make it
        tile = model.tile_plan(batch, shape[1], shape[2]).tile
    plan = plan_sequence(model, frames, window=window, seed=seed, steps=steps, stabilize=stabilize,
                         smoothing=smoothing, cut_ev=cut_ev, tile=tile, interrupt=interrupt)
    total = len(frames)
    for start in range(0, total, batch):
        if interrupt is not None:
            interrupt()
        stop = min(start + batch, total)
        chunk = [_frame(frames, t, shape) for t in range(start, stop)]
        x = chunk[0] if len(chunk) == 1 else torch.cat(chunk)  # cat would change a channels-last frame's layout
        maps = None if plan.attention is None else [a[start:stop].to(model.device) for a in plan.attention]
        out = model.restore(x.to(model.device), plan.priors[start:stop], tile=tile, overlap=overlap, attention=maps)
        for i, t in enumerate(range(start, stop)):
            yield t, apply_gain(out[i : i + 1], float(plan.gains[t])).to(x.device, x.dtype)
        if progress is not None:
            progress(stop, total)
