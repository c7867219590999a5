"""What one training step of a config costs on this machine: forward, backward and optimiser, and peak memory.

    python benchmarks/bench_train_step.py --config training/configs/experiments/gpu_v4.toml            # on a GPU
    python benchmarks/bench_train_step.py --config training/configs/experiments/gpu_v4.toml --batch 1 --crop 64
    python benchmarks/bench_train_step.py --config training/configs/experiments/default_v4d.toml --threads 1 \
        --train.init_from=weights/restorex-default.safetensors        # any --section.key=value override

Builds the config's model exactly as ``training.train`` does (``build_model``: ``train.init_from``, default
``RESTOREX_V3`` = the bundled weights; the trained submodules in train mode, the teacher in eval mode), with its
loss (``training.losses.Objective``), optimiser (Adam) and precision (``train.bf16`` on CUDA), and times
``--steps`` steps after ``--warmup`` on batches of the config's ``data.batch_size`` x ``data.crop`` (or
``--batch`` / ``--crop``). The batches are random images: a convolutional network's cost does not depend on the
pixels. Printed as a table, per step: forward (the loss), backward, optimiser + EMA, the whole step, images per
second, and the peak device memory. Beside ``benchmarks/bench_loader.py`` it says whether a run is compute-bound
(this step is slower than the loader's batch) or loader-bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.config import load_config  # noqa: E402
from training.ema import EMA  # noqa: E402
from training.losses import Objective  # noqa: E402
from training.train import build_model, set_train_mode  # noqa: E402


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a training config")
    ap.add_argument("--batch", type=int, help="batch size (default: the config's data.batch_size)")
    ap.add_argument("--crop", type=int, help="crop size (default: the config's data.crop)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="then profile 2 more steps with torch.profiler and print its N costliest operators")
    args, overrides = ap.parse_known_args(argv)  # --section.key=value, as training.train takes them
    os.environ.setdefault("RESTOREX_V3", str(ROOT / "weights" / "restorex-default.safetensors"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    batch, crop = args.batch or cfg.data.batch_size, args.crop or cfg.data.crop
    model, trained = build_model(cfg)
    model.to(device)
    set_train_mode(model, trained)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, betas=cfg.train.betas)
    ema = EMA(model, cfg.train.ema_decay)
    objective = Objective(model, stage=cfg.train.stage, weights=cfg.loss)
    bf16 = cfg.train.bf16 and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, crop, crop, generator=gen).to(device)
    gt = torch.rand(batch, 3, crop, crop, generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = _sync(device)
        with autocast:
            loss = objective(lq, gt, False)["loss"]
        t1 = _sync(device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = _sync(device)
        opt.step()
        ema.update(model, i)
        t3 = _sync(device)
        if i >= args.warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    n = len(times)
    fwd, bwd, step, total = (sum(t[k] for t in times) / n for k in range(4))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "n/a"
    print(f"{args.config}: stage {cfg.train.stage}, batch {batch} x {crop}², {'bf16' if bf16 else 'fp32'}, "
          f"{where}, mean of {n} steps after {args.warmup}\n")
    print("| forward (loss) s | backward s | optimiser + EMA s | step s | images / s | peak memory |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {fwd:.3f} | {bwd:.3f} | {step:.3f} | {total:.3f} | {batch / total:.1f} | {peak} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(2):
                with autocast:
                    loss = objective(lq, gt, False)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\ntorch.profiler, 2 steps, by {key}:\n")
        print(prof.key_averages().table(sort_by=key, row_limit=args.profile))


if __name__ == "__main__":
    main()
