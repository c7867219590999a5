"""Inference time and peak memory of RestoreX vs the bare Restormer of the same size.

    python benchmarks/bench_inference.py                       # paper config, CPU, 256/512/1024 (+4K tiled on CUDA)
    python benchmarks/bench_inference.py --device cuda --dtype bf16 --sizes 512 1024 --4k
    python benchmarks/bench_inference.py --config tiny --sizes 256 512   # a quick look

Every measurement runs in a fresh subprocess so that the CPU peak (max RSS above the process's resident size
after the model is built) belongs to that measurement alone; on CUDA the peak is torch.cuda.max_memory_allocated.
"RestoreX" is the whole method (CLIP priors + FFEDM + prior-injected Restormer); "bare" is the Restormer with the
same blocks and no injection. Weights are random: timings do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace) -> dict:
    """Runs in the child process: one model, one size, ``args.repeats`` timed runs after one warm-up."""
    import torch

    sys.path.insert(0, str(ROOT))
    from restorex_core import RestoreX, RestoreXConfig
    from restorex_core.arch.restormer import PriorRestormer
    from restorex_core.images import pad_to_multiple

    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, DTYPES[args.dtype])
    cfg = RestoreXConfig.paper() if args.config == "paper" else RestoreXConfig.tiny()
    if args.model == "restorex":
        model = RestoreX(cfg).eval().to(device, dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            return model.correct(x, seed=0, tile=args.tile)
    else:
        from dataclasses import replace

        from restorex_core.tiling import tiled_apply

        bare = PriorRestormer(replace(cfg.restormer, prior_dim=0)).eval().to(device, dtype)

        def one(x: torch.Tensor) -> torch.Tensor:
            p, (h, w) = pad_to_multiple(x.to(dtype), 8)
            return bare(p)[:, :, :h, :w]

        def run(x: torch.Tensor) -> torch.Tensor:
            return one(x) if args.tile is None else tiled_apply(one, x, tile=args.tile, overlap=32)

    h, w = args.height, args.width
    x = torch.rand(1, 3, h, w, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    base = rss_mb()
    with torch.inference_mode():
        for _ in range(getattr(args, "warmup", 1)):  # cuDNN autotune, allocator
            run(x)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run(x)
            sync()
            times.append(time.perf_counter() - t0)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return {"time_s": min(times), "peak_mb": peak_mb}


def child(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--config", choices=["paper", "tiny"], default="paper")
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--4k", dest="four_k", action="store_true", help="also 3840x2160 tiled (default on CUDA)")
    ap.add_argument("--tile", type=int, default=512, help="tile for the 4K row")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (0 for slow CPU rows)")
    ap.add_argument("--models", nargs="+", choices=["bare", "restorex"], default=["bare", "restorex"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = argparse.Namespace(**json.loads(args.child))
        print(json.dumps(measure(spec)))
        return

    rows = [(s, s, None) for s in args.sizes or []]
    if args.four_k or args.device.startswith("cuda"):
        rows.append((2160, 3840, args.tile))
    print(f"RestoreX inference, {args.config} config, {args.device} {args.dtype}, best of {args.repeats} "
          f"after {args.warmup} warm-up run(s) "
          f"(torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')})\n")
    print("| size | tile | bare Restormer s | RestoreX s | prior overhead | bare peak MB | RestoreX peak MB |")
    print("|---|---|---|---|---|---|---|")
    for h, w, tile in rows:
        res = {}
        for model in args.models:
            spec = dict(model=model, device=args.device, dtype=args.dtype, config=args.config,
                        height=h, width=w, tile=tile, repeats=args.repeats, warmup=args.warmup)
            res[model] = child(spec)
        b, r = res.get("bare", {"time_s": float("nan"), "peak_mb": float("nan")}), res.get(
            "restorex", {"time_s": float("nan"), "peak_mb": float("nan")})
        if "error" in b or "error" in r:
            print(f"| {w}x{h} | {tile or '-'} | {b.get('error', '')} | {r.get('error', '')} | | | |")
            continue
        overhead = 100 * (r["time_s"] / b["time_s"] - 1)
        print(f"| {w}x{h} | {tile or '-'} | {b['time_s']:.3f} | {r['time_s']:.3f} | {overhead:+.1f}% "
              f"| {b['peak_mb']:.0f} | {r['peak_mb']:.0f} |", flush=True)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
