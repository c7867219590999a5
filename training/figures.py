"""The paper's analyses of CLIP features under exposure errors (Figures 6 and 7), as PNG + CSV.

* **Figure 6**: 2-D embeddings of the features of CLIP blocks 1, 3, 7 and 11 for normally exposed
  images (blue) and badly exposed ones (orange).  As in the paper the two sets are unpaired: scenes
  alternate between giving their GT and giving their badly exposed inputs.  The embedding is an exact
  t-SNE written here in numpy (van der Maaten & Hinton 2008: perplexity-calibrated affinities, early
  exaggeration, momentum with adaptive gains, PCA initialisation); ``--method pca`` gives a linear
  projection instead.  Kept in numpy rather than scikit-learn's TSNE: about 30 lines, exact (the figure's
  ~700 points need no Barnes-Hut), bit-reproducible for a seed, and no scikit-learn + scipy in the
  ``train`` install for one figure; tests/test_evaluate.py checks that it separates clusters.  The CSV
  also reports the leave-one-out 1-nearest-neighbour accuracy of "normal vs bad" in the raw feature space:
  a number for what the picture shows.
* **Figure 7**: for each exposure label (MSEC's EV-1.5 .. EV+1.5, or synthetic EV shifts from
  :mod:`training.synthetic`), the mean L2 distance between the features of the input and of its GT,
  divided by the distance at the reference label (``EV+0``).  With synthetic data the EV 0 input
  differs from its GT only by sensor noise and 8-bit rounding, so the ratios are much larger than the
  paper's MSEC ones; compare blocks with each other, not with the paper's numbers.

Features are the token-0 (CLS) row of the residual stream after each block (``--token mean``
averages the patch tokens instead), from ``ClipVision.forward_intermediates``.  The plots are drawn
with Pillow, so no plotting library is needed.

Usage::

    python -m training.figures fig6 --clip openai --dataset stacks --root /work/shared/data/stacks --pairs all
    python -m training.figures fig7 --clip openai --dataset synthetic --root /work/shared/data/stacks --source stacks
    python -m training.figures fig7 --clip openai --dataset msec --root MSEC --split train --limit 2000
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from restorex_core.files import atomic_write, atomic_write_text

from .evaluate import exposure_order

logger = logging.getLogger(__name__)

PAPER_BLOCKS = (1, 3, 7, 11)
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)
PALETTE = (BLUE, ORANGE, (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


# ------------------------------------------------------------------------------------------- features
def default_blocks(depth: int) -> tuple[int, ...]:
    """The paper's blocks 1, 3, 7, 11, scaled to encoders with fewer than 11 blocks."""
    if depth >= max(PAPER_BLOCKS):
        return PAPER_BLOCKS
    return tuple(sorted({min(depth, max(1, round(b * depth / 12))) for b in PAPER_BLOCKS}))


def clip_depth(clip: torch.nn.Module) -> int:
    return len(clip.visual.transformer.resblocks)


def clip_features(clip: torch.nn.Module, image: torch.Tensor, blocks: Sequence[int], token: str = "cls"
                  ) -> list[np.ndarray]:
    """One (width,) float64 vector per block for a (3, H, W) image in [0, 1]."""
    device = next(clip.parameters()).device
    with torch.inference_mode():
        outs = clip.forward_intermediates(image[None].to(device, torch.float32), tuple(blocks))
    rows = [o[0, 0] if token == "cls" else o[0, 1:].mean(0) for o in outs]  # (B, N, W) -> (W,)
    return [r.double().cpu().numpy() for r in rows]


def _group_keys(dataset: Dataset) -> list[object]:
    """Which GT each item belongs to (items sharing a GT form one group)."""
    if hasattr(dataset, "pairs"):
        return [p.target for p in dataset.pairs]
    if hasattr(dataset, "files"):
        per = len(dataset) // len(dataset.files)
        return [dataset.files[i // per] for i in range(len(dataset))]
    return list(range(len(dataset)))


def unpaired_sets(dataset: Dataset, limit: int) -> list[tuple[int, str]]:
    """(item index, "normal" | "bad") choices: even groups give their GT, odd groups their inputs.

    The two kinds are balanced (inputs drawn at random, seed 0, when odd groups hold several).
    """
    groups: dict[object, list[int]] = {}
    for i, k in enumerate(_group_keys(dataset)):
        groups.setdefault(k, []).append(i)
    normal, bad = [], []
    for g, idx in enumerate(groups.values()):
        if g % 2 == 0:
            normal.append((idx[0], "normal"))
        else:
            bad += [(i, "bad") for i in idx]
    rng = np.random.default_rng(0)
    bad = [bad[i] for i in sorted(rng.permutation(len(bad))[: len(normal)])] if len(bad) > len(normal) else bad
    half = max(1, min(limit // 2, len(normal), len(bad)))  # balanced: 1-NN chance level is 0.5
    return normal[:half] + bad[:half]


# --------------------------------------------------------------------------------------- embeddings
def pca(x: np.ndarray, dim: int) -> np.ndarray:
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :dim] * s[:dim]


def _affinities(d2: np.ndarray, perplexity: float) -> np.ndarray:
    """Row-wise Gaussian affinities whose entropy matches log(perplexity) (binary search on beta)."""
    n = d2.shape[0]
    p = np.zeros((n, n))
    target = np.log(perplexity)
    for i in range(n):
        d = np.delete(d2[i], i)
        d = d - d.min()
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(64):
            w = np.exp(-d * beta)
            s = w.sum()
            h = np.log(s) + beta * (d * w).sum() / s  # entropy of the row
            if abs(h - target) < 1e-5:
                break
            if h > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, np.arange(n) != i] = w / s
    return p


def tsne(x: np.ndarray, *, perplexity: float = 30.0, iters: int = 750, seed: int = 0) -> np.ndarray:
    """Exact 2-D t-SNE of (N, D) features (N up to a few thousand); deterministic for a seed."""
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    x = pca(x.astype(np.float64), min(50, n - 1, x.shape[1]))
    x = x / (np.abs(x).max() + 1e-12)
    d2 = np.square(x[:, None] - x[None]).sum(-1)
    p = _affinities(d2, min(perplexity, (n - 1) / 3.0))
    p = np.maximum((p + p.T) / (2.0 * n), 1e-12)
    y = pca(x, 2)
    y = y / (y[:, 0].std() + 1e-12) * 1e-4 + np.random.default_rng(seed).normal(0, 1e-6, y.shape)  # break ties
    lr, gains, velocity = max(n / 12.0 / 4.0, 50.0), np.ones_like(y), np.zeros_like(y)
    for it in range(iters):
        exaggeration, momentum = (12.0, 0.5) if it < 250 else (1.0, 0.8)
        num = 1.0 / (1.0 + np.square(y[:, None] - y[None]).sum(-1))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4.0 * (pq.sum(1)[:, None] * y - pq @ y)
        speed_up = velocity * grad < 0  # the step keeps going downhill: grow its gain
        gains = np.maximum(np.where(speed_up, gains + 0.2, gains * 0.8), 0.01)
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y


def nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of ``labels`` in feature space."""
    d2 = np.square(x[:, None] - x[None]).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return float((labels[d2.argmin(1)] == labels).mean())


# ----------------------------------------------------------------------------------------- drawing
def _save_png(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


def _write_csv(rows: list[list[object]], path: Path) -> Path:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def scatter_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], legend: Sequence[str], size: int = 320
                   ) -> Image.Image:
    """Side-by-side scatter panels; ``labels`` index ``legend`` and the palette."""
    font = ImageFont.load_default()
    pad, head = 12, 28
    img = Image.new("RGB", (len(panels) * (size + pad) + pad, size + head + 2 * pad + 16), "white")
    draw = ImageDraw.Draw(img)
    for k, (title, pts, labels) in enumerate(panels):
        x0, y0 = pad + k * (size + pad), head
        draw.rectangle((x0, y0, x0 + size, y0 + size), outline=(160, 160, 160))
        draw.text((x0 + 4, 8), title, fill="black", font=font)
        lo, hi = pts.min(0), pts.max(0)
        uv = (pts - lo) / np.where(hi > lo, hi - lo, 1.0) * (size - 16) + 8
        for (u, v), lab in zip(uv, labels, strict=True):
            c = PALETTE[int(lab) % len(PALETTE)]
            draw.ellipse((x0 + u - 2, y0 + size - v - 2, x0 + u + 2, y0 + size - v + 2), fill=c)
    for j, name in enumerate(legend):
        x = pad + j * 160
        draw.ellipse((x, size + head + pad + 2, x + 8, size + head + pad + 10), fill=PALETTE[j % len(PALETTE)])
        draw.text((x + 14, size + head + pad), name, fill="black", font=font)
    return img


def line_figure(x_labels: Sequence[str], series: dict[str, Sequence[float]], title: str,
                width: int = 560, height: int = 360) -> Image.Image:
    """Category x axis, one polyline per series, y ticks at min / max / 1."""
    font = ImageFont.load_default()
    left, right, top, bottom = 56, 130, 30, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), title, fill="black", font=font)
    vals = np.array([v for s in series.values() for v in s if np.isfinite(v)] + [1.0])
    lo, hi = float(vals.min()), float(vals.max())
    hi = hi if hi > lo else lo + 1.0
    pw, ph = width - left - right, height - top - bottom
    draw.rectangle((left, top, left + pw, top + ph), outline=(160, 160, 160))

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (i + 0.5) * pw / len(x_labels)
        return x, top + ph - (v - lo) / (hi - lo) * ph

    for v in sorted({lo, hi, 1.0}):
        _, y = xy(0, v)
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((4, y - 6), f"{v:.3g}", fill="black", font=font)
    for i, lab in enumerate(x_labels):
        x, _ = xy(i, lo)
        draw.text((x - 3 * len(lab), top + ph + 8), lab, fill="black", font=font)
    for k, (name, ys) in enumerate(series.items()):
        c = PALETTE[k % len(PALETTE)]
        pts = [xy(i, v) for i, v in enumerate(ys) if np.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=c, width=2)
        for x, y in pts:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=c)
        draw.text((left + pw + 12, top + 16 * k), f"- {name}", fill=c, font=font)
    return img


# ---------------------------------------------------------------------------------------- analyses
def figure6(clip: torch.nn.Module, dataset: Dataset, out_dir: str | Path, *, blocks: Sequence[int] | None = None,
            limit: int = 700, token: str = "cls", method: str = "tsne", perplexity: float = 30.0,
            seed: int = 0) -> dict[int, float]:
    """Write figure6.png and figure6.csv; returns block -> 1-NN accuracy of normal vs bad."""
    blocks = tuple(blocks or default_blocks(clip_depth(clip)))
    chosen = unpaired_sets(dataset, limit)
    labels = np.array([0 if kind == "normal" else 1 for _, kind in chosen])
    if labels.min() == labels.max():
        raise ValueError("figure 6 needs both normal and badly exposed images; the dataset gave only one kind")
    feats: list[list[np.ndarray]] = [[] for _ in blocks]
    for i, kind in chosen:
        item = dataset[i]
        for k, f in enumerate(clip_features(clip, item["target" if kind == "normal" else "input"], blocks, token)):
            feats[k].append(f)
    panels, acc = [], {}
    for b, rows in zip(blocks, feats, strict=True):
        x = np.stack(rows)
        acc[b] = nn_accuracy(x, labels)
        emb = tsne(x, perplexity=perplexity, seed=seed) if method == "tsne" else pca(x, 2)
        panels.append((f"block {b} ({method}, 1-NN acc {acc[b]:.2f})", emb, labels))
        logger.info("figure 6: block %d embedded, 1-NN accuracy normal vs bad %.3f", b, acc[b])
    out = Path(out_dir)
    _save_png(scatter_figure(panels, ["normal exposure", "under/over exposure"]), out / "figure6.png")
    _write_csv([["block", "images_normal", "images_bad", "nn_accuracy"]]
               + [[b, int((labels == 0).sum()), int((labels == 1).sum()), f"{a:.4f}"] for b, a in acc.items()],
               out / "figure6.csv")
    return acc


def figure7(clip: torch.nn.Module, dataset: Dataset, out_dir: str | Path, *, blocks: Sequence[int] | None = None,
            limit: int | None = None, token: str = "cls", reference: str = "EV+0") -> dict[str, dict[int, float]]:
    """Write figure7.png and figure7.csv; returns label -> block -> distance relative to ``reference``."""
    blocks = tuple(blocks or default_blocks(clip_depth(clip)))
    keys = _group_keys(dataset)
    gt_cache: dict[object, list[np.ndarray]] = {}
    dist: dict[str, list[list[float]]] = {}
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        item = dataset[i]
        if keys[i] not in gt_cache:
            gt_cache[keys[i]] = clip_features(clip, item["target"], blocks, token)
        f_in = clip_features(clip, item["input"], blocks, token)
        d = [float(np.linalg.norm(a - g)) for a, g in zip(f_in, gt_cache[keys[i]], strict=True)]
        dist.setdefault(item["exposure"], []).append(d)
    if reference not in dist:
        raise ValueError(f"figure 7 normalises by the {reference} inputs, but the dataset has only "
                         f"{sorted(dist)}; use MSEC or synthetic EVs that include 0")
    mean = {lab: np.mean(np.array(v), axis=0) for lab, v in dist.items()}
    if np.any(mean[reference] <= 0):
        raise ValueError(f"{reference} inputs equal their GT features; turn on noise or use real data")
    labels = sorted(mean, key=exposure_order)
    rel = {lab: {b: float(mean[lab][k] / mean[reference][k]) for k, b in enumerate(blocks)} for lab in labels}
    series = {f"block {b}": [rel[lab][b] for lab in labels] for b in blocks}
    out = Path(out_dir)
    title = f"feature distance to GT relative to {reference}"
    _save_png(line_figure(labels, series, title), out / "figure7.png")
    rows: list[list[object]] = [["exposure", "pairs", "block", "mean_distance", "relative"]]
    rows += [[lab, len(dist[lab]), b, f"{mean[lab][k]:.6g}", f"{rel[lab][b]:.4f}"]
             for lab in labels for k, b in enumerate(blocks)]
    _write_csv(rows, out / "figure7.csv")
    return rel


# --------------------------------------------------------------------------------------------- CLI
def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(v) for v in s.split(","))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.figures", description="Figures 6 and 7 of the paper.")
    p.add_argument("figure", choices=("fig6", "fig7"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--clip", help="CLIP file or tag for restorex_core.load_clip (e.g. openai)")
    src.add_argument("--weights", help="a RestoreX checkpoint: analyse its own image encoder")
    p.add_argument("--dataset", required=True, choices=("lcdp", "msec", "sice", "pairs", "stacks", "synthetic"))
    p.add_argument("--root", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--scenes")
    p.add_argument("--pairs", default="all", choices=("all", "rule"), help="stacks frames (default all)")
    p.add_argument("--source", default="folder", choices=("folder", "stacks"), help="synthetic: photo source")
    p.add_argument("--evs", type=_floats, default=(-1.5, -1.0, 0.0, 1.0, 1.5), help="synthetic EV shifts")
    p.add_argument("--blocks", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    p.add_argument("--token", default="cls", choices=("cls", "mean"))
    p.add_argument("--method", default="tsne", choices=("tsne", "pca"))
    p.add_argument("--limit", type=int, default=None, help="fig6: images (default 700); fig7: pairs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="out/figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from restorex_core import load_checkpoint, load_clip

    from .data import build_dataset

    clip = load_clip(args.clip) if args.clip else load_checkpoint(args.weights, device="cpu").clip
    clip = clip.to(args.device).eval()
    kw: dict = {}
    if args.scenes and args.dataset in ("sice", "stacks"):
        kw["scenes"] = args.scenes
    if args.dataset == "stacks":
        kw["pairs"] = args.pairs
    if args.dataset == "synthetic":
        kw.update(source=args.source, evs=args.evs)
    dataset = build_dataset(args.dataset, args.root, args.split, **kw)
    if args.figure == "fig6":
        acc = figure6(clip, dataset, args.out, blocks=args.blocks, limit=args.limit or 700, token=args.token,
                      method=args.method)
        print("1-NN accuracy normal vs bad per block:", acc)
    else:
        rel = figure7(clip, dataset, args.out, blocks=args.blocks, limit=args.limit, token=args.token)
        for lab, per in rel.items():
            print(lab, " ".join(f"block {b}: {v:.3f}" for b, v in per.items()))
    print(f"wrote {Path(args.out) / (args.figure.replace('fig', 'figure') + '.png')}")


if __name__ == "__main__":
    main()
