"""Measured memory cost per pixel of the Restormer, for every shipped config and dtype.

    python benchmarks/bench_memory.py                      # the bundled default and the paper config, fp32 + bf16
    python benchmarks/bench_memory.py --configs default --dtypes fp32 --sizes 256 512 --weights other.safetensors
    python benchmarks/bench_memory.py --malloc library     # glibc's own settings, as in ComfyUI's process

restorex_core.memory sizes tiles from these figures (``RESTORMER_VALUES_PER_PIXEL``, ``IMAGE_BYTES_PER_PIXEL``):
a pass over an h x w tile needs about ``bytes_per_pixel * h * w``. Each figure is a slope between two sizes,
so what does not grow with the pixels (weights, the interpreter, torch's own pools) drops out:

* **restormer B/px**: the peak resident memory (max RSS) of one untiled ``RestoreX.restore`` at two sizes, in
  its own process, as (peak(big) - peak(small)) / (pixels(big) - pixels(small));
* **per dim**: that figure / (restormer.dim x bytes per value): the number of full-resolution values per pixel
  and per channel of the first level (the widest levels dominate the peak), what ``memory.py`` holds;
* **image B/px**: the same slope for a tiled run with a fixed tile (256) and guide (256): what tiling cannot bound (the
  input, the padded copy, the fp32 blend buffers, the output).

By default each pass runs inside ``restorex_core.allocator.reuse_freed_memory``, as the command line runs it
(``--malloc cli``): freed blocks stay in malloc's heap, which raises the peak, so these are the figures tile
planning must hold to. ``--malloc library`` measures glibc's own settings, which the library and the ComfyUI
nodes keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEFAULT = ROOT / "weights" / "restorex-default.safetensors"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(config: str, dtype: str, weights: str | None):
    import torch

    sys.path.insert(0, str(ROOT))
    from restorex_core import RestoreX, RestoreXConfig, load_checkpoint

    torch.manual_seed(0)
    dt = getattr(torch, DTYPES[dtype])
    if config == "default":
        return load_checkpoint(weights or DEFAULT, dtype=dt).eval()
    if config == "paper":
        cfg = RestoreXConfig.paper()
    else:
        cfg = RestoreXConfig.tiny()
    return RestoreX(cfg).eval().to(dt)


def child(spec: dict) -> dict:
    from contextlib import nullcontext

    import torch

    model = build(spec["config"], spec["dtype"], spec.get("weights"))  # puts the repository on sys.path
    from restorex_core.allocator import reuse_freed_memory

    size, tile = spec["size"], spec["tile"]
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode(), reuse_freed_memory() if spec.get("malloc", "cli") == "cli" else nullcontext():
        priors = model.enhance_priors(model.extract_priors(x), seed=0)
        base = rss()
        model.restore(x, priors, tile=tile, guide_size=256)  # a fixed guide: only the image grows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak": max(peak - base, 0), "dim": model.config.restormer.dim,
            "itemsize": torch.empty((), dtype=model.dtype).element_size()}


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{spec}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["default", "paper"], choices=["default", "paper", "tiny"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--sizes", type=int, nargs=2, default=[384, 768], metavar=("SMALL", "BIG"))
    ap.add_argument("--weights", help="the checkpoint of 'default' (default: the bundled file)")
    ap.add_argument("--malloc", choices=["cli", "library"], default="cli",
                    help="cli: inside reuse_freed_memory, as the command line runs (default); library: glibc's own")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    small, big = args.sizes
    print(f"Restormer memory per pixel (CPU, max RSS slope between {small}x{small} and {big}x{big}; "
          f"malloc: {args.malloc})\n")
    print("| config | dtype | restormer B/px | per dim (values) | image B/px (tiled, tile 256) |")
    print("|---|---|---|---|---|")
    for config in args.configs:
        for dtype in args.dtypes:
            spec = {"config": config, "dtype": dtype, "weights": args.weights, "malloc": args.malloc}
            a, b = (run_child({**spec, "size": s, "tile": None}) for s in (small, big))
            ta, tb = (run_child({**spec, "size": s, "tile": 256}) for s in (big, 2 * big))
            per_px = (b["peak"] - a["peak"]) / (big**2 - small**2)
            image = (tb["peak"] - ta["peak"]) / (4 * big**2 - big**2)
            print(f"| {config} | {dtype} | {per_px:.0f} | {per_px / (b['dim'] * b['itemsize']):.1f} "
                  f"| {image:.0f} |", flush=True)


if __name__ == "__main__":
    main()
