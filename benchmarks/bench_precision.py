"""Precision and batches (issue 23): speed per dtype on a CPU, batch == alone, and 16-bit tones.

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py [--weights FILE] [--size 128] [--batch-size 320]

Prints three tables for benchmarks/RESULTS.md, "Precision and batches": the seconds of one correction per
dtype; the largest difference, in 8-bit levels, between three photos corrected as one batch and each alone;
the distinct 16-bit values of a smooth 16-bit gradient corrected in fp32 and bf16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from restorex_core import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def gradient(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64),
                            indexing="ij")
    img = torch.stack([0.05 + 0.6 * xx, 0.1 + 0.5 * yy, 0.2 + 0.3 * xx * yy])[None]
    return ((img * 65535).round() / 65535).float()


def photos(size: int) -> torch.Tensor:
    """The two sample photos and a darkened mirror of the first, squashed to size x size."""
    import numpy as np
    from PIL import Image

    def load(path: Path) -> torch.Tensor:
        im = Image.open(path).convert("RGB").resize((size, size))
        return torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255

    a, b = (load(ROOT / "docs" / "sample" / n) for n in ("house_under.png", "lighthouse_over.png"))
    return torch.cat([a, b, a.flip(-1) * 0.5])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "restorex-default.safetensors")
    p.add_argument("--size", type=int, default=128, help="side of the timed image")
    p.add_argument("--batch-size", type=int, default=320, help="side of the batch == alone photos")
    args = p.parse_args()
    models = {name: load_checkpoint(args.weights, dtype=dtype)
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))}
    x = gradient(args.size, args.size)
    print(f"| dtype | seconds, {args.size}x{args.size}, 1 thread |\n|---|---|")
    with torch.inference_mode():
        for name, model in models.items():
            model.correct(x[..., :32, :32], seed=0)  # warm-up
            start = time.perf_counter()
            model.correct(x, seed=0)
            print(f"| {name} | {time.perf_counter() - start:.2f} |")
    batch = photos(args.batch_size)
    print(f"\n| dtype | batch vs alone, max /255, 3 photos {args.batch_size} px |\n|---|---|")
    with torch.inference_mode():
        for name in ("fp32", "bf16"):
            model = models[name]
            together = model.correct(batch, seed=0)
            alone = torch.cat([model.correct(batch[i : i + 1], seed=0) for i in range(3)])
            diff = (together - alone).abs().amax(dim=(1, 2, 3)) * 255
            print(f"| {name} | {', '.join(f'{d:.2f}' for d in diff.tolist())} |")
    g = gradient(192, 256)
    print(f"\n| | distinct 16-bit values, 192x256 gradient |\n|---|---|\n| input | {tones(g)} |")
    with torch.inference_mode():
        for name in ("fp32", "bf16"):
            print(f"| {name} output | {tones(models[name].correct(g, seed=0))} |")


def tones(x: torch.Tensor) -> int:
    return torch.unique((x * 65535).round()).numel()


if __name__ == "__main__":
    main()
