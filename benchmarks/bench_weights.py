"""Two or more checkpoints side by side: the cost of one full correction per megapixel, interleaved.

    python benchmarks/bench_weights.py --weights v3=v3.safetensors --weights v5=weights/restorex-default.safetensors
    python benchmarks/bench_weights.py --weights A=a.safetensors --weights B=b.safetensors --size 1024 --repeats 5

Issue 22's budget: new default weights must cost what the old ones do, within 10 % per MP at 1024². Both
models are loaded in this one process and timed in turns (A, B, A, B, ...) on the same real photo, resized to
``--size`` squared, after one untimed warm-up each, so a machine that slows down during the run slows both
alike. Printed: parameters, the median seconds of one ``RestoreX.correct`` call, seconds per MP, and the ratio
to the first checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restorex_core import load_checkpoint  # noqa: E402
from restorex_io import read_image  # noqa: E402

SAMPLE = ROOT / "docs" / "sample" / "house_under.png"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", action="append", required=True, metavar="LABEL=FILE",
                    help="a checkpoint to time (repeatable; the first is the reference of the ratio column)")
    ap.add_argument("--image", default=str(SAMPLE), help="the photo to correct (default: the README's sample)")
    ap.add_argument("--size", type=int, default=1024, help="side of the square it is resized to (default 1024)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per checkpoint (default 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    for spec in args.weights:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--weights {spec!r}: give LABEL=FILE with an existing .safetensors file")
        models[label] = load_checkpoint(path, device=args.device)
    image = read_image(args.image).tensor[:, :3]
    image = F.interpolate(image, size=(args.size, args.size), mode="bilinear", antialias=True).clamp(0, 1)
    image = image.to(args.device)

    def once(model) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.correct(image)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for model in models.values():
        once(model)  # warm-up
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(args.repeats):
        for label, model in models.items():
            times[label].append(once(model))
    mp = args.size * args.size / 1e6
    first = statistics.median(next(iter(times.values())))
    print(f"{args.size}x{args.size}, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved calls\n")
    print("| weights | parameters | s / call | s / MP | ratio |\n|---|---:|---:|---:|---:|")
    for label, model in models.items():
        med = statistics.median(times[label])
        params = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {params:,} | {med:.2f} | {med / mp:.2f} | {med / first:.3f} |")


if __name__ == "__main__":
    main()
