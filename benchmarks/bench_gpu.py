"""GPU time and peak memory of the whole method: paper config and the default model, fp32 and bf16, eager and
torch.compile, 1024x1024, 4K and 8K (tiled by ``tile="auto"`` where the image does not fit).

    python benchmarks/bench_gpu.py                       # everything below, ~5 minutes on one recent GPU
    python benchmarks/bench_gpu.py --configs default --sizes 3840x2160 --no-compile

Targets (issue 8): paper config at 4K in bf16 under 6 GB peak and under 1.5 s; the default model at 4K under
0.2 s. Weights are random (the paper's CLIP ViT-B/32 weights are not needed for timing; the default model's
shape comes from the bundled file's header, v1, or ``--v2`` for the retrained Restormer). Each row: best of
``--repeats`` after ``--warmup`` runs (cuDNN autotuning and, with compile, the compilation itself, which is
reported separately); peak = torch.cuda.max_memory_allocated during the timed runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGETS = {("paper", "bf16", "3840x2160"): (1.5, 6 * 1024), ("default", "fp32", "3840x2160"): (0.2, None),
           ("default", "bf16", "3840x2160"): (0.2, None)}


def build(config: str, v2: bool):
    from restorex_core import RestoreX, RestoreXConfig
    from restorex_core.checkpoint import read_header

    if config == "paper":
        return RestoreX(RestoreXConfig.paper())
    cfg = RestoreXConfig.from_dict(json.loads(read_header(ROOT / "weights" / "restorex-default.safetensors")["config"]))
    if v2:
        cfg = cfg.replace(restormer={"num_blocks": (1, 2, 3, 4), "num_refinement_blocks": 1, "heads": (1, 2, 4, 8)})
    return RestoreX(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["paper", "default"], choices=["paper", "default"])
    ap.add_argument("--v2", action="store_true", help="the default model with v2's Restormer (1, 2, 3, 4) blocks")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--sizes", nargs="+", default=["1024x1024", "3840x2160", "7680x4320"])
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU path (CPU figures: bench_peer.py)")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"RestoreX on {torch.cuda.get_device_name(device)}, torch {torch.__version__}, correct(tile='auto'), "
          f"best of {args.repeats}\n")
    print("| config | dtype | mode | size | tile | s | MP/s | peak MB | compile s | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        for dtype in args.dtypes:
            for compiled in [False] if args.no_compile else [False, True]:
                model = build(config, args.v2).eval().to(device, DTYPES[dtype])
                compile_s = 0.0
                if compiled:  # the Restormer only: the prior path is a few small fixed-size calls
                    model.restormer.forward = torch.compile(model.restormer.forward, dynamic=True)
                for size in args.sizes:
                    w, h = (int(v) for v in size.split("x"))
                    x = torch.rand(1, 3, h, w, device=device)
                    tiles = []
                    with torch.inference_mode():
                        t0 = time.perf_counter()
                        for _ in range(args.warmup):
                            model.correct(x, seed=0, tile="auto", progress=lambda d, t, seen=tiles: seen.append(t))
                        torch.cuda.synchronize()
                        if compiled and not compile_s:
                            compile_s = time.perf_counter() - t0
                        torch.cuda.reset_peak_memory_stats()
                        best = float("inf")
                        for _ in range(args.repeats):
                            t0 = time.perf_counter()
                            model.correct(x, seed=0, tile="auto")
                            torch.cuda.synchronize()
                            best = min(best, time.perf_counter() - t0)
                    peak = torch.cuda.max_memory_allocated() / 2**20
                    target = TARGETS.get((config, dtype, size))
                    verdict = ""
                    if target is not None:
                        ok = best < target[0] and (target[1] is None or peak < target[1])
                        verdict = ("met" if ok else "missed") + f" (< {target[0]} s" + (
                            f", < {target[1] // 1024} GB)" if target[1] else ")")
                    tiled = "-" if not tiles or tiles[-1] == 1 else f"{tiles[-1] - 1} tiles"
                    print(f"| {config}{' v2' if config == 'default' and args.v2 else ''} | {dtype} | "
                          f"{'compile' if compiled else 'eager'} | {size} | {tiled} | {best:.3f} | "
                          f"{h * w / 1e6 / best:.1f} | {peak:.0f} | {compile_s:.0f} | {verdict} |", flush=True)
                del model
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
