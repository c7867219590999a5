"""What one training item costs the data loader, stage by stage, and what a DataLoader of N workers delivers.

    python benchmarks/bench_loader.py --config training/configs/experiments/gpu_v4.toml --data .pack/data \
        --fused-cache /tmp/fused --items 64 --workers 0 --workers 4

Builds the config's training stream (``training.stream.build_data``, the stream ``training.train`` reads; fused
targets are made first if the cache lacks them, not timed) and prints two tables:

* one process, ``--items`` stream items under cProfile: milliseconds per item spent in each stage (16-bit PNG
  decoding, its row unfiltering, other image decoding, resizing, the synthetic camera model, cropping), and the
  whole item. Stages nest (decoding is inside reading), so shares do not add up to 100 %.
* a ``torch.utils.data.DataLoader`` as ``training.train`` makes it, for each ``--workers`` count: seconds per batch
  of the config's ``data.batch_size`` over ``--batches`` batches after the first (which pays the worker start-up).

A GPU step that takes longer than the loader's seconds per batch at the run's ``data.num_workers`` is not
loader-bound (on the same CPU count). Profile overhead inflates the first table by ~10-20 %; the second is unprofiled.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402

from training.config import load_config  # noqa: E402
from training.stream import build_data, step_batches  # noqa: E402

# (label, file suffix, function name) of the stages reported; cumulative time, so nested stages overlap
STAGES = (
    ("read an image (training.datasets.load_image)", "training/datasets.py", "load_image"),
    ("  16-bit PNG decode (restorex_io.png16)", "restorex_io/png16.py", "decode_png"),
    ("    row unfiltering, Average / Paeth sweep", "restorex_io/png16.py", "_unfilter"),
    ("    row unfiltering, None / Sub / Up", "restorex_io/png16.py", "_unfilter_row_local"),
    ("resize + crop (TrainStream._crop)", "training/stream.py", "_crop"),
    ("camera model (training.stream.exposed)", "training/stream.py", "exposed"),
    ("whole item (TrainStream.__getitem__)", "training/stream.py", "__getitem__"),
)


def profile_items(stream, items: int, start: int) -> list[tuple[str, float]]:
    prof = cProfile.Profile()
    prof.enable()
    for pos in range(start, start + items):
        stream[pos]
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    rows = []
    for label, suffix, name in STAGES:
        cum = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.replace(os.sep, "/").endswith(suffix))
        rows.append((label, 1000.0 * cum / items))
    return rows


def loader_seconds(stream, batch: int, workers: int, batches: int, start: int) -> float:
    loader = DataLoader(stream, batch_sampler=step_batches(start, start + batches + 1, batch, 0, 1),
                        num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and the first batch
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return (time.perf_counter() - t0) / max(n, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a training config (its [data] section is used)")
    ap.add_argument("--data", help="the data root (sets RESTOREX_DATA), e.g. a training.pack copy")
    ap.add_argument("--fused-cache", help="the fused-target cache (sets RESTOREX_FUSED_CACHE)")
    ap.add_argument("--items", type=int, default=64, help="items profiled in one process (default 64)")
    ap.add_argument("--workers", type=int, action="append", default=[],
                    help="DataLoader workers to time (repeatable; default: the config's data.num_workers)")
    ap.add_argument("--batches", type=int, default=8, help="batches timed per worker count (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1, as training)")
    args = ap.parse_args(argv)
    if args.data:
        os.environ["RESTOREX_DATA"] = args.data
    if args.fused_cache:
        os.environ["RESTOREX_FUSED_CACHE"] = args.fused_cache
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    stream, _ = build_data(cfg.data, cfg.train.seed)
    root = os.environ.get("RESTOREX_DATA")
    print(f"stream built in {time.perf_counter() - t0:.1f} s ({args.config}, RESTOREX_DATA {root})")
    start = 10_000  # past the start of the first epoch, as a resumed run would be
    print(f"\nOne process, {args.items} items, {os.cpu_count()} CPUs here:\n")
    print("| stage | ms / item |\n|---|---:|")
    for label, ms in profile_items(stream, args.items, start):
        print(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {ms:.1f} |")
    batch = cfg.data.batch_size
    print(f"\nDataLoader, batch {batch}, {args.batches} batches after the first:\n")
    print("| workers | s / batch | items / s |\n|---:|---:|---:|")
    for w in args.workers or [cfg.data.num_workers]:
        s = loader_seconds(stream, batch, w, args.batches, start + args.items)
        print(f"| {w} | {s:.3f} | {batch / s:.0f} |")


if __name__ == "__main__":
    main()
