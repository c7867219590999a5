"""The tone path alone, in seconds: how good a fitted head's curves are on every held-out subset, and how much of
what they miss is the image's overall brightness.

    python -m training.curve_check --data DATA curve_a.safetensors curve_b.safetensors [--mean]

For each file (a RestoreX checkpoint with a tone path: ``training.curve_probe --export``, or a trained model whose
curve is wanted without its Restormer) and each held-out subset of ``training.heldout`` at ``--side`` px (256 by
default), one row: the PSNR of the input under the head's curves, their mean-brightness error (output minus target,
/255, luma) and the PSNR after the best single gamma on that output (``training.baselines.gamma_oracle``: the
brightness fixed per image, the curve's shape kept). ``--mean`` adds a row for the files' mean curve. The whole
suite takes about 20 seconds per file on a 2-core CPU where the full sheet (``curve_probe``'s scoring,
``evaluate --targets``) takes 10 to 20 minutes, so it is the loop for comparing heads; the full sheet stays the
measure that is reported.

What it showed (docs/weights_history.md, "v9"): v8n's and v9's curves are 19 /255 too dark on the held-out
under-exposed stack frames against their rule frames and 18-19 too bright on the over-exposed ones, and the best
gamma per image would add 2.4 to 5.4 dB on every subset but the identity ones: the head's per-image brightness is
most of its error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from restorex_core.arch.tone import apply_curves

from .baselines import LUMA, gamma_oracle
from .heldout import DEFAULT_CONFIG, Downscaled, heldout_subsets
from .metrics import psnr


def luma(x: Tensor) -> float:
    """Mean luma of (3, H, W) in /255."""
    return float((x.clamp(0, 1) * torch.tensor(LUMA).view(3, 1, 1)).sum(0).mean()) * 255


def best_gamma_psnr(output: Tensor, target: Tensor) -> float:
    """The PSNR of ``output`` under its best gamma (:func:`training.baselines.gamma_oracle`, which picks it on 8-bit
    levels; gamma 1 counts too, so the answer is never below the plain PSNR)."""
    return max(float(psnr(output, target)), float(psnr(gamma_oracle(output, target), target)))


def check(models: dict[str, list[torch.nn.Module]], subsets: Sequence) -> list[tuple[str, str, float, float, float]]:
    """(label, subset, PSNR, brightness error, best-gamma PSNR) means; each label's curves are the mean of its
    models' curves (one model: its own)."""
    rows = []
    for label, group in models.items():
        guard = group[0].config.tone.guard
        for sub in subsets:
            p, d, g = [], [], []
            for k in range(len(sub)):
                item = sub[k]
                x = item["input"][None]
                with torch.inference_mode():
                    curves = torch.stack([m.tone_curves(x.to(m.device, m.dtype)).cpu() for m in group]).mean(0)
                out = apply_curves(x, curves, guard)[0]
                p.append(float(psnr(out, item["target"])))
                d.append(luma(out) - luma(item["target"]))
                g.append(best_gamma_psnr(out, item["target"]))
            n = max(1, len(p))
            rows.append((label, sub.name, sum(p) / n, sum(d) / n, sum(g) / n))
    return rows


def markdown(rows: Sequence[tuple[str, str, float, float, float]]) -> str:
    subsets = list(dict.fromkeys(r[1] for r in rows))
    lines = ["PSNR / brightness error (/255) / PSNR with the best gamma, the curves alone", "",
             "| curves | " + " | ".join(subsets) + " | mean PSNR |", "|---" * (len(subsets) + 2) + "|"]
    for label in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == label]
        cells = [f"{r[2]:.2f} / {r[3]:+.0f} / {r[4]:.2f}" for r in mine]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(r[2] for r in mine) / len(mine):.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.curve_check", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="RestoreX checkpoints with a tone path")
    p.add_argument("--data", required=True, help="the folder holding stacks/ and photos/")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the config naming the held-out data")
    p.add_argument("--fused-cache", help="the fused targets' cache (default: $RESTOREX_FUSED_CACHE, else beside)")
    p.add_argument("--side", type=int, default=256, help="the subsets' long side (default 256)")
    p.add_argument("--mean", action="store_true", help="also the files' mean curve (an ensemble of heads)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from restorex_core import load_checkpoint

    models = {}
    for f in args.files:
        m = load_checkpoint(f).eval()
        if m.tone is None:
            raise SystemExit(f"{f} has no tone path: give a file written by python -m training.curve_probe --export "
                             "(or weights trained behind one)")
        models[Path(f).stem if Path(f).stem not in models else str(f)] = [m]
    if args.mean and len(models) > 1:
        models[f"mean of {len(models)}"] = [g[0] for g in models.values()]
    cache = args.fused_cache or os.environ.get("RESTOREX_FUSED_CACHE") or None
    subsets = [Downscaled(s, args.side) for s in heldout_subsets(args.data, config=args.config, fused_cache=cache)]
    print(markdown(check(models, subsets)))


if __name__ == "__main__":
    main()
