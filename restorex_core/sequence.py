"""Temporally stable exposure correction of a frame sequence (a video clip).

Corrected one by one, the frames of a clip flicker: each frame gets its own priors, and a camera's hunting
auto-exposure passes through the correction. :func:`iter_corrected` keeps the method per frame but makes
what should not change over time stay put (measurements: benchmarks/RESULTS.md, "Video"):

1. **A cheap first pass over every frame** (CLIP sees a small resize of it): input priors, enhanced by FFEDM
   from **the same noise x_T for every frame** (the same seed), so a static scene gets the same priors.
2. **The enhanced priors are smoothed over time** with a centred box window of ``window`` frames (shorter at
   the ends of the clip), so an exposure error that hunts from frame to frame no longer moves them. The
   window is edge-aware: where the input exposure steps by more than ``cut_ev`` EV, the clip is cut and
   no window reaches across the step, so a real change of lighting is followed at once instead of ramped
   over the window. A cut in the edit (consecutive frames that do not match, :data:`SHOT_AGREEMENT`) breaks
   the window the same way.
3. **The brightness at the same scene points is held**: consecutive input thumbnails (long side at most
   ``THUMBNAIL``) are registered (:func:`register`, phase correlation), the first pass restores each
   thumbnail with its smoothed priors (and a tiled frame's smoothed attention maps, 4: what the second pass
   will use), and :func:`exposure_change` measures how much brighter each output is
   than the one before *at the same scene points*. Summed, that is the output's own exposure over time,
   blind to what the pan brings into view; a correction without flicker keeps it flat. It is averaged over
   the whole shot (each stretch between breaks of the window) or over ``hold`` frames, and each full frame is
   exposed, in linear light, by the difference. So brightness changes that come with the content (a pan
   from sky to shadow) are kept, as in the ground truth, while the model's drift with the content, a hunting
   camera and a slowly adapting one are not. With a finite ``hold``, changes slower than that come back as
   the per-frame model sees them.
4. **Tiled frames share smoothed attention statistics**: a tiled restore takes the attention maps of every
   MDTA block from a guide pass over the whole frame; the first pass runs that guide pass for every frame,
   keeps its maps (a few kB per frame) and smooths them over the same window.
5. **A second pass restores frame by frame** (tiled as :meth:`RestoreX.restore` tiles, with the smoothed
   maps), so memory does not grow with the clip: only priors, maps and one gain per frame are kept from the
   first pass.

``window=1`` skips 2 and 3 and gives exactly the per-frame result of :meth:`RestoreX.correct`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .arch.gate import held_back
from .blending import blend
from .errors import ImageInputError
from .images import LUMA, linear_to_srgb, srgb_to_linear
from .priors import Priors
from .tiling import check_tiling

if TYPE_CHECKING:
    from .model import RestoreX

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]  # raises to stop, e.g. comfy.model_management.throw_exception_if_processing_interrupted
THUMBNAIL = 256  # long side of the first pass's brightness thumbnails: ~1/60 of a 1080p frame's pixels
MAX_GAIN = 4.0  # the brightness hold never exposes a frame by more than 2 EV either way (linear light)
# A sustained input exposure step of more than this many EV (half-window means, exposure_ev) is a real change
# of lighting, not averaged across. Measured on benchmarks/bench_video.py's clips (window 9): hunting of
# +-0.35 EV while the pan crosses the scene reaches at most 0.77, a camera drifting +1.5 EV over 24 frames
# 1.25, the +1.5 EV change of light (with hunting) 2.11.
CUT_EV = 1.5
# Frames over which the brightness at the same scene points is held by default: 0 = the whole shot (each stretch
# between cuts and changes of light), as a colourist grades a shot. On bench_video's 96-frame clips it beat a
# 2 s (49-frame) hold on flicker (3.89 against 13.59 /255) and on PSNR (19.80 against 19.61 dB); a finite hold
# lets a slow change (a gradual change of light the cut does not catch) come back after that many frames.
HOLD = 0


def smooth_over_time(x: Tensor, window: int, *, mode: Literal["centred", "ema"] = "centred",
                     breaks: Tensor | None = None) -> Tensor:
    """Smooth a (T, ...) series along T.

    Args:
        x: (T, ...) float.
        window: odd number of frames of the centred box (truncated and renormalised at the ends); for
            ``"ema"``, the causal exponential filter with the same mean delay for a step, alpha = 2 / (window + 1).
        breaks: (T,) bool, True at each frame that starts a new stretch (a change of lighting,
            :func:`lighting_steps`, or a cut in the edit): no window reaches across a break, and the exponential
            filter starts afresh there.
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
            state = flat[t] if (breaks is not None and bool(breaks[t])) else torch.lerp(state, flat[t], alpha)
            out[t] = state
        return out.reshape(x.shape)
    if mode != "centred":
        raise ValueError(f"mode must be 'centred' or 'ema', not {mode!r}")
    if window % 2 == 0:
        raise ValueError(f"a centred window needs an odd number of frames, got {window}; use {window + 1}")
    r, base = window // 2, flat[:1]
    if breaks is not None and bool(breaks.any()):
        return (base + _segmented_mean(flat - base, r, breaks.cpu())).reshape(x.shape)
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


def _segmented_mean(flat: Tensor, r: int, breaks: Tensor) -> Tensor:
    """(T, F) -> (T, F): per frame, the mean over the centred window t-r..t+r cut at the ends of the clip and
    at every break: a frame averages only frames of its own stretch. Prefix sums: O(T x F) for any window."""
    index = torch.arange(flat.shape[0])
    segment = breaks.long().cumsum(0)  # (T,) non-decreasing: which stretch
    starts = torch.searchsorted(segment, segment)  # the stretch's first frame
    ends = torch.searchsorted(segment, segment, right=True)  # one past its last frame
    lo, hi = torch.maximum(index - r, starts), torch.minimum(index + r + 1, ends)
    sums = F.pad(flat.double().cpu().cumsum(0), (0, 0, 1, 0))  # sums[i] = flat[:i].sum(0)
    return ((sums[hi] - sums[lo]) / (hi - lo)[:, None]).to(flat.dtype).to(flat.device)


def luminance(images: Tensor) -> Tensor:
    """(B, C, H, W) sRGB-encoded in [0, 1] -> (B, H, W) luminance in linear light (gray: the channel)."""
    lin = srgb_to_linear(images.float())
    if images.shape[1] == 1:
        return lin[:, 0]
    return (lin[:, :3] * torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)).sum(dim=1)


def register(a: Tensor, b: Tensor) -> tuple[float, float]:
    """The translation (dy, dx), to a fraction of a pixel, that takes (H, W) image ``a`` onto ``b``:
    b(y + dy, x + dx) ~ a(y, x). Phase correlation (windowed, so the frame edges do not vote) with a parabola
    through the peak; blind to exposure, since the spectrum is whitened."""
    h, w = a.shape
    taper = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None]
    spec_a = torch.fft.rfft2((a - a.mean()).float().cpu() * taper)
    spec_b = torch.fft.rfft2((b - b.mean()).float().cpu() * taper)
    cross = spec_b * spec_a.conj()
    surface = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-12), s=(h, w))
    py, px = divmod(int(surface.argmax()), w)

    def vertex(before: Tensor, peak: Tensor, after: Tensor) -> float:
        curve = float(before - 2 * peak + after)
        return 0.5 * float(before - after) / curve if curve < 0 else 0.0

    dy = py + vertex(surface[(py - 1) % h, px], surface[py, px], surface[(py + 1) % h, px])
    dx = px + vertex(surface[py, (px - 1) % w], surface[py, px], surface[py, (px + 1) % w])
    return (dy - h if dy > h / 2 else dy), (dx - w if dx > w / 2 else dx)


# Linear-light luminance compared at the same scene points: below LOW it is noise, above HIGH it may clip.
LOW, HIGH = 1e-3, 0.8
# Consecutive frames of one shot agree on their exposure change at most points: on benchmarks/bench_video.py's
# noisy -2 EV clips at least 63 % of the points fall within 0.25 EV of the median change; two unrelated
# frames 9-17 %. Below this share the frames are a cut in the edit, and no smoothing reaches across it.
SHOT_AGREEMENT = 0.35


def exposure_change(a: Tensor, b: Tensor, shift: tuple[float, float]) -> tuple[float, float]:
    """Linear-light luminance maps (H, W) of two frames and :func:`register`'s shift between them ->
    (change, agreement): the median log2 ratio b/a at the same scene points (EV) and the share of those
    points within 0.25 EV of it. Points that are noise or may clip in either frame do not vote; where too
    few are left the change is 0 and the agreement NaN (unknown)."""
    if torch.equal(a, b):
        return 0.0, 1.0
    h, w = a.shape
    dy, dx = shift
    ys = torch.arange(h, dtype=torch.float32) + dy
    xs = torch.arange(w, dtype=torch.float32) + dx
    grid = torch.stack(torch.meshgrid(xs * 2 / max(w - 1, 1) - 1, ys * 2 / max(h - 1, 1) - 1, indexing="xy"), -1)
    moved = F.grid_sample(b.float().cpu()[None, None], grid[None], mode="bilinear", align_corners=True)[0, 0]
    my, mx = math.ceil(abs(dy)) + 1, math.ceil(abs(dx)) + 1  # rows and columns that slid in from outside
    pair = torch.stack([a.float().cpu(), moved])[:, my : h - my, mx : w - mx]
    if min(pair.shape[1:]) >= 8:
        pair = F.avg_pool2d(pair, 2)  # less noise per point
    ok = ((pair > LOW) & (pair < HIGH)).all(dim=0)
    if int(ok.sum()) < 16:
        return 0.0, math.nan
    ratio = torch.log2(pair[1][ok]) - torch.log2(pair[0][ok])
    change = ratio.median()
    return float(change), float(((ratio - change).abs() < 0.25).float().mean())


def exposure_ev(images: Tensor) -> Tensor:
    """(B, C, H, W) sRGB-encoded in [0, 1] -> (B,) log2 of the mean luminance in linear light: the frame's
    exposure in EV up to a constant (where nothing clips), :func:`lighting_steps`' guide. Measured in linear
    light, not as 2.2 x log2 of the encoded mean: sRGB's linear toe made that overstate the changes of dark,
    noisy frames up to 2.2x (a slow +1.5 EV drift of the camera's exposure read as a change of light)."""
    return _ev(luminance(images))


def _ev(lum: Tensor) -> Tensor:
    """(B, H, W) linear-light luminance -> (B,) log2 of its mean (:func:`exposure_ev`)."""
    return torch.log2(lum.mean(dim=(1, 2)).clamp_min(1e-6))


def apply_gain(images: Tensor, gain: float) -> Tensor:
    """Expose the colour channels of sRGB-encoded (B, C, H, W) by ``gain`` in linear light (what a change of
    the camera's exposure does), clamped to [0, 1]; alpha is kept."""
    if gain == 1.0:
        return images
    out = images.clone()
    colour = slice(0, 3) if images.shape[1] == 4 else slice(None)
    out[:, colour] = linear_to_srgb(srgb_to_linear(images[:, colour].float()) * gain).to(images.dtype)
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
    gains: Tensor  # (T,) float32 linear-light exposure factors, 1 where nothing is held
    attention: list[Tensor] | None = None  # tiled frames: per MDTA block (T, heads, C/h, C/h), smoothed
    breaks: Tensor | None = None  # (T,) bool: frames that start a new lighting or shot (no smoothing across)
    curves: Tensor | None = None  # models with a tone path: (T, 3, K + 1) per-frame curves, smoothed like the priors
    strengths: Tensor | None = None  # models with a correction gate: (T,) per-frame strengths, smoothed likewise
    output_curves: Tensor | None = None  # models with an output curve: (T, 3 S + 1) per-frame, smoothed likewise


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


def plan_sequence(model: RestoreX, frames: Sequence[Tensor], *, window: int, hold: int = HOLD, seed: int | None = 0,
                  steps: int | None = None, smoothing: Literal["centred", "ema"] = "centred",
                  cut_ev: float | None = CUT_EV, tile: int | None = None, interrupt: Interrupt | None = None,
                  ) -> SequencePlan:
    """The first pass: priors of every frame (same FFEDM noise), smoothed over ``window``; the exposure gains
    that hold the brightness at the same scene points over ``hold`` frames; for frames that ``tile`` splits,
    the attention maps of each frame's guide pass, smoothed over ``window``. See the module."""
    shape = check_frames(frames)
    if window < 1 or (window % 2 == 0 and smoothing == "centred"):
        raise ValueError(f"window must be an odd number of frames >= 1, got {window}")
    if hold < 0 or (hold % 2 == 0 and hold != 0 and smoothing == "centred"):
        raise ValueError(f"hold must be 0 (the whole shot) or an odd number of frames >= 1, got {hold}")
    t_count = len(frames)
    per_frame, per_curves, per_strength, per_finish, exposure = [], [], [], [], torch.empty(t_count)
    shifts, shot_cuts = [(0.0, 0.0)] * t_count, torch.zeros(t_count, dtype=torch.bool)
    previous = None
    for t in range(t_count):
        if interrupt is not None:
            interrupt()
        x = _frame(frames, t, shape).to(model.device)
        raw = model.extract_priors(x, source="input")
        if model.tone is not None:
            per_curves.append(model.tone_curves(x, raw).cpu())
        strength, output_curve = model.gate_reads(x, raw)  # one reading of the gate's features for both
        if strength is not None:
            per_strength.append(strength.cpu())
        if output_curve is not None:
            per_finish.append(output_curve.cpu())
        per_frame.append(model.enhance_priors(raw, steps=steps, seed=seed))
        if window == 1:
            continue
        lum = luminance(_thumbnail(x)).cpu()  # (1, h, w), linear light
        exposure[t] = _ev(lum)[0]
        lum, encoded = lum[0], linear_to_srgb(lum[0])  # registered on the encoded values
        if previous is not None:  # where the scene moved to, and whether it is still the same shot
            shifts[t] = register(previous[1], encoded)
            shot_cuts[t] = exposure_change(previous[0], lum, shifts[t])[1] < SHOT_AGREEMENT
        previous = lum, encoded
    priors = Priors.cat(per_frame)
    curves = torch.cat(per_curves) if per_curves else None
    strengths = torch.cat(per_strength) if per_strength else None
    finish = torch.cat(per_finish) if per_finish else None
    if window == 1:
        return SequencePlan(priors, torch.ones(t_count), curves=curves, strengths=strengths, output_curves=finish)
    lighting = lighting_steps(exposure, window // 2, cut_ev) if (cut_ev and smoothing == "centred") else None
    breaks = shot_cuts if lighting is None else shot_cuts | lighting
    stacked = smooth_over_time(priors.stacked(), window, mode=smoothing, breaks=breaks)  # (T, N, D)
    priors = Priors(tuple(stacked.unbind(dim=1)), priors.blocks, priors.source, priors.enhanced)
    if curves is not None:  # averages of rising curves from 0 rise from 0: still curves the tone path could give
        curves = smooth_over_time(curves, window, mode=smoothing, breaks=breaks)
    if strengths is not None:  # one frame left alone and the next corrected would flicker
        strengths = smooth_over_time(strengths, window, mode=smoothing, breaks=breaks)
    if finish is not None:  # the curve's parameters, averaged: a curve between its neighbours'
        finish = smooth_over_time(finish, window, mode=smoothing, breaks=breaks)
    own_curves = (lambda t: None) if curves is None else (lambda t: curves[t : t + 1].to(model.device))
    own_finish = (lambda t: None) if finish is None else (lambda t: finish[t : t + 1].to(model.device))
    gains, attention = torch.ones(t_count), None
    if tile is not None and max(shape[1:]) > tile:  # tiled, as RestoreX.restore decides (tile already resolved)
        maps = []
        for t in range(t_count):  # the guide pass the second pass would run, done once here and kept (a few kB)
            if interrupt is not None:
                interrupt()
            x = _frame(frames, t, shape).to(model.device)
            maps.append([a.cpu() for a in model.attention_maps(x, priors[t], interrupt=interrupt,
                                                               curves=own_curves(t))])
        attention = [smooth_over_time(torch.cat(block), window, mode=smoothing, breaks=breaks)
                     for block in zip(*maps, strict=True)]
    if hold != 1:
        level, previous = torch.zeros(t_count, dtype=torch.float64), None
        for t in range(t_count):  # how much brighter each output is than the last at the same scene points
            if interrupt is not None:
                interrupt()
            x = _frame(frames, t, shape).to(model.device)
            own = None if attention is None else [a[t : t + 1].to(model.device) for a in attention]
            lum = luminance(model.restore(_thumbnail(x), priors[t], attention=own, curves=own_curves(t),
                                          output_curve=own_finish(t)))[0].detach().cpu()
            if previous is not None:
                step = 0.0 if shot_cuts[t] else exposure_change(previous, lum, shifts[t])[0]
                level[t] = level[t - 1] + step
            previous = lum
        held = smooth_over_time(level, hold or 2 * t_count + 1, mode=smoothing, breaks=breaks)
        gains = torch.exp2(held - level).float().clamp(1 / MAX_GAIN, MAX_GAIN)
    return SequencePlan(priors, gains, attention, breaks, curves, strengths, finish)


def iter_corrected(model: RestoreX, frames: Sequence[Tensor], *, window: int = 9, hold: int = HOLD,
                   seed: int | None = 0, steps: int | None = None, smoothing: Literal["centred", "ema"] = "centred",
                   cut_ev: float | None = CUT_EV, tile: int | Literal["auto"] | None = None, overlap: int = 32,
                   batch: int = 1, max_memory: int | None = None, auto_strength: bool = True,
                   progress: Progress | None = None, interrupt: Interrupt | None = None
                   ) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(t, corrected)`` for every frame in order, ``corrected`` (1, C, H, W) on the frame's device and dtype.

    Args:
        frames: a (T, C, H, W) tensor, or any sequence of (C, H, W) frames (e.g. one that reads files on
            access: each frame is read once per pass, two to four times, and never all at once).
        window: odd number of frames the priors (and a tiled frame's attention maps) are smoothed over;
            1 = per frame, exactly :meth:`RestoreX.correct` (``hold`` is then ignored).
        hold: over how many frames (odd) the brightness at the same scene points is held (the module, 3);
            0 (the default) = the whole shot, each stretch between cuts and changes of light; 1 = not held.
        smoothing: "centred" (the default: a box of ``window`` frames around each) or "ema" (causal, for
            comparison; benchmarks/RESULTS.md).
        cut_ev: a sustained change of input exposure of more than this many EV is a change of lighting,
            not hunting: the centred window does not average across it (``None``: a plain box).
        tile: as :meth:`RestoreX.restore`'s; "auto" is planned once for the clip's frame size (and, as in
            restore, halved for a frame that runs out of memory). Tiled frames share their smoothed guide
            attention maps (module docstring, 4).
        max_memory: the budget of ``tile="auto"`` in bytes (default: RestoreX.restore's).
        batch: frames per Restormer pass in the second pass (memory grows with it; 1 keeps ``window=1``
            bit-exact with :meth:`RestoreX.correct`).
        auto_strength: for weights with a correction gate, each frame keeps the share of its correction the
            gate gives it (smoothed over ``window`` like the priors), as :meth:`RestoreX.correct` does; False:
            every frame fully corrected.
        progress: called as (done, T) after every frame of the second pass.
        interrupt: called before every frame of both passes; it stops the run by raising.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 frame, got {batch}")
    check_tiling(tile, overlap, multiple_of=model.restormer.multiple_of)  # before the first pass's work
    shape = check_frames(frames)
    # "auto": one plan for the whole clip (every frame has the frame's size), as restore makes it; the second pass
    # still hands "auto" to restore, which makes the same plan and halves the tile if a frame runs out of memory.
    planned = model.tile_plan(1, shape[1], shape[2], max_memory=max_memory).tile if tile == "auto" else tile
    plan = plan_sequence(model, frames, window=window, hold=hold, seed=seed, steps=steps,
                         smoothing=smoothing, cut_ev=cut_ev, tile=planned, interrupt=interrupt)
    total = len(frames)
    for start in range(0, total, batch):
        if interrupt is not None:
            interrupt()
        stop = min(start + batch, total)
        chunk = [_frame(frames, t, shape) for t in range(start, stop)]
        x = chunk[0] if len(chunk) == 1 else torch.cat(chunk)  # cat would change a channels-last frame's layout
        maps = None if plan.attention is None else [a[start:stop].to(model.device) for a in plan.attention]
        curves = None if plan.curves is None else plan.curves[start:stop].to(model.device)
        finish = None if plan.output_curves is None else plan.output_curves[start:stop].to(model.device)
        out = model.restore(x.to(model.device), plan.priors[start:stop], tile=tile, overlap=overlap, attention=maps,
                            max_memory=max_memory, curves=curves, output_curve=finish)
        for i, t in enumerate(range(start, stop)):
            corrected = apply_gain(out[i : i + 1], float(plan.gains[t]))
            if auto_strength and plan.strengths is not None:
                own = x[i : i + 1].to(corrected.device)
                kept = held_back(plan.strengths[t : t + 1], own, corrected,
                                 brightening_only=model.config.gate.brightening_only)
                corrected = blend(own, corrected, kept.view(1, 1, 1, 1).to(corrected.device))
            yield t, corrected.to(x.device, x.dtype)
        if progress is not None:
            progress(stop, total)


def correct_sequence(
    model: RestoreX,
    frames: Tensor,
    *,
    window: int = 9,
    hold: int = HOLD,
    seed: int | None = 0,
    steps: int | None = None,
    cut_ev: float | None = CUT_EV,
    tile: int | Literal["auto"] | None = None,
    overlap: int = 32,
    batch: int = 1,
    auto_strength: bool = True,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
) -> Tensor:
    """Correct a clip without flicker: the same FFEDM noise for every frame, priors smoothed over a centred
    window of ``window`` (odd) frames, the brightness at the same scene points held over the whole shot
    (``hold=0``) or ``hold`` (odd) frames, then frame-by-frame restoration in bounded memory. ``window=1``
    equals ``model.correct`` per frame bit for bit. The steps are in this module's docstring; to write
    frames as they come instead of holding the whole result, use :func:`iter_corrected`.

    Args:
        model: a loaded :class:`RestoreX`.
        frames: (T, C, H, W) float in [0, 1]; the result has the same shape, dtype and device.
        cut_ev: a sustained input exposure step of more than this many EV is a change of lighting, not
            averaged across (None: a plain box window).
        auto_strength: as in :func:`iter_corrected`.
        progress: called as (done, T) per frame. interrupt: called between frames; raises to stop.
    """
    out = torch.empty_like(frames)
    for t, frame in iter_corrected(model, frames, window=window, hold=hold, seed=seed, steps=steps, cut_ev=cut_ev,
                                   tile=tile, overlap=overlap, batch=batch, auto_strength=auto_strength,
                                   progress=progress, interrupt=interrupt):
        out[t] = frame[0]
    return out
