"""The default model's held-out validation: scores *and* the look, per subset, next to the baselines.

Eight subsets, all held out of training by ``training/configs/default_stage1.toml``:

* ``stacks/under``, ``stacks/over``: the rule pairs (``pairs="rule"``) of the held-out stack scenes
  (``data.val_scenes``): real under/over-exposed frames against a real, well-exposed frame (the rule frame);
* ``fused/under``, ``fused/over``: the same frames against the scene's exposure fusion (:mod:`training.fusion`),
  which keeps the highlights of the dark frames and the shadows of the bright ones, as expert references do;
* ``photos/under``, ``photos/over``: every photo of the held-out photo sets (``data.synthetic_exclude``:
  kodak24 and mcmaster) rendered through :mod:`training.synthetic`'s camera model at fixed, seeded EVs
  (clipping, tone curve and Poisson-Gaussian noise), each photo once under- and once over-exposed,
  the EVs cycling through :data:`UNDER_EVS` and :data:`OVER_EVS`.  Their targets are finished photos;
* ``photos/identity``, ``fused/identity``: the held-out photos and the held-out scenes' fusions as they are,
  each its own target: a well-exposed photo must come out nearly unchanged.

``--ev-sweep`` renders every held-out photo at each EV from -4 to +3 in 0.5 EV steps (0 included) and reports
PSNR, SSIM and the mean-brightness error per EV; ``--targets LABEL[,REFERENCE]`` runs both and checks the
default weights' targets (weights/README.md; :func:`target_checks`), optionally next to an earlier run's
scores (``--compare DIR``).

Per subset and method: PSNR and SSIM (the papers' protocol, :mod:`training.metrics`), and two plain
statistics of the look against the target, averaged over the images:

* **chroma ratio**: mean CIELAB chroma ``C*ab`` of the output / that of the target (1 = as colourful,
  below 1 = washed out);
* **contrast ratio**: RMS contrast (standard deviation of CIELAB ``L*``) of the output / of the target
  (1 = as contrasty, below 1 = flat or hazy);
* **clipped highlights** (the images where at least 1% of the input is clipped, i.e. its brightest channel
  reaches :data:`CLIPPED`): over those pixels only, the chroma ratio (mean C*ab of the outputs over that of
  the targets, pooled over the images: below 1 = a blown sky comes back greyer than the target's; pooled
  because a blown white window has almost no target chroma to divide by) and the mean CIELAB colour
  difference dE*ab to the target;
* **sky b*** (the images whose target has at least :data:`MIN_SKY` light-blue pixels, :data:`SKY`): the mean
  CIELAB b* of the output and of the target over those pixels.  A blue sky has b* well below 0; a model that
  turns a partly blown sky teal or grey leaves it near 0.

Usage (any number of ``--weights LABEL=FILE``; the baselines always run)::

    python -m training.evaluate --suite heldout --data ../shared/data \\
        --weights v2=weights/restorex-default.safetensors --weights v1=v1.safetensors --out eval/heldout
    # plus a contact sheet of 12 held-out inputs / each model / targets:
    python -m training.heldout --data ../shared/data --weights v1=v1.safetensors \\
        --weights v2=weights/restorex-default.safetensors --sheet docs/heldout_contact_sheet.png
    # how well FFEDM recovers the teacher's priors of the targets (a collapsed prior path shows R^2 ~ 0):
    python -m training.heldout --data ../shared/data --weights v5=weights/restorex-default.safetensors \\
        --priors --max-side 256
    # how the outputs' brightness depends on the EV (every held-out photo at each EV, 384 px):
    python -m training.heldout --data ../shared/data --weights v3=weights/restorex-default.safetensors \\
        --ev-sweep --max-side 384
    # everything, and the default weights' targets checked against an earlier run of the reference weights:
    python -m training.evaluate --suite heldout --data ../shared/data --weights v3=v3.safetensors \\
        --targets v3 --out eval/v3
    python -m training.evaluate --suite heldout --data ../shared/data \\
        --weights v4=weights/restorex-default.safetensors --targets v4,v3 --compare eval/v3 --out eval/v4
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from restorex_core.files import atomic_write, atomic_write_text
from restorex_core.images import srgb_to_lab as _srgb_to_lab

from .baselines import get_baseline
from .config import read_toml
from .datasets import load_image
from .metrics import MIN_SKY, SKY, best_curve, detail_ratio, image_metrics, mean_or_nan, psnr, sky_mask
from .stacks import StackDataset
from .synthetic import SyntheticExposureDataset, find_images

logger = logging.getLogger(__name__)

UNDER_EVS = (-3.0, -2.0, -1.5)
OVER_EVS = (1.0, 1.5, 2.0)
SUBSETS = ("stacks/under", "stacks/over", "fused/under", "fused/over", "photos/under", "photos/over",
           "photos/identity", "fused/identity")
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default_stage1.toml"
BASELINE_KEYS = ("identity", "auto-gamma", "he")
# the contact sheet's rows: real frames against their fusion, rendered photos, and photos that need nothing
SHEET_SUBSETS = ("fused/under", "fused/over", "photos/under", "photos/over", "photos/identity")
CLIPPED = 0.95  # an input pixel whose brightest channel reaches this has lost its colour
MIN_CLIPPED = 0.01  # the fraction of clipped input pixels from which an image counts for the highlight figures

Method = Callable[[Tensor], Tensor]  # (3, H, W) in [0, 1] -> (3, H, W) in [0, 1]


# ------------------------------------------------------------------------------------- the look
def srgb_to_lab(x: Tensor) -> Tensor:
    """(3, H, W) or (B, 3, H, W) sRGB in [0, 1] -> CIELAB (D65), same shape, float64, detached."""
    return _srgb_to_lab(x.detach().to(torch.float64))


def chroma_map(lab: Tensor) -> Tensor:
    """(3, H, W) CIELAB -> (H, W) chroma C*ab."""
    return torch.sqrt(lab[1] ** 2 + lab[2] ** 2)


def look_stats(image: Tensor) -> tuple[float, float]:
    """(mean CIELAB chroma C*ab, RMS contrast = std of L*) of one (3, H, W) image in [0, 1]."""
    return _stats(srgb_to_lab(image[:3]))


def look_ratios(output: Tensor, target: Tensor) -> tuple[float, float]:
    """(chroma ratio, contrast ratio) of output against target; 1.0 means the target's look."""
    return _ratios(srgb_to_lab(output[:3]), srgb_to_lab(target[:3]))


def highlight_look(image: Tensor, output: Tensor, target: Tensor) -> tuple[float, float, float]:
    """(mean C*ab of the output, of the target, mean dE*ab between them) over the pixels the input ``image``
    has clipped (brightest channel >= :data:`CLIPPED`); NaNs when under :data:`MIN_CLIPPED` of it is clipped."""
    return _highlight(image, srgb_to_lab(output[:3]), srgb_to_lab(target[:3]))


def sky_look(output: Tensor, target: Tensor) -> tuple[float, float]:
    """(mean CIELAB b* of the output, of the target) over the target's light-blue pixels (:data:`SKY`): whether
    blue skies come back blue (b* well below 0) or grey / teal (near 0); NaNs under :data:`MIN_SKY` of them."""
    return _sky(srgb_to_lab(output[:3]), srgb_to_lab(target[:3]))


# The same figures from CIELAB images, so that score() converts each output and each target once.
def _stats(lab: Tensor) -> tuple[float, float]:
    return float(chroma_map(lab).mean()), float(lab[0].std())


def _ratios(lo: Tensor, lt: Tensor) -> tuple[float, float]:
    (co, ko), (ct, kt) = _stats(lo), _stats(lt)
    return co / max(ct, 1e-6), ko / max(kt, 1e-6)


def _highlight(image: Tensor, lo: Tensor, lt: Tensor) -> tuple[float, float, float]:
    mask = image[:3].amax(dim=0) >= CLIPPED
    if float(mask.float().mean()) < MIN_CLIPPED:
        return math.nan, math.nan, math.nan
    co, ct = (chroma_map(lab)[mask].mean() for lab in (lo, lt))
    return float(co), float(ct), float((lo - lt).norm(dim=0)[mask].mean())


def _sky(lo: Tensor, lt: Tensor) -> tuple[float, float]:
    mask = sky_mask(lt)
    if float(mask.float().mean()) < MIN_SKY:
        return math.nan, math.nan
    return float(lo[2][mask].mean()), float(lt[2][mask].mean())


# ------------------------------------------------------------------------------------ the subsets
class _Cycled(Dataset):
    """Each photo once under- and once over-exposed, the EVs cycling through the fixed lists."""

    def __init__(self, files: Sequence[Path], seed: int) -> None:
        self.files = list(files)
        self.under = SyntheticExposureDataset(self.files, evs=UNDER_EVS, seed=seed)
        self.over = SyntheticExposureDataset(self.files, evs=OVER_EVS, seed=seed)

    def __len__(self) -> int:
        return 2 * len(self.files)

    def __getitem__(self, i: int) -> dict:
        photo, over = divmod(i, 2)
        k = len(UNDER_EVS)
        item = (self.over if over else self.under)[photo * k + photo % k]
        return {**item, "name": _named(self.files[photo], item["name"]), "exposure": "over" if over else "under"}


@dataclass
class Subset:
    name: str
    dataset: Dataset
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return self.dataset[self.indices[k]]


class _Identity(Dataset):
    """Well-exposed images in, the same images as targets: what a corrector must leave alone."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        y = load_image(self.files[i])
        return {"input": y, "target": y, "name": _named(self.files[i], self.files[i].stem), "exposure": "identity"}


def _named(path: Path, name: str) -> str:
    """An item's name with its folder in front (``kodak24/0006@EV+1``, ``deepfuse/Seq_21``): the held-out photo sets
    number their files alike, and per-image rows are joined by name."""
    return f"{path.parent.name}/{name}"


def heldout_subsets(data_root: str | Path, *, config: str | Path = DEFAULT_CONFIG, seed: int = 0,
                    fused_cache: str | Path | None = None) -> list[Subset]:
    """The held-out subsets of the default recipe (module docstring), read from ``data_root``
    (the folder holding ``stacks/`` and ``photos/``) and the held-out lists of ``config``.  The ``fused/``
    subsets score the same held-out stack frames against each scene's exposure fusion (:mod:`training.fusion`,
    cached in ``fused_cache``, default ``stacks_fused/`` beside the stacks) instead of its rule frame."""
    data = read_toml(config)["data"]
    root = Path(data_root)
    stacks = StackDataset(root / "stacks", scenes=data["val_scenes"], pairs="rule")
    fused = StackDataset(root / "stacks", scenes=data["val_scenes"], pairs="rule", target="fused",
                         fused_cache=fused_cache)
    photo_root = root / "photos"
    files = [p for s in data.get("synthetic_exclude", ()) for p in find_images(photo_root / s)]
    photos = _Cycled(files, seed)

    def by(ds: StackDataset, exposure: str) -> list[int]:
        return [i for i, p in enumerate(ds.pairs) if p.exposure == exposure]

    return [Subset("stacks/under", stacks, by(stacks, "under")), Subset("stacks/over", stacks, by(stacks, "over")),
            Subset("fused/under", fused, by(fused, "under")), Subset("fused/over", fused, by(fused, "over")),
            Subset("photos/under", photos, list(range(0, len(photos), 2))),
            Subset("photos/over", photos, list(range(1, len(photos), 2))),
            Subset("photos/identity", _Identity(files), list(range(len(files)))),
            Subset("fused/identity", _Identity(list(fused.targets.values())), list(range(len(fused.targets))))]


# --------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Row:
    method: str
    subset: str
    name: str
    psnr: float
    ssim: float
    chroma: float
    contrast: float
    hl_chroma: float = math.nan  # highlight_look's output C*ab: NaN where the input has (almost) nothing clipped
    hl_target_chroma: float = math.nan
    hl_de: float = math.nan
    sky_b: float = math.nan  # sky_look's output b*: NaN where the target has (almost) no light-blue sky
    sky_target_b: float = math.nan
    curve_psnr: float = math.nan  # PSNR of metrics.best_curve(output, target): the output with its global tone right
    detail: float = math.nan  # detail_ratio(output, target): fine detail kept (results written before it: NaN)


def model_method(model: torch.nn.Module, *, seed: int = 0, tile: int | None = None) -> Method:
    """A RestoreX as a Method: ``model.correct`` under inference mode, seed fixed."""
    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model.correct(x[None].to(model.device, model.dtype), seed=seed, tile=tile)[0].float().cpu()
    return run


def oracle_method(model: torch.nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """A stage-1 export scored as DiffIR scores stage 1: the Restormer driven by the GT's own priors."""
    def run(x: Tensor, y: Tensor) -> Tensor:
        with torch.inference_mode():
            pri = model.extract_priors(y[None].to(model.device, model.dtype), source="reference")
            return model.restore(x[None].to(model.device, model.dtype), pri)[0].float().cpu()
    run.needs_target = True  # type: ignore[attr-defined]
    return run


class Downscaled:
    """A subset with its images downscaled to a maximum long side (a fast proxy for ablations)."""

    def __init__(self, sub: Subset, max_side: int) -> None:
        self.sub, self.max_side, self.name = sub, max_side, sub.name

    def __len__(self) -> int:
        return len(self.sub)

    def __getitem__(self, k: int) -> dict:
        item = dict(self.sub[k])
        h, w = item["target"].shape[-2:]
        if max(h, w) > self.max_side:
            size = (max(11, round(h * self.max_side / max(h, w))), max(11, round(w * self.max_side / max(h, w))))
            for key in ("input", "target"):
                item[key] = torch.nn.functional.interpolate(item[key][None], size=size, mode="bilinear",
                                                            antialias=True)[0].clamp(0, 1)
        return item


def baseline_methods() -> dict[str, Method]:
    out = {}
    for key in BASELINE_KEYS:
        b = get_baseline(key)
        out[b.label] = (lambda fn: (lambda x: fn(x, None)))(b.fn)
    return out


def score(methods: dict[str, Method], subsets: Sequence[Subset], *, limit: int | None = None) -> list[Row]:
    """Every method on every item of every subset; ``limit`` caps the items per subset."""
    rows: list[Row] = []
    t0 = time.monotonic()
    for sub in subsets:
        n = len(sub) if limit is None else min(limit, len(sub))
        for k in range(n):
            item = sub[k]
            x, y = item["input"], item["target"]
            lt = srgb_to_lab(y[:3])
            for label, fn in methods.items():
                out = (fn(x, y) if getattr(fn, "needs_target", False) else fn(x)).clamp(0, 1)
                lo = srgb_to_lab(out[:3])
                rows.append(Row(label, sub.name, item["name"], *image_metrics(out, y), *_ratios(lo, lt),
                                *_highlight(x, lo, lt), *_sky(lo, lt), float(psnr(best_curve(out, y), y)),
                                detail_ratio(out, y)))
        logger.info("%s: %d images (%.0f s)", sub.name, n, time.monotonic() - t0)
    return rows


# a subset's PSNR is the mean of its images' PSNRs, each capped here: an image returned exactly (a gated model
# leaves a good photo as it is) has an infinite PSNR, which would make its subset's mean infinite too
PSNR_CAP = 50.0


class Summary(NamedTuple):
    """One (method, subset): means over its images (PSNRs capped at :data:`PSNR_CAP`); the highlight figures over
    the images with clipped highlights, the sky figures over those with a light-blue sky in the target."""
    psnr: float
    ssim: float
    chroma: float
    contrast: float
    n: int
    hl_chroma_ratio: float
    hl_de: float
    n_clipped: int
    sky_b: float
    sky_target_b: float
    n_sky: int
    curve_psnr: float = math.nan
    detail: float = math.nan


def summarise(rows: Sequence[Row]) -> dict[tuple[str, str], Summary]:
    """(method, subset) -> its :class:`Summary`."""
    out = {}
    for key in dict.fromkeys((r.method, r.subset) for r in rows):
        rs = [r for r in rows if (r.method, r.subset) == key]
        hl = [r for r in rs if not math.isnan(r.hl_chroma)]
        sky = [r for r in rs if not math.isnan(r.sky_b)]
        hl_ratio = sum(r.hl_chroma for r in hl) / max(sum(r.hl_target_chroma for r in hl), 1e-6) if hl else math.nan
        out[key] = Summary(mean_or_nan([min(r.psnr, PSNR_CAP) for r in rs]),
                           *(mean_or_nan([getattr(r, f) for r in rs]) for f in ("ssim", "chroma", "contrast")),
                           len(rs), hl_ratio, mean_or_nan([r.hl_de for r in hl]), len(hl),
                           mean_or_nan([r.sky_b for r in sky]), mean_or_nan([r.sky_target_b for r in sky]), len(sky),
                           mean_or_nan([min(r.curve_psnr, PSNR_CAP) for r in rs]), mean_or_nan([r.detail for r in rs]))
    return out


def markdown(rows: Sequence[Row], command: str = "") -> str:
    summary = summarise(rows)
    methods = list(dict.fromkeys(r.method for r in rows))
    subsets = list(dict.fromkeys(r.subset for r in rows))
    parts = ["# Held-out validation of the default recipe", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    parts += ["PSNR (dB) / SSIM on RGB, 8-bit rounded, full resolution, each image's PSNR capped at "
              f"{PSNR_CAP:g} dB in the means (an image returned exactly scores infinity); chroma = mean CIELAB "
              "C*ab and contrast = std of L*, each as a ratio to the target's (1.00 = the target's look); highlight "
              f"chroma ratio and dE*ab over the input's clipped pixels (brightest channel >= {CLIPPED}), on the "
              f"images with at least {MIN_CLIPPED:.0%} of them clipped; sky b* = mean CIELAB b* of the output "
              f"(target) over the target's light-blue pixels (L* > {SKY[0]:g}, b* < {SKY[1]:g}), on the images "
              f"with at least {MIN_SKY:.0%} of them: blue skies have b* well below 0.  Curve PSNR = the PSNR "
              "after the best per-channel global tone curve from output to target (training.metrics.best_curve): "
              "what the output would score with its global tone right; its distance to PSNR is the global part of "
              "the error, and a model whose curve PSNR is not above the input's adds nothing local.  Detail = mean "
              "|Laplacian| of the output as a ratio to the target's: below 1 smoothed, above 1 sharpened or noisy.",
              ""]
    for sub in subsets:
        first = summary[(methods[0], sub)]
        parts += [f"## {sub} ({first.n} images, {first.n_clipped} with clipped highlights, {first.n_sky} with "
                  "a blue sky)", "",
                  "| method | PSNR | SSIM | chroma ratio | contrast ratio | highlight chroma ratio | highlight dE "
                  "| sky b* (target) | curve PSNR | detail ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for m in methods:
            r = summary[(m, sub)]
            parts.append(f"| {m} | {r.psnr:.2f} | {r.ssim:.4f} | {r.chroma:.3f} | {r.contrast:.3f} | "
                         f"{r.hl_chroma_ratio:.3f} | {r.hl_de:.2f} | {r.sky_b:+.1f} ({r.sky_target_b:+.1f}) | "
                         f"{r.curve_psnr:.2f} | {r.detail:.3f} |")
        parts.append("")
    return "\n".join(parts)


def write(rows: Sequence[Row], out_dir: str | Path, command: str = "") -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "subset", "name", "psnr", "ssim", "chroma_ratio", "contrast_ratio", "highlight_chroma",
                "highlight_target_chroma", "highlight_de", "sky_b", "sky_target_b", "curve_psnr", "detail_ratio"])
    w.writerows([r.method, r.subset, r.name, f"{r.psnr:.4f}", f"{r.ssim:.6f}", f"{r.chroma:.5f}",
                 f"{r.contrast:.5f}", f"{r.hl_chroma:.4f}", f"{r.hl_target_chroma:.4f}", f"{r.hl_de:.4f}",
                 f"{r.sky_b:.3f}", f"{r.sky_target_b:.3f}", f"{r.curve_psnr:.4f}", f"{r.detail:.4f}"]
                for r in rows)
    summary = io.StringIO()
    w = csv.writer(summary)
    w.writerow(["method", "subset", "images", "psnr", "ssim", "chroma_ratio", "contrast_ratio",
                "images_clipped", "highlight_chroma_ratio", "highlight_de", "images_sky", "sky_b", "sky_target_b",
                "curve_psnr", "detail_ratio"])
    w.writerows([m, s, r.n, f"{r.psnr:.4f}", f"{r.ssim:.6f}", f"{r.chroma:.5f}", f"{r.contrast:.5f}", r.n_clipped,
                 f"{r.hl_chroma_ratio:.5f}", f"{r.hl_de:.4f}", r.n_sky, f"{r.sky_b:.3f}", f"{r.sky_target_b:.3f}",
                 f"{r.curve_psnr:.4f}", f"{r.detail:.4f}"]
                for (m, s), r in summarise(rows).items())
    files = {"heldout_results.csv": buf.getvalue(), "heldout_summary.csv": summary.getvalue(),
             "heldout_summary.md": markdown(rows, command)}
    return [atomic_write_text(out / name, text) for name, text in files.items()]


# ---------------------------------------------------------------------------------- contact sheet
def _grid(rows: Sequence[tuple[str, list[Tensor]]], columns: Sequence[str], path: str | Path, cell: int) -> Path:
    """A labelled PNG grid: one row of images per ``(title, images)``, a column name over each column."""
    from PIL import Image, ImageDraw

    label_h = 22
    tiles: list[list[Image.Image]] = []
    for _, imgs in rows:
        h, w = imgs[0].shape[-2:]
        size = (cell, max(1, round(h * cell / w)))
        tiles.append([Image.fromarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")).resize(
            size, Image.LANCZOS) for t in imgs])
    heights = [row[0].size[1] for row in tiles]
    sheet = Image.new("RGB", (cell * len(columns), label_h + sum(heights) + label_h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((c * cell + 4, 4), name, fill="black")
    top = label_h
    for (title, _), row, h in zip(rows, tiles, heights, strict=True):
        draw.text((4, top + 4), title, fill="black")
        top += label_h
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * cell, top))
        top += h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: sheet.save(f, format="PNG", optimize=True))


def contact_sheet(methods: dict[str, Method], subsets: Sequence[Subset], path: str | Path, *,
                  per_subset: int = 3, cell: int = 256) -> Path:
    """A PNG grid: one row per held-out item (``per_subset`` spread over each subset), columns
    input | each method | target, every cell ``cell`` pixels wide, labelled on top."""
    rows = []
    for sub in subsets:
        picks = [round(j * (len(sub) - 1) / max(1, per_subset - 1)) for j in range(per_subset)] if len(sub) else []
        for k in dict.fromkeys(picks):
            item = sub[k]
            x = item["input"]
            rows.append((f"{sub.name}: {item['name']}", [x, *(fn(x) for fn in methods.values()), item["target"]]))
    return _grid(rows, ["input", *methods, "target"], path, cell)


def strip(methods: dict[str, Method], images: Sequence[Path], path: str | Path, *, cell: int = 320) -> Path:
    """Before / after: one row per image file, columns input | each method (the README's sample strips)."""
    rows = []
    for file in images:
        x = load_image(file)
        rows.append((Path(file).name, [x, *(fn(x) for fn in methods.values())]))
    return _grid(rows, ["input", *methods], path, cell)


# --------------------------------------------------------------------------------------------- CLI
# ---------------------------------------------------------------------------------- the priors
@dataclass(frozen=True)
class PriorRow:
    method: str
    subset: str
    n: int
    lp: float  # L_p (eq. 8): mean |enhanced - teacher|
    lp_mean: float  # L_p of always answering the subset's mean teacher prior
    r2: float  # 1 - SSE / SS of the teacher priors about their mean: 0 = no better than that constant
    spread: float  # per-dimension std over the images, enhanced / teacher: near 0 = a collapsed prior path


def prior_report(models: dict[str, torch.nn.Module], subsets: Sequence[Subset], *,
                 limit: int | None = None) -> list[PriorRow]:
    """How well each model's FFEDM recovers the priors its teacher (PEM-S1) gives the *targets*: the
    enhanced priors of every input (seed 0, as ``correct`` runs) against the teacher's priors of its target."""
    rows = []
    for label, model in models.items():
        for sub in subsets:
            enh, tea = [], []
            with torch.inference_mode():
                for k in range(min(len(sub), limit or len(sub))):
                    item = sub[k]
                    x, y = (item[key][None].to(model.device, model.dtype) for key in ("input", "target"))
                    tea.append(model.extract_priors(y, source="reference").stacked().flatten(1).double().cpu())
                    pri = model.enhance_priors(model.extract_priors(x, source="input"), seed=0)
                    enh.append(pri.stacked().flatten(1).double().cpu())
            e, t = torch.cat(enh), torch.cat(tea)
            centred = t - t.mean(0)
            rows.append(PriorRow(label, sub.name, len(t), float((e - t).abs().mean()), float(centred.abs().mean()),
                                 1.0 - float(((e - t) ** 2).sum() / (centred ** 2).sum().clamp_min(1e-12)),
                                 float(e.std(0, correction=0).mean() / t.std(0, correction=0).mean().clamp_min(1e-12))))
    return rows


def prior_markdown(rows: Sequence[PriorRow]) -> str:
    lines = ["| weights | subset | n | L_p | L_p of the mean prior | R^2 | spread ratio |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.subset} | {r.n} | {r.lp:.4f} | {r.lp_mean:.4f} | {r.r2:.3f} | {r.spread:.2f} |"
              for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- brightness per EV
SWEEP_EVS = tuple(k / 2 for k in range(-8, 7))  # -4 ... +3 EV in 0.5 EV steps, 0 included


@dataclass(frozen=True)
class EvRow:
    method: str
    ev: float
    n: int
    input_l: float  # mean CIELAB L* of the inputs
    dl: float  # mean over the photos of (mean L* of the output - mean L* of the target): + = too bright
    abs_dl: float  # mean |.| of the same: how far each photo's brightness lands from its target's
    psnr: float
    ssim: float
    dmean: float  # mean over the photos of (mean RGB of the output - mean RGB of the target), in 1/255


def ev_sweep(methods: dict[str, Method], files: Sequence[Path], evs: Sequence[float] = SWEEP_EVS, *,
             max_side: int = 384, seed: int = 0) -> list[EvRow]:
    """Each photo rendered at every EV (the held-out photos' camera model, noise seeded per photo and EV),
    downscaled to ``max_side``, corrected by every method: how the output's brightness depends on the EV.
    A model that corrects exposure fully gives dL* near 0 at every EV; one that hedges toward the middle of its
    training EVs gives outputs too dark at the darkest EVs and too bright at the mildest."""
    data = SyntheticExposureDataset(list(files), evs=list(evs), seed=seed)
    items: Dataset | Downscaled = Subset("ev", data, list(range(len(data))))
    if max_side:
        items = Downscaled(items, max_side)
    acc: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for k in range(len(items)):
        item = items[k]
        x, y = item["input"], item["target"]
        lx, ly = float(srgb_to_lab(x)[0].mean()), float(srgb_to_lab(y)[0].mean())
        for label, fn in methods.items():
            out = fn(x).clamp(0, 1)
            acc.setdefault((label, item["ev"]), []).append(
                (lx, float(srgb_to_lab(out)[0].mean()) - ly, *image_metrics(out, y)[:2],
                 255.0 * float(out.mean() - y.mean())))
    rows = []
    for (label, ev), vals in acc.items():
        v = torch.tensor(vals, dtype=torch.float64)
        rows.append(EvRow(label, ev, len(vals), float(v[:, 0].mean()), float(v[:, 1].mean()),
                          float(v[:, 1].abs().mean()), float(v[:, 2].mean()), float(v[:, 3].mean()),
                          float(v[:, 4].mean())))
    return sorted(rows, key=lambda r: (r.ev, list(methods).index(r.method)))


def ev_markdown(rows: Sequence[EvRow]) -> str:
    labels = list(dict.fromkeys(r.method for r in rows))
    by = {(r.method, r.ev): r for r in rows}
    evs = sorted({r.ev for r in rows})
    lines = ["| EV | input L* | " + " | ".join(f"{m}: PSNR / SSIM / d mean (1/255) / dL*" for m in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for ev in evs:
        cells = [f"{by[m, ev].psnr:.2f} / {by[m, ev].ssim:.3f} / {by[m, ev].dmean:+.1f} / {by[m, ev].dl:+.1f}"
                 for m in labels]
        lines.append(f"| {ev:+g} | {by[labels[0], ev].input_l:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the v4 targets
AUTO_GAMMA = get_baseline("auto-gamma").label
BEAT_DB, BEAT_SSIM = 1.0, 0.02  # beat auto-gamma by this much on every subset and every |EV| >= 1
KEEP_DB, KEEP_SSIM = 30.0, 0.97  # at |EV| <= 0.5 and on the identity subsets
MAX_DMEAN = 4.0  # mean brightness error, 1/255, at every EV
MAX_LOSS_DB = 0.5  # against the rule frame on held-out stacks, no more than this below the reference weights
LOOK_TOL = 0.10  # chroma and contrast ratios within 10 % of 1


@dataclass(frozen=True)
class Check:
    what: str
    value: str
    ok: bool


def target_checks(rows: Sequence[Row], ev_rows: Sequence[EvRow], model: str, reference: str | None = None
                  ) -> list[Check]:
    """The default-weights targets (weights/README.md) checked for ``model``: beat auto-gamma on every held-out
    subset and every EV bin from 1 EV outward, keep well-exposed photos (|EV| <= 0.5, identity subsets), mean
    brightness at every EV, no loss against ``reference`` on the rule frames, and the look ratios."""
    out = []
    summary = summarise(rows)
    for sub in dict.fromkeys(r.subset for r in rows):
        m, g = summary[(model, sub)], summary.get((AUTO_GAMMA, sub))
        if sub.endswith("identity"):
            out.append(Check(f"{sub}: >= {KEEP_DB:g} dB / {KEEP_SSIM:g}", f"{m.psnr:.2f} / {m.ssim:.4f}",
                             m.psnr >= KEEP_DB and m.ssim >= KEEP_SSIM))
            continue
        if g is not None:
            out.append(Check(f"{sub}: beat auto-gamma by {BEAT_DB:g} dB / {BEAT_SSIM:g}",
                             f"{m.psnr - g.psnr:+.2f} dB / {m.ssim - g.ssim:+.4f}",
                             m.psnr - g.psnr >= BEAT_DB and m.ssim - g.ssim >= BEAT_SSIM))
        if reference and sub.startswith("stacks/") and (reference, sub) in summary:
            r = summary[(reference, sub)]
            out.append(Check(f"{sub}: no more than {MAX_LOSS_DB:g} dB below {reference}", f"{m.psnr - r.psnr:+.2f} dB",
                             m.psnr - r.psnr >= -MAX_LOSS_DB))
        out.append(Check(f"{sub}: chroma / contrast ratio within {LOOK_TOL:.0%}", f"{m.chroma:.3f} / {m.contrast:.3f}",
                         abs(m.chroma - 1) <= LOOK_TOL and abs(m.contrast - 1) <= LOOK_TOL))
    by = {(r.method, r.ev): r for r in ev_rows}
    for ev in sorted({r.ev for r in ev_rows if r.method == model}):
        m, g = by[(model, ev)], by.get((AUTO_GAMMA, ev))
        if abs(ev) >= 1 and g is not None:
            out.append(Check(f"EV {ev:+g}: beat auto-gamma by {BEAT_DB:g} dB / {BEAT_SSIM:g}",
                             f"{m.psnr - g.psnr:+.2f} dB / {m.ssim - g.ssim:+.4f}",
                             m.psnr - g.psnr >= BEAT_DB and m.ssim - g.ssim >= BEAT_SSIM))
        if abs(ev) <= 0.5:
            out.append(Check(f"EV {ev:+g}: >= {KEEP_DB:g} dB / {KEEP_SSIM:g}", f"{m.psnr:.2f} / {m.ssim:.4f}",
                             m.psnr >= KEEP_DB and m.ssim >= KEEP_SSIM))
        out.append(Check(f"EV {ev:+g}: mean brightness within {MAX_DMEAN:g}/255", f"{m.dmean:+.1f}",
                         abs(m.dmean) <= MAX_DMEAN))
    return out


def ev_csv(rows: Sequence[EvRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f.name for f in dataclasses.fields(EvRow)])
    w.writerows([[getattr(r, f.name) for f in dataclasses.fields(EvRow)] for r in rows])
    return buf.getvalue()


def read_results(folder: str | Path) -> tuple[list[Row], list[EvRow]]:
    """The per-image rows (``heldout_results.csv``) and the EV-sweep rows (``ev_sweep.csv``) of an earlier
    ``--targets`` run, to compare new weights with old ones without scoring the old ones again."""
    folder = Path(folder)
    with open(folder / "heldout_results.csv", newline="") as f:
        rows = [Row(r["method"], r["subset"], r["name"], *(float(r[k]) for k in (
            "psnr", "ssim", "chroma_ratio", "contrast_ratio", "highlight_chroma", "highlight_target_chroma",
            "highlight_de", "sky_b", "sky_target_b")),
                    float(r.get("curve_psnr") or "nan"),  # results written before these columns: NaN
                    float(r.get("detail_ratio") or "nan"))
                for r in csv.DictReader(f)]
    with open(folder / "ev_sweep.csv", newline="") as f:
        rest = [k.name for k in dataclasses.fields(EvRow)[3:]]
        ev = [EvRow(r["method"], float(r["ev"]), int(r["n"]), *(float(r[k]) for k in rest)) for r in csv.DictReader(f)]
    return rows, ev


def heldout_photos(data_root: str | Path, *, config: str | Path = DEFAULT_CONFIG) -> list[Path]:
    """The held-out photo files (the config's ``data.synthetic_exclude`` sets under ``photos/``): the EV sweep's."""
    data = read_toml(config)["data"]
    return [p for sub in data.get("synthetic_exclude", ()) for p in find_images(Path(data_root) / "photos" / sub)]


def report_targets(rows: Sequence[Row], ev_rows: Sequence[EvRow], model: str, reference: str | None, *,
                   out: str | Path, command: str, compare: Sequence[str | Path] = (), sweep_side: int) -> list[Path]:
    """The ``--targets`` report of a scored run: its own sweep (``ev_sweep.csv``); the models of earlier runs
    (``compare`` folders, each model once, from the first folder that has it) joined into the tables
    (``heldout_compared.md``); the sweep table and ``model``'s target checks (``ev_sweep.md``, ``targets.md``).
    Prints the tables; returns the files written."""
    out = Path(out)
    paths = [atomic_write_text(out / "ev_sweep.csv", ev_csv(ev_rows))]
    rows, ev_rows = list(rows), list(ev_rows)
    for folder in compare:
        old_rows, old_ev = read_results(folder)
        have, have_ev = {r.method for r in rows}, {r.method for r in ev_rows}
        rows += [r for r in old_rows if r.method not in have]
        ev_rows += [r for r in old_ev if r.method not in have_ev]
    if compare:
        paths.append(atomic_write_text(out / "heldout_compared.md", markdown(rows, command)))
        print(markdown(rows, command))
    checks = checks_markdown(target_checks(rows, ev_rows, model, reference), model)
    sweep_md = f"EV sweep, held-out photos at {sweep_side} px (`{command}`)\n\n{ev_markdown(ev_rows)}\n"
    paths += [atomic_write_text(out / "ev_sweep.md", sweep_md), atomic_write_text(out / "targets.md", checks + "\n")]
    print(sweep_md, checks, sep="\n")
    return paths


def checks_markdown(checks: Sequence[Check], model: str) -> str:
    met = sum(c.ok for c in checks)
    lines = [f"Targets for {model}: {met} of {len(checks)} met", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {c.what} | {c.value} | {'yes' if c.ok else '**no**'} |" for c in checks]
    return "\n".join(lines)


def _weights(specs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = Path(spec).stem, spec
        out.append((label, path))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="the folder holding stacks/ and photos/ (e.g. ../shared/data)")
    p.add_argument("--weights", action="append", default=[], metavar="LABEL=FILE",
                   help="a RestoreX checkpoint to score (repeatable); LABEL names its rows")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the config whose held-out lists to use")
    p.add_argument("--fused-cache", metavar="DIR",
                   help="where the stacks' fused targets are cached (default: $RESTOREX_FUSED_CACHE, else "
                        "stacks_fused/ beside the data's stacks/; made on first use)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile", type=int, help="tile size for the models (memory bound)")
    p.add_argument("--limit", type=int, help="score at most N images per subset")
    p.add_argument("--out", default="out/heldout", help="folder for the CSV and Markdown summaries")
    p.add_argument("--sheet", help="also write a contact sheet PNG of 12 held-out items here")
    p.add_argument("--strip", nargs=2, metavar=("IMAGE", "PNG"), action="append", default=[],
                   help="also write a before/after strip of IMAGE (input | each model) to PNG (repeatable)")
    p.add_argument("--no-score", action="store_true", help="only the contact sheet")
    p.add_argument("--oracle", action="store_true",
                   help="stage-1 exports: restore with the GT's own priors (DiffIR's stage-1 protocol)")
    p.add_argument("--max-side", type=int, default=0, help="downscale every pair to this long side (0: full size)")
    p.add_argument("--priors", action="store_true",
                   help="instead of scoring images: how close each model's enhanced priors come to the teacher's "
                        "priors of the targets (L_p, R^2, spread), per subset")
    p.add_argument("--ev-sweep", action="store_true",
                   help="instead of scoring the subsets: every held-out photo at every EV of --evs (use with "
                        "--max-side, e.g. 384), the outputs' brightness error in CIELAB L* per EV")
    p.add_argument("--evs", default=",".join(f"{e:g}" for e in SWEEP_EVS),
                   help="the EVs of --ev-sweep, e.g. --evs=-3,-2,1,2 (with '=': they start with a minus)")
    p.add_argument("--targets", metavar="LABEL[,REFERENCE]",
                   help="score the subsets AND run the EV sweep (at --sweep-side), then check the default-weights "
                        "targets for the weights LABEL, against REFERENCE on the rule frames (e.g. v4,v3); "
                        "writes targets.md and ev_sweep.md next to the summaries")
    p.add_argument("--sweep-side", type=int, default=384, help="long side of the EV sweep's photos with --targets")
    p.add_argument("--compare", action="append", default=[], metavar="DIR",
                   help="with --targets: add the models of an earlier --targets run's --out folder (e.g. the "
                        "reference weights) to the tables and the check, without scoring them again")


def run(args: argparse.Namespace, argv: Sequence[str]) -> list[Row]:
    from restorex_core import load_checkpoint

    def sweep(max_side: int) -> list[EvRow]:
        files = heldout_photos(args.data, config=args.config)
        files = files[: args.limit] if args.limit else files
        models = {label: model_method(load_checkpoint(path, device=args.device), tile=args.tile)
                  for label, path in _weights(args.weights)}
        evs = [float(e) for e in args.evs.split(",") if e.strip()]
        return ev_sweep({**models, **baseline_methods()}, files, evs, max_side=max_side)

    if args.ev_sweep and not args.targets:
        print(ev_markdown(sweep(args.max_side)))
        return []
    subsets = heldout_subsets(args.data, config=args.config, fused_cache=args.fused_cache)
    if args.max_side:
        subsets = [Downscaled(s, args.max_side) for s in subsets]
    if args.priors:
        if not args.weights:
            raise SystemExit("--priors needs at least one --weights")
        report = prior_report({label: load_checkpoint(path, device=args.device)
                               for label, path in _weights(args.weights)}, subsets, limit=args.limit)
        print(prior_markdown(report))
        return []
    methods: dict[str, Method] = {}
    for label, path in _weights(args.weights):
        model = load_checkpoint(path, device=args.device)
        methods[label] = oracle_method(model) if args.oracle else model_method(model, tile=args.tile)
    rows: list[Row] = []
    if not args.no_score:
        rows = score({**methods, **baseline_methods()}, subsets, limit=args.limit)
        prog = "training.evaluate" if any(a.startswith("--suite") for a in argv) else "training.heldout"
        command = f"python -m {prog} " + " ".join(argv)
        paths = write(rows, args.out, command)
        print(markdown(rows, command))
        if args.targets:
            model, _, reference = args.targets.partition(",")
            paths += report_targets(rows, sweep(args.sweep_side), model, reference or None, out=args.out,
                                    command=command, compare=args.compare, sweep_side=args.sweep_side)
        print("wrote " + ", ".join(str(p) for p in paths))
    if (args.sheet or args.strip) and not methods:
        raise SystemExit("--sheet and --strip need at least one --weights")
    if args.sheet:
        print(f"wrote {contact_sheet(methods, [s for s in subsets if s.name in SHEET_SUBSETS], args.sheet)}")
    for image, png in args.strip:
        print(f"wrote {strip(methods, [Path(image)], png)}")
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(p.parse_args(argv), argv)


if __name__ == "__main__":
    main()
