"""Tiling fidelity: how far tiled output is from untiled, and what the guide pass's size buys.

    python benchmarks/bench_tiling.py                                   # 2K and 4K, v1 weights, tile 512
    python benchmarks/bench_tiling.py --sizes 7680x4320 --guides 1024 2048 4096 --reference-guide 4096
    python benchmarks/bench_tiling.py --dtype bf16 --sizes 3840x2160 7680x4320 --max-untiled 0 \
        --guides 512 1024 2048 --reference-guide 3072 --tile 1024

A tiled run takes the attention maps of every MDTA block from one pass over the whole image downscaled to
``guide`` pixels on its long side (RestoreX.restore). This compares, on a real photo (docs/sample, resized to
each size), tiled runs with several guide sizes against the reference: the untiled run where it fits in
``--max-untiled`` megapixels, else a tiled run with ``--reference-guide``. Differences are in 8-bit levels
(1/255): mean, 99.9th percentile and max over all pixels and channels; "guide MB" is the guide pass's own peak
(restorex_core.memory), what a larger guide costs. The priors are computed once per size and shared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def photo(height: int, width: int) -> torch.Tensor:
    from PIL import Image

    im = Image.open(ROOT / "docs" / "sample" / "house_under.png").convert("RGB")
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.size[1], im.size[0], 3)
    x = x.permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def main() -> None:
    from restorex_core import load_checkpoint
    from restorex_core.memory import restormer_bytes_per_pixel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=ROOT / "weights" / "restorex-default.safetensors")
    ap.add_argument("--sizes", nargs="+", default=["2048x1536", "3840x2160"], help="WxH")
    ap.add_argument("--guides", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--max-untiled", type=float, default=4.0, help="largest untiled reference, megapixels")
    ap.add_argument("--reference-guide", type=int, default=4096, help="guide of the reference above that")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    model = load_checkpoint(args.weights, dtype=torch.float32 if args.dtype == "fp32" else torch.bfloat16).eval()
    per_px = restormer_bytes_per_pixel(model.config.restormer, model.dtype)
    print(f"Tiled vs reference, {args.weights.name}, tile {args.tile}, overlap 32, CPU {args.dtype}; "
          "differences in 1/255\n")
    print("| size | reference | guide | guide MB | mean | p99.9 | max | tiled s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        x = photo(h, w)
        with torch.inference_mode():
            priors = model.enhance_priors(model.extract_priors(x), seed=0)
            untiled = h * w / 1e6 <= args.max_untiled
            ref = (model.restore(x, priors) if untiled
                   else model.restore(x, priors, tile=args.tile, guide_size=args.reference_guide))
            name = "untiled" if untiled else f"guide {args.reference_guide}"
            for guide in args.guides:
                if not untiled and guide >= args.reference_guide:
                    continue
                t0 = time.perf_counter()
                out = model.restore(x, priors, tile=args.tile, guide_size=guide)
                seconds = time.perf_counter() - t0
                d = ((out - ref).abs() * 255).flatten()
                g = min(guide, max(h, w))
                mb = per_px * g * g * min(h, w) / max(h, w) / 2**20
                p999 = d.kthvalue(max(1, int(d.numel() * 0.999))).values
                print(f"| {w}x{h} | {name} | {guide} | {mb:.0f} | {d.mean():.3f} | {p999:.2f} | {d.max():.2f} "
                      f"| {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
