"""Temporally stable exposure correction of a frame sequence (a video clip).

Corrected one by one, the frames of a clip flicker: each frame gets its own priors, and a camera's hunting
auto-exposure passes through the correction. :func:`correct_frames` keeps the method per frame but makes
what should not change over time stay put (measurements: benchmarks/RESULTS.md, "Video"):

1. **A cheap first pass over every frame** (CLIP sees a small resize of it): input priors, enhanced by FFEDM
   from **the same noise x_T for every frame** (the same seed), so a static scene gets the same priors.
2. **The enhanced priors are smoothed over time** with a centred box window of ``window`` frames (shorter at
   the ends of the clip), so an exposure error that hunts from frame to frame no longer moves them.
3. **Global brightness is stabilised**: the first pass also restores a thumbnail of every frame (long side
   at most ``THUMBNAIL``) and records its mean brightness; each full frame is then scaled by the ratio of the
   smoothed to the frame's own thumbnail brightness. A real change of lighting survives: the smoothed curve
   follows it within the window.
4. **A second pass restores frame by frame** (tiled as :meth:`RestoreX.restore` tiles), so memory does not
   grow with the clip: only the priors and one brightness value per frame are kept from the first pass.

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
from .images import LUMA
from .priors import Priors

if TYPE_CHECKING:
    from .model import RestoreX

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]  # raises to stop, e.g. comfy.model_management.throw_exception_if_processing_interrupted
THUMBNAIL = 256  # long side of the first pass's brightness thumbnails: ~1/60 of a 1080p frame's pixels
MAX_GAIN = 2.0  # the brightness stabiliser never scales a frame by more than this (or less than its inverse)


def smooth_over_time(x: Tensor, window: int, *, mode: Literal["centred", "ema"] = "centred") -> Tensor:
    """Smooth a (T, ...) series along T.

    Args:
        x: (T, ...) float.
        window: odd number of frames of the centred box (truncated and renormalised at the ends); for
            ``"ema"``, the causal exponential filter with the same mean delay for a step, alpha = 2 / (window + 1).
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
    kernel = torch.ones(1, 1, window, dtype=flat.dtype)
    # Averaging differences from frame 0 keeps a constant series exactly constant (no rounding at the ends).
    sums = F.conv1d(F.pad((flat - base).T[:, None], (r, r)), kernel)[:, 0].T  # (T, F): zeros beyond the ends
    counts = F.conv1d(F.pad(torch.ones(1, 1, flat.shape[0]), (r, r)), kernel)[0, 0]  # (T,)
    return (base + sums / counts[:, None]).reshape(x.shape)


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
                  interrupt: Interrupt | None = None) -> SequencePlan:
    """The first pass: priors of every frame (same FFEDM noise), smoothed; brightness gains. See the module."""
    shape = check_frames(frames)
    if window < 1 or (window % 2 == 0 and smoothing == "centred"):
        raise ValueError(f"window must be an odd number of frames >= 1, got {window}")
    per_frame = []
    for t in range(len(frames)):
        if interrupt is not None:
            interrupt()
        x = _frame(frames, t, shape).to(model.device)
        per_frame.append(model.enhance_priors(model.extract_priors(x, source="input"), steps=steps, seed=seed))
    priors = Priors.cat(per_frame)
    if window == 1:
        return SequencePlan(priors, torch.ones(len(frames)))
    stacked = smooth_over_time(priors.stacked(), window, mode=smoothing)  # (T, N, D)
    priors = Priors(tuple(stacked.unbind(dim=1)), priors.blocks, priors.source, priors.enhanced)
    gains = torch.ones(len(frames))
    if stabilize:
        levels = torch.empty(len(frames))
        for t in range(len(frames)):
            if interrupt is not None:
                interrupt()
            thumb = _thumbnail(_frame(frames, t, shape).to(model.device))
            levels[t] = luma_mean(model.restore(thumb, priors[t])).cpu()
        levels = levels.clamp_min(1e-3)
        gains = (smooth_over_time(levels, window, mode=smoothing) / levels).clamp(1 / MAX_GAIN, MAX_GAIN)
    return SequencePlan(priors, gains)


def iter_corrected(model: RestoreX, frames: Sequence[Tensor], *, window: int = 9, seed: int | None = 0,
                   steps: int | None = None, stabilize: bool = True, smoothing: Literal["centred", "ema"] = "centred",
                   tile: int | None = None, overlap: int = 32,
                   batch: int = 1, progress: Progress | None = None,
                   interrupt: Interrupt | None = None) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(t, corrected)`` for every frame in order, ``corrected`` (1, C, H, W) on the frame's device and dtype.

    Args:
        frames: a (T, C, H, W) tensor, or any sequence of (C, H, W) frames (e.g. one that reads files on
            access: each frame is read twice, once per pass, and never all at once).
        window: odd number of frames the priors and the brightness are smoothed over; 1 = per frame.
        smoothing: "centred" (the default: a box of ``window`` frames around each) or "ema" (causal, for
            comparison; benchmarks/RESULTS.md).
        batch: frames per Restormer pass in the second pass (memory grows with it; 1 keeps ``window=1``
            bit-exact with :meth:`RestoreX.correct`).
        progress: called as (done, T) after every frame of the second pass.
        interrupt: called before every frame of both passes; it stops the run by raising.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 frame, got {batch}")
    plan = plan_sequence(model, frames, window=window, seed=seed, steps=steps, stabilize=stabilize,
                         smoothing=smoothing, interrupt=interrupt)
    shape, total = check_frames(frames), len(frames)
    for start in range(0, total, batch):
        if interrupt is not None:
            interrupt()
        stop = min(start + batch, total)
        chunk = [_frame(frames, t, shape) for t in range(start, stop)]
        x = chunk[0] if len(chunk) == 1 else torch.cat(chunk)  # cat would change a channels-last frame's layout
        out = model.restore(x.to(model.device), plan.priors[start:stop], tile=tile, overlap=overlap)
        for i, t in enumerate(range(start, stop)):
            yield t, apply_gain(out[i : i + 1], float(plan.gains[t])).to(x.device, x.dtype)
        if progress is not None:
            progress(stop, total)
