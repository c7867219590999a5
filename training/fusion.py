"""Exposure fusion: one target per bracketed stack that keeps what every frame has.

A single "best" frame (the stacks GT rule) has its own blown highlights and crushed shadows, and a model
trained toward it learns to destroy what the input still holds.  Expert-retouched references of real stacks
sit much closer to an exposure fusion of the whole stack, so the default recipe trains every frame of a
training scene toward the scene's fused image.

:func:`mertens_fuse` is exposure fusion as Mertens, Kautz and Van Reeth describe it (Pacific Graphics 2007),
written here from the paper: every frame gets a per-pixel weight

    W = C ** wc * S ** ws * E ** we

from its *contrast* ``C`` (absolute Laplacian of the grey image), *saturation* ``S`` (standard deviation of
R, G, B) and *well-exposedness* ``E`` (a Gaussian of each channel around 0.5, sigma 0.2, multiplied over the
channels); the weights are normalised over the frames, and the frames are blended in a Laplacian pyramid
with a Gaussian pyramid of the weights, which keeps the blend free of seams and halos.

The pyramid goes all the way down, to a top level of 1-2 pixels (``floor(log2(short side)) + 1`` levels, as in
the paper and OpenCV's ``MergeMertens``), with mirrored (reflect-101) borders and the classic expand
(zero-insert, blur, x4).  Depth is not a detail: every level the pyramid stops short of is blended per pixel by
the well-exposedness weights, which pull each region toward mid-grey and flatten the picture.  Stopped at an
8-pixel top level (the first version here), the fusions of the real stacks had 0.72x the luma contrast of
OpenCV's and scored 14.2 dB against the stacks' rule frames where OpenCV scores 18.4; this version scores 18.6
and lies 31.4 dB from OpenCV's output (24 random scenes of ``../shared/data/stacks``; docs/weights_history.md).

:func:`fused_target` caches the result beside the data (``<stacks>/../stacks_fused/`` by default, 16-bit PNG,
in a subfolder named after :data:`FUSION_VERSION` so that targets made by an older version are never read
back), never in the repository, and :func:`blend_with_rule` mixes it with the rule frame (``alpha = 1`` is the
fusion alone).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import LAPLACE

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Mirror (reflect-101, OpenCV's default border) where the side is long enough, else repeat the edge."""
    return F.pad(x, pad, mode="reflect" if min(x.shape[-2:]) > 2 else "replicate")


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial blur of (N, C, H, W), mirrored borders."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.conv2d(_pad(x, (2, 2, 0, 0)), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(_pad(x, (0, 0, 2, 2)), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _down(x: Tensor) -> Tensor:
    """One Gaussian-pyramid step: blur, keep the even rows and columns ((H + 1) // 2, (W + 1) // 2)."""
    return _blur(x)[..., ::2, ::2]


def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The inverse step, to ``size``: the samples back on the even rows and columns, zeros between, blurred (x4,
    the zeros' share), so that a level's detail lines up with the pixels :func:`_down` kept."""
    z = x.new_zeros(*x.shape[:-2], *size)
    z[..., ::2, ::2] = 4.0 * x[..., : (size[0] + 1) // 2, : (size[1] + 1) // 2]
    return _blur(z)


def fusion_weights(frames: Tensor, *, contrast: float = 1.0, saturation: float = 1.0,
                   exposedness: float = 1.0, sigma: float = 0.2) -> Tensor:
    """Normalised Mertens weights (N, 1, H, W) of ``frames`` (N, 3, H, W) in [0, 1]."""
    grey = frames.mean(1, keepdim=True)
    c = F.conv2d(_pad(grey, (1, 1, 1, 1)), LAPLACE.to(frames).view(1, 1, 3, 3)).abs()
    s = frames.std(1, unbiased=False, keepdim=True)
    e = torch.exp(-((frames - 0.5) ** 2) / (2 * sigma**2)).prod(1, keepdim=True)
    w = c.pow(contrast) * s.pow(saturation) * e.pow(exposedness) + 1e-12
    return w / w.sum(0, keepdim=True)


def mertens_fuse(frames: Sequence[Tensor] | Tensor, *, levels: int | None = None, **weights: float) -> Tensor:
    """Fuse the frames of one stack, each (3, H, W) sRGB in [0, 1] and all the same size, into one
    (3, H, W) image in [0, 1] (module docstring).  ``levels`` defaults to the full pyramid,
    ``floor(log2(short side)) + 1`` levels (top level 1-2 pixels); ``weights`` go to :func:`fusion_weights`."""
    x = torch.stack(list(frames)) if not isinstance(frames, Tensor) else frames
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        raise ValueError(f"mertens_fuse wants N frames of (3, H, W); got {tuple(x.shape)}")
    x = x.double()
    w = fusion_weights(x, **weights)
    h, wd = x.shape[-2:]
    n = levels or int(math.log2(min(h, wd))) + 1
    gx, gw = [x], [w]
    for _ in range(n - 1):
        gx.append(_down(gx[-1]))
        gw.append(_down(gw[-1]))
    out = (gx[-1] * gw[-1]).sum(0, keepdim=True)  # the coarsest level of the blended Laplacian pyramid
    for i in range(n - 2, -1, -1):
        lap = gx[i] - _up(gx[i + 1], gx[i].shape[-2:])
        out = _up(out, gx[i].shape[-2:]) + (lap * gw[i]).sum(0, keepdim=True)
    return out[0].clamp(0.0, 1.0).float()


def blend_with_rule(fused: Tensor, rule_frame: Tensor, alpha: float) -> Tensor:
    """``alpha * fused + (1 - alpha) * rule_frame`` (``alpha = 1``: the fusion alone)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fusion alpha {alpha} must lie in [0, 1]")
    return fused if alpha == 1.0 else alpha * fused + (1.0 - alpha) * rule_frame


CACHE_ENV = "RESTOREX_FUSED_CACHE"
FUSION_VERSION = "mertens2"  # the cache subfolder: bump it whenever the fusion's output changes


def cached_path(cache: str | Path, scene_id: str, alpha: float = 1.0) -> Path:
    """Where a scene's target lives in ``cache``: ``<cache>/mertens2/<scene_id>.png`` (the fusion) or
    ``...@alpha0.50.png`` (its blend with the rule frame)."""
    name = f"{scene_id}.png" if alpha == 1.0 else f"{scene_id}@alpha{alpha:.2f}.png"
    return Path(cache) / FUSION_VERSION / name


def default_cache(stacks_root: str | Path) -> Path:
    """Where fused targets are cached by default: the folder named by ``$RESTOREX_FUSED_CACHE`` if set, else
    ``stacks_fused/`` beside the stacks folder (with the data, never in the repository)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = Path(stacks_root).resolve()
    return root.parent / f"{root.name}_fused"


def _fused_file(scene_id: str, frames: Sequence[Path], cache: Path, load) -> Path:
    """:func:`cached_path`, made (atomically, 16-bit PNG) if it is not there yet."""
    path = cached_path(cache, scene_id)
    if not path.is_file():
        _write_png16(mertens_fuse([load(p) for p in frames]), path)
    return path


def fused_target(scene_id: str, frames: Sequence[Path], cache: str | Path, *, load=None) -> Tensor:
    """The fused image of one stack scene, read from its :func:`cached_path` in ``cache`` or made and written there
    (atomically, 16-bit PNG) on first use.  ``load`` reads a frame as (3, H, W) in [0, 1] (default:
    :func:`training.datasets.load_image`).  Always the cached, 16-bit-rounded image, so the first epoch sees
    what later ones read."""
    from .datasets import load_image

    load = load or load_image
    return load(_fused_file(scene_id, frames, Path(cache), load))


def fused_target_file(scene_id: str, frames: Sequence[Path], rule_frame: Path, cache: str | Path,
                      alpha: float = 1.0) -> Path:
    """The cached file of a scene's target: the fusion (``alpha = 1``) or its blend with the rule frame,
    made on first use (:func:`fused_target`, :func:`blend_with_rule`)."""
    from .datasets import load_image

    cache = Path(cache)
    if alpha == 1.0:
        return _fused_file(scene_id, frames, cache, load_image)
    path = cached_path(cache, scene_id, alpha)
    if not path.is_file():
        _write_png16(blend_with_rule(fused_target(scene_id, frames, cache), load_image(rule_frame), alpha), path)
    return path


def _write_png16(image: Tensor, path: Path) -> None:
    """(3, H, W) in [0, 1] -> 16-bit RGB PNG, written to a temporary name and renamed into place; a cache folder
    that cannot be written raises an error naming every way to move it."""
    from restorex_io import encode_png  # the project's 16-bit PNG codec

    arr = np.round(image.permute(1, 2, 0).numpy().astype(np.float64) * 65535.0).astype(np.uint16)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: two runs may make the same file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encode_png(arr, row_filter="up"))  # read back every epoch: the fast filter
    except OSError as e:
        with contextlib.suppress(OSError):  # nothing half-written left behind
            tmp.unlink()
        raise PermissionError(
            f"cannot write fused targets to {path.parent} ({e.strerror or e}): the data folder may be read-only. "
            f"Give a writable cache folder: set {CACHE_ENV}=DIR, data.fused_cache in the config, or --cache DIR "
            f"(python -m training.fusion) / --fused-cache DIR (python -m training.evaluate)") from None
    tmp.replace(path)


def check_targets(photos: Sequence[Path], *, alphas: Sequence[float] = (1.0, 0.75, 0.5, 0.25, 0.0),
                  max_side: int = 384, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Which stack target comes closest to a well-exposed photo when only a bracketed stack of it exists.

    Each photo (held out of training) is rendered as a stack through :mod:`training.synthetic`'s camera model
    (noise included): half of them 5 frames 1 EV apart, half 3 frames 2 EV apart, offset by a random
    fraction of a stop so that no frame is the photo itself.  Every candidate target is made from the stack,
    the rule frame (the GT rule's pick) and the fusion blended with it at each ``alpha``, and scored against
    the photo.  Returns ``{candidate: (PSNR, SSIM)}`` averaged over the photos."""
    from .datasets import load_image
    from .metrics import image_metrics
    from .stacks import rule_roles
    from .synthetic import render_exposure

    rng = np.random.default_rng(seed)
    scores: dict[str, list[tuple[float, float]]] = {}
    for path in photos:
        y = load_image(path)
        s = min(1.0, max_side / max(y.shape[-2:]))
        if s < 1.0:
            y = F.interpolate(y[None], scale_factor=s, mode="bilinear", antialias=True)[0].clamp(0, 1)
        off = float(rng.uniform(-0.5, 0.5))
        evs = [e + off for e in ((-2, -1, 0, 1, 2) if rng.uniform() < 0.5 else (-1.5, 0.5, 2.5))]
        rendered = [render_exposure(y.permute(1, 2, 0).numpy(), e, rng, shot=5e-4, read=1e-3) for e in evs]
        frames = sorted((torch.from_numpy(r).permute(2, 0, 1) for r in rendered), key=lambda f: float(f.mean()))
        rule = frames[rule_roles([255.0 * float(f.mean()) for f in frames]).gt]
        fused = mertens_fuse(frames)
        for a in alphas:
            name = "rule frame" if a == 0.0 else "fusion" if a == 1.0 else f"fusion x {a:g} + rule frame x {1 - a:g}"
            scores.setdefault(name, []).append(image_metrics(blend_with_rule(fused, rule, a), y))
    return {k: (float(np.mean([v[0] for v in vs])), float(np.mean([v[1] for v in vs]))) for k, vs in scores.items()}


def _fuse_one(scene_id: str, frames: Sequence[Path], cache: Path) -> None:
    """One scene's fused target made and cached (a ``--jobs`` worker: one torch thread per process)."""
    torch.set_num_threads(1)
    fused_target(scene_id, frames, cache)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m training.fusion --stacks DIR [--cache DIR]``: make (or check) every scene's fused target;
    ``--check PHOTOS...``: :func:`check_targets` on those photo folders, printed as a table."""
    import argparse

    from .stacks import find_scenes
    from .synthetic import find_images

    p = argparse.ArgumentParser(prog="python -m training.fusion", description=main.__doc__)
    p.add_argument("--stacks", help="the stacks folder (e.g. ../shared/data/stacks)")
    p.add_argument("--cache", help=f"where the fused targets go (default: ${CACHE_ENV}, else stacks_fused/ beside "
                                   "--stacks)")
    p.add_argument("--jobs", type=int, default=1,
                   help="fuse this many scenes at once, one process each (default 1; e.g. the CPU count)")
    p.add_argument("--check", nargs="+", metavar="DIR",
                   help="compare the rule frame, the fusion and their blends on stacks rendered from these "
                        "well-exposed photo folders (held out of training: e.g. photos/kodak24 photos/mcmaster)")
    args = p.parse_args(argv)
    if args.check:
        photos = [f for d in args.check for f in find_images(d)]
        print(f"| target ({len(photos)} photos) | PSNR | SSIM |\n|---|---:|---:|")
        for name, (ps, ss) in check_targets(photos).items():
            print(f"| {name} | {ps:.2f} | {ss:.4f} |")
        return
    if not args.stacks:
        p.error("give --stacks (make the fused targets) or --check (compare targets)")
    cache = Path(args.cache) if args.cache else default_cache(args.stacks)
    scenes = find_scenes(Path(args.stacks))
    todo = [(sid, files, cache) for sid, files in scenes.items() if not cached_path(cache, sid).is_file()]
    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(args.jobs, len(todo))) as pool:
            pool.starmap(_fuse_one, todo, chunksize=1)
    else:
        for sid, files, _ in todo:
            fused_target(sid, files, cache)
    made = len(todo)
    print(f"{len(scenes)} fused targets in {cache} ({made} made now)")


if __name__ == "__main__":
    main()
