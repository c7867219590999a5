"""A probe for issue 22: how far a global tone curve, chosen from the method's own priors, gets on the held-out data.

    python -m training.curve_probe --data DATA --weights weights/restorex-default.safetensors \
        --compare eval/gpu --out eval/curve_probe

The held-out sheet's curve PSNR (``training.metrics.best_curve``) says the defaults' error is global: on every
held-out subset but the identity ones, the best per-channel curve applied to the *input* scores at least as high as
the best curve applied to any default's output, so the Restormer's local work adds nothing there, and what every
default gets wrong is the curve. This probe asks whether that curve can be read off the image: a small MLP takes
the frozen weights' input priors (their image encoder + PEM-S2, the Prior Extraction Module: for the bundled
weights their own small ViT, for the paper's configs CLIP ViT-B/32) and a 32-bin histogram per channel, and
outputs a monotone curve per channel (16 linear segments), applied to the input pixel by pixel. It is fitted (L1,
4000 AdamW steps of 64 images at 96 px; 6 minutes with the data on the idle 2-core CPU, 21 beside a training run) on the
default recipe's training data only: every training stack frame toward its fused / rule-frame blend
(``data.fusion_alpha = 0.5``), the blend itself toward itself, and the training photos rendered at EVs uniform
over [-4, +3] through the camera model (a quarter of them as they are). Then it is scored by ``training.heldout``
like any weights (subsets, EV sweep, the issue's target checks, ``--compare``).

The head is the core's tone path (``restorex_core.arch.tone.ToneCurve``), applied through its clipped-region guard
(a pixel whose brightest channel nears 1 is scaled by one gain for all its channels: ``--no-guard`` for free
channel curves everywhere, as the first probe ran). Nothing in it is tuned on the held-out data (its settings are fixed
below), and its output is the input under a curve, so it restores nothing local. ``--export FILE`` writes the
weights with the fitted head as their tone path: part 1 of the v6 recipe
(``training/configs/experiments/default_v6.toml``), which then trains the Restormer behind the frozen curve.
``--cv K`` fits K heads instead, each without one K-th of the training stack scenes, and prints their brightness on
the scenes they did not see (:func:`cross_validate`): whether what a head learnt of a scene's brightness carries over.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorex_core.arch.tone import ToneConfig, ToneCurve, apply_curves

from .config import read_toml
from .curve_check import luma
from .datasets import load_image
from .heldout import (
    AUTO_GAMMA,
    DEFAULT_CONFIG,
    Downscaled,
    baseline_methods,
    ev_sweep,
    heldout_photos,
    heldout_subsets,
    markdown,
    model_method,
    report_targets,
    score,
    strip,
    write,
)
from .losses import blown_target
from .stacks import StackDataset
from .stream import exposed
from .synthetic import find_images

logger = logging.getLogger(__name__)

KNOTS = 16  # linear segments per channel
FEATURE_SIDE = 256  # the priors and histogram are read from the image at this long side, in training and use
LOSS_SIDE = 96  # the curve's L1 is measured at this long side (a curve is pixel-wise: resolution does not matter)
EV_RANGE, IDENTITY = (-4.0, 3.0), 0.25


def resize_max(x: Tensor, side: int) -> Tensor:
    """(3, H, W) downscaled (antialiased) to at most ``side`` on its long side."""
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    return F.interpolate(x[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                         antialias=True)[0].clamp(0, 1)


def tone_config(model: nn.Module, hist_gamma: float = 1.0) -> ToneConfig:
    """The tone path this probe fits for ``model``: 16 segments, reading its priors (restorex_core.arch.tone)."""
    c = model.config
    return ToneConfig(knots=KNOTS, prior_dim=c.pem.dim, num_priors=len(c.clip.taps), feature_side=FEATURE_SIDE,
                      hist_gamma=hist_gamma)


def features(model: nn.Module, head: ToneCurve, x: Tensor) -> Tensor:
    """(3, H, W) -> the head's input: the four input priors of ``model`` and the histograms, one flat vector."""
    small = resize_max(x, FEATURE_SIDE)
    with torch.inference_mode():
        priors = model.extract_priors(small[None].to(model.device, model.dtype))
        return head.features(priors.vectors, small[None].to(model.device))[0].cpu()


class Probe(nn.Module):
    """The core's :class:`ToneCurve` head, with the probe's ``white`` variant: each curve scaled to end at 1
    (white stays white, and a clipped channel stays clipped)."""

    def __init__(self, config: ToneConfig, *, white: bool = False) -> None:
        super().__init__()
        self.head, self.white = ToneCurve(config), white

    def forward(self, f: Tensor) -> Tensor:
        curves = self.head.curves(f)
        return curves / curves[:, :, -1:] if self.white else curves


# ------------------------------------------------------------------------------------------ training data
def training_samples(model: nn.Module, head: ToneCurve, data_root: Path, *, config: Path = DEFAULT_CONFIG,
                     fused_cache: str | Path | None = None, renders: int = 3, seed: int = 0,
                     limit: int | None = None, fusion_alpha: float = 0.5) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(features, input, target) at LOSS_SIDE for the training stacks (every frame toward the blend of fusion
    and rule frame, ``fusion_alpha`` of the fusion: half and half by default; the blend toward itself) and
    ``renders`` renders of every training photo."""
    data = read_toml(config)["data"]
    rng = np.random.default_rng(seed)
    out = []

    def add(x: Tensor, y: Tensor) -> None:
        x, y = resize_max(x, FEATURE_SIDE), resize_max(y, FEATURE_SIDE)
        out.append((features(model, head, x), resize_max(x, LOSS_SIDE), resize_max(y, LOSS_SIDE)))

    stacks = _training_stacks(data_root, data, fused_cache, fusion_alpha)
    n = len(stacks) if limit is None else min(limit, len(stacks))
    t0 = time.monotonic()
    for i in range(n):
        item = stacks[i]
        add(item["input"], item["target"])
    logger.info("%d stack pairs (%.0f s)", n, time.monotonic() - t0)
    held = tuple((data_root / "photos" / e).resolve() for e in data.get("synthetic_exclude", ()))
    photos = [p for p in find_images(data_root / "photos") if not any(p.resolve().is_relative_to(h) for h in held)]
    photos = photos if limit is None else photos[:limit]
    for p in photos:
        y = resize_max(load_image(p), FEATURE_SIDE)
        for _ in range(renders):
            if rng.uniform() < IDENTITY:
                add(y, y)
            else:
                add(exposed(y, float(rng.uniform(*EV_RANGE)), rng, noise=True), y)
    logger.info("%d samples in all, %d photos (%.0f s)", len(out), len(photos), time.monotonic() - t0)
    return out


def _training_stacks(data_root: Path, data: dict, fused_cache: str | Path | None, fusion_alpha: float
                     ) -> StackDataset:
    """The training stack pairs of :func:`training_samples`, in its order (the held-out scenes left out)."""
    return StackDataset(data_root / "stacks", exclude=data["val_scenes"], pairs="all", target="fused",
                        fusion_alpha=fusion_alpha, fused_cache=fused_cache, identity=True)


@dataclass(frozen=True)
class StackSource:
    """Where one of :func:`training_samples`' stack samples comes from."""

    scene: str
    rule_role: str | None  # "under" / "over": the GT rule's frame of that role (what the held-out subsets score)
    rule_luma: float  # the scene's rule frame's mean luma (/255) at LOSS_SIDE


def stack_sources(data_root: Path, *, config: Path = DEFAULT_CONFIG, fused_cache: str | Path | None = None,
                  limit: int | None = None, fusion_alpha: float = 0.5) -> list[StackSource]:
    """One :class:`StackSource` per stack sample of :func:`training_samples` with the same arguments, in its
    order: the stack samples come first there, the photo renders after them."""
    stacks = _training_stacks(data_root, read_toml(config)["data"], fused_cache, fusion_alpha)
    rule_luma, role_of = {}, {}
    for sid, frames in stacks.scenes.items():
        roles = stacks.roles[sid]
        rule_luma[sid] = luma(resize_max(load_image(frames[roles.gt].path), LOSS_SIDE))
        for k, role in ((roles.under, "under"), (roles.over, "over")):
            if k is not None:
                role_of[f"{sid}/{frames[k].path.name}"] = role
    pairs = stacks.pairs if limit is None else stacks.pairs[:limit]
    out = []
    for pair in pairs:
        sid = pair.name.rsplit("/", 1)[0]
        out.append(StackSource(sid, role_of.get(pair.name), rule_luma[sid]))
    return out


def cross_validate(samples: Sequence[tuple[Tensor, Tensor, Tensor]], sources: Sequence[StackSource],
                   config: ToneConfig, *, folds: int = 5, guard: tuple[float, float] | None = None,
                   **fit_kwargs) -> list[tuple[str, float, float, float, float]]:
    """The head's brightness on stack scenes it was not fitted on: the training scenes split into ``folds`` (every
    ``folds``-th scene in sorted order), a head fitted (:func:`fit`, ``fit_kwargs``) on all the samples but one
    fold's scenes' (the photo renders always kept), and scored on that fold's rule under / over frames.

    Returns (side, input, output, target, rule frame) per scored frame: their mean luma /255, ``target`` being the
    sample's own (the blend it is fitted toward). ``sources``: :func:`stack_sources`, one per stack sample, the
    stack samples first in ``samples``."""
    scenes = sorted({s.scene for s in sources})
    if len(scenes) < folds or folds < 2:
        raise ValueError(f"cross-validation over {folds} folds needs at least 2 folds and as many training stack "
                         f"scenes; the data has {len(scenes)}")
    fold_of = {sid: k % folds for k, sid in enumerate(scenes)}
    rows = []
    for f in range(folds):
        held = [i for i, s in enumerate(sources) if fold_of[s.scene] == f]
        kept = [sample for i, sample in enumerate(samples) if i >= len(sources) or fold_of[sources[i].scene] != f]
        head = fit(kept, config, guard=guard, **fit_kwargs)
        for i in held:
            if sources[i].rule_role is None:
                continue
            feats, x, y = samples[i]
            with torch.inference_mode():
                out = apply_curves(x[None], head(feats[None]), guard)[0]
            rows.append((sources[i].rule_role, luma(x), luma(out), luma(y), sources[i].rule_luma))
        logger.info("fold %d of %d: %d scenes held out", f + 1, folds, sum(v == f for v in fold_of.values()))
    return rows


def cv_markdown(rows: Sequence[tuple[str, float, float, float, float]], folds: int) -> str:
    """:func:`cross_validate`'s rows per side: mean luma of input / output / target / rule frame, the output's
    errors against both, and how its brightness follows the rule frame's scene by scene."""
    lines = [f"The head's brightness on unseen stack scenes ({folds}-fold cross-validation by scene; mean luma /255)",
             "",
             "| frames | n | input | output (range) | target | rule frame | output - target | output - rule frame "
             "| correlation with the rule frame |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side in ("under", "over"):
        r = np.array([row[1:] for row in rows if row[0] == side], dtype=np.float64).reshape(-1, 4)
        if not len(r):
            continue
        corr = float(np.corrcoef(r[:, 1], r[:, 3])[0, 1]) if len(r) > 2 and r[:, 1].std() > 0 else float("nan")
        lines.append(f"| rule {side} | {len(r)} | {r[:, 0].mean():.0f} | {r[:, 1].mean():.0f} ({r[:, 1].min():.0f}-"
                     f"{r[:, 1].max():.0f}) | {r[:, 2].mean():.0f} | {r[:, 3].mean():.0f} | "
                     f"{(r[:, 1] - r[:, 2]).mean():+.1f} | {(r[:, 1] - r[:, 3]).mean():+.1f} | {corr:.2f} |")
    return "\n".join(lines)


def fit(samples: Sequence[tuple[Tensor, Tensor, Tensor]], config: ToneConfig, *, steps: int = 4000,
        batch: int = 64, lr: float = 1e-3, seed: int = 0, white: bool = False,
        guard: tuple[float, float] | None = None, keep_blown: float = 0.0, max_slope: float = 0.0,
        slope_from: float = 0.0) -> Probe:
    """The head fitted by L1 between the curved inputs (through ``guard``, :func:`apply_curves`) and the targets
    (samples padded to one size per batch).

    ``keep_blown`` > 0: each target with that share of its input's blown regions kept (``training.losses.blown_target``,
    1: kept as they are).
    A clipped sky holds nothing of the target's sky, so plain L1 fits the curve's top to the mean of all skies
    behind it: white mapped to a mid-grey (v7's curve: the lighthouse's sky at 0.68 of white). Kept, a curve may
    still darken everything below the clip, but leaves what is blown bright.

    ``max_slope`` > 0: a penalty (mean excess, weight 1) on segments steeper than that. A curve that darkens an
    over-exposed photo and keeps its white ends in a cliff (v8's last segment: slope 9), which turns each 8-bit
    step of a near-white sky into a visible contour line.

    ``slope_from`` > 0: the penalty holds only the segments that start at or above that input level. Lifting a
    -4 EV photo needs a slope of about 16 at the bottom (k1s3, capped everywhere, left dark photos 73 /255 too
    dark at -4 EV); the contour lines are at the top, in the near-white tones."""
    if not 0.0 <= slope_from < 1.0:
        raise ValueError(f"slope_from must be an input level in [0, 1), not {slope_from}")
    torch.manual_seed(seed)
    feats = torch.stack([s[0] for s in samples])
    head = Probe(config, white=white)
    head.head.feature_mean.copy_(feats.mean(0))
    head.head.feature_std.copy_(feats.std(0).clamp(min=1e-4))
    side = LOSS_SIDE
    xs = torch.zeros(len(samples), 3, side, side)
    ys = torch.zeros_like(xs)
    mask = torch.zeros(len(samples), 1, side, side)
    for k, (_, x, y) in enumerate(samples):
        h, w = x.shape[-2:]
        y = blown_target(y[None], x[None], strength=keep_blown)[0] if keep_blown else y
        xs[k, :, :h, :w], ys[k, :, :h, :w], mask[k, :, :h, :w] = x, y, 1.0
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    capped = slice(math.ceil(slope_from * config.knots - 1e-6), None)  # the segments starting at or above it
    g = torch.Generator().manual_seed(seed)
    head.train()
    for step in range(steps):
        idx = torch.randint(len(samples), (batch,), generator=g)
        curves = head(feats[idx])
        out = apply_curves(xs[idx], curves, guard)
        loss = ((out - ys[idx]).abs() * mask[idx]).sum() / (3 * mask[idx].sum())
        if max_slope > 0:
            slopes = curves.diff(dim=2)[:, :, capped] * config.knots
            loss = loss + (slopes - max_slope).clamp(min=0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 1000 == 0:
            logger.info("step %d: L1 %.4f", step + 1, loss.item())
    return head.eval()


def probe_method(model: nn.Module, head: Probe, guard: tuple[float, float] | None):
    """The fitted probe as a held-out Method: (3, H, W) -> (3, H, W)."""
    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return apply_curves(x[None], head(features(model, head.head, x)[None]), guard)[0]
    return run


def export(model: nn.Module, head: ToneCurve, path: str | Path, *, guard: tuple[float, float] | None) -> Path:
    """``model`` with the fitted head as its tone path (``tone.knots = 16``), written as a RestoreX checkpoint:
    the start of a training run that fine-tunes the Restormer behind it (train.init_all, train.freeze)."""
    from restorex_core import RestoreX, save_checkpoint

    tone = {"knots": KNOTS, "prior_dim": head.config.prior_dim, "num_priors": head.config.num_priors,
            "feature_side": FEATURE_SIDE, "hist_gamma": head.config.hist_gamma}
    if guard is not None:
        tone["guard"] = guard
    full = RestoreX(model.config.replace(tone=tone), clip=None if model.config.clip.trainable else model.clip)
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("tone.", "clip.")) for k in missing), (missing, unexpected)
    full.tone.load_state_dict(head.state_dict())
    return save_checkpoint(full.eval(), path, metadata={"trainer": "training.curve_probe"},
                           dtype=next(model.parameters()).dtype)


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m training.curve_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the folder holding stacks/ and photos/")
    p.add_argument("--weights", required=True, help="the frozen weights whose input priors the probe reads")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the config naming the held-out data")
    p.add_argument("--fused-cache", help="the fused targets' cache (default: $RESTOREX_FUSED_CACHE, else beside)")
    p.add_argument("--label", default="curve probe")
    p.add_argument("--max-side", type=int, default=512, help="held-out subsets' long side (default 512)")
    p.add_argument("--sweep-side", type=int, default=256, help="EV sweep's long side (default 256)")
    p.add_argument("--compare", action="append", default=[], metavar="DIR",
                   help="an earlier training.evaluate --targets folder whose models join the tables")
    p.add_argument("--reference", default="v3", help="the --compare model of the rule-frame check (default v3)")
    p.add_argument("--limit", type=int, help="at most N training stack pairs and photos, N held-out items per "
                                             "subset (smoke runs)")
    p.add_argument("--steps", type=int, default=4000, help="Adam steps of the fit (default 4000)")
    p.add_argument("--white", action="store_true", help="curves that end at 1: white stays white (Probe)")
    p.add_argument("--keep-blown", type=float, nargs="?", const=1.0, default=0.0, metavar="SHARE",
                   help="fit toward targets that keep the input's blown regions (training.losses.blown_target; "
                        "SHARE < 1 keeps only that share of the input there): white stays bright instead of going "
                        "to the mean of the skies behind it")
    p.add_argument("--max-slope", type=float, default=0.0, metavar="S",
                   help="penalise curve segments steeper than S (contour lines in near-white skies; default off)")
    p.add_argument("--slope-from", type=float, default=0.0, metavar="LEVEL",
                   help="--max-slope holds only the segments from this input level up (e.g. 0.5: the bright tones, "
                        "leaving the steep bottom that lifts a dark photo free; default 0: every segment)")
    p.add_argument("--fusion-alpha", type=float, default=0.5, metavar="A",
                   help="the training stack frames' targets: A of the fusion, 1 - A of the rule frame (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="the fit's seed (its init and batches; default 0)")
    p.add_argument("--hist-gamma", type=float, default=1.0,
                   help="the head's histograms read x ** (1 / G) (tone.hist_gamma; default 1: linear bins)")
    p.add_argument("--no-guard", action="store_true",
                   help="free channel curves everywhere: no clipped-region guard (tone.apply_curves)")
    p.add_argument("--export", metavar="FILE", help="also write the weights with the fitted head as their tone path "
                                                     "(a RestoreX checkpoint; not with --white)")
    p.add_argument("--strip", nargs=2, metavar=("IMAGE", "PNG"), action="append", default=[],
                   help="also write a strip of IMAGE (input | the weights | probe | auto-gamma) to PNG (repeatable)")
    p.add_argument("--no-score", action="store_true", help="fit, then only the strips")
    p.add_argument("--cv", type=int, metavar="K",
                   help="instead: fit K heads, each without one K-th of the training stack scenes, and print their "
                        "brightness on the rule under / over frames of the scenes they did not see (cv_markdown)")
    p.add_argument("--out", default="out/curve_probe")
    args = p.parse_args(argv)
    if args.cv and args.export:
        p.error("--cv fits one head per fold and scores them; it exports none: drop --export")
    if args.export and args.white:
        p.error("--export writes the core's tone path, whose curves are free at the top: drop --white")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from restorex_core import load_checkpoint

    cache = args.fused_cache or os.environ.get("RESTOREX_FUSED_CACHE") or None
    model = load_checkpoint(args.weights).eval()
    root = Path(args.data)
    config = tone_config(model, args.hist_gamma)
    guard = None if args.no_guard else config.guard
    samples = training_samples(model, ToneCurve(config), root, config=Path(args.config), fused_cache=cache,
                               limit=args.limit, fusion_alpha=args.fusion_alpha)
    if args.cv:
        sources = stack_sources(root, config=Path(args.config), fused_cache=cache, limit=args.limit,
                                fusion_alpha=args.fusion_alpha)
        rows = cross_validate(samples, sources, config, folds=args.cv, guard=guard, steps=args.steps,
                              seed=args.seed, white=args.white, keep_blown=args.keep_blown, max_slope=args.max_slope,
                              slope_from=args.slope_from)
        print(cv_markdown(rows, args.cv))
        return
    head = fit(samples, config, steps=args.steps, seed=args.seed, white=args.white, guard=guard,
               keep_blown=args.keep_blown, max_slope=args.max_slope, slope_from=args.slope_from)
    if args.export:
        print(f"wrote {export(model, head.head, args.export, guard=guard)}")
    methods = {args.label: probe_method(model, head, guard), **baseline_methods()}
    shown = {Path(args.weights).stem: model_method(model), args.label: methods[args.label],
             AUTO_GAMMA: methods[AUTO_GAMMA]}
    for image, png in args.strip:
        print(f"wrote {strip(shown, [Path(image)], png)}")
    if args.no_score:
        return
    subsets = [Downscaled(s, args.max_side) for s in heldout_subsets(root, config=args.config, fused_cache=cache)]
    rows = score(methods, subsets, limit=args.limit)
    files = heldout_photos(root, config=args.config)
    ev_rows = ev_sweep(methods, files[: args.limit] if args.limit else files, max_side=args.sweep_side)
    command = "python -m training.curve_probe " + " ".join(argv)
    paths = write(rows, args.out, command)
    print(markdown(rows, command))
    paths += report_targets(rows, ev_rows, args.label, args.reference, out=args.out, command=command,
                            compare=args.compare, sweep_side=args.sweep_side)
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
