"""How long a stop takes: Ctrl-C in the command line, and the interrupt hook ComfyUI's Cancel goes through.

    python benchmarks/bench_interrupt.py                       # 4000x3000 photo, bundled weights, --dtype auto
    python benchmarks/bench_interrupt.py --size 2400x1800 --delays 2 6 10

Command line: runs ``python -m restorex_cli correct PHOTO --out DIR`` (no flags: tile auto), sends SIGINT
``delay`` seconds after the model has loaded (the first progress line), and measures the time from the signal
to the process's exit, its exit code (130) and what it left in DIR (nothing).

In process (the ComfyUI path: the nodes pass ``comfy.model_management.throw_exception_if_processing_interrupted``
as ``interrupt``): ``RestoreX.correct(tile="auto")`` with an ``interrupt`` hook that raises once a flag is set;
another thread sets the flag ``delay`` seconds in; the latency is from setting the flag to ``correct`` raising.
The longest latency is the longest stretch between two checks: one transformer block of the largest pass.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Stopped(Exception):
    pass


def photo(height: int, width: int) -> torch.Tensor:
    from PIL import Image

    im = Image.open(ROOT / "docs" / "sample" / "house_under.png").convert("RGB")
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.size[1], im.size[0], 3)
    x = x.permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def cli_latency(src: Path, delay: float) -> tuple[float, int, list[str]]:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.Popen([sys.executable, "-m", "restorex_cli", "correct", str(src), "--out", out],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True, bufsize=1)
        seen = ""
        while "%" not in seen:  # the progress bar's first line: the model has loaded, the image is being read
            ch = proc.stderr.read(1)
            if not ch:
                raise SystemExit(f"the command line exited before its progress bar: {seen[-400:]}")
            seen += ch
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
        time.sleep(delay)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
        return time.perf_counter() - t0, code, sorted(os.listdir(out))


def hook_latency(model, x: torch.Tensor, delay: float) -> float:
    flag = threading.Event()
    stamp: list[float] = []

    def interrupt() -> None:
        if flag.is_set():
            raise Stopped

    def fire() -> None:
        time.sleep(delay)
        stamp.append(time.perf_counter())
        flag.set()

    threading.Thread(target=fire, daemon=True).start()
    try:
        with torch.inference_mode():
            model.correct(x, seed=0, tile="auto", interrupt=interrupt)
    except Stopped:
        return time.perf_counter() - stamp[0]
    raise SystemExit(f"correct finished before the {delay} s interrupt: use a larger --size or a shorter delay")


def main() -> None:
    from restorex_core import load_checkpoint
    from restorex_core.precision import auto_dtype
    from restorex_io import write_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=ROOT / "weights" / "restorex-default.safetensors")
    ap.add_argument("--size", default="4000x3000", help="WxH of the photo")
    ap.add_argument("--delays", type=float, nargs="+", default=[1.0, 5.0, 12.0, 20.0],
                    help="seconds after the start of the work")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    x = photo(h, w)
    dtype = auto_dtype("cpu")
    print(f"Stop latency, {w}x{h}, {args.weights.name}, CPU {str(dtype).removeprefix('torch.')}, "
          f"{torch.get_num_threads()} threads\n")
    print("| path | delay s | latency s | exit code | files left |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_image(Path(tmp) / "photo.jpg", x)
        for delay in args.delays:
            latency, code, left = cli_latency(src, delay)
            print(f"| CLI Ctrl-C | {delay:g} | {latency:.2f} | {code} | {len(left)} |", flush=True)
    model = load_checkpoint(args.weights, dtype=dtype).eval()
    for delay in args.delays:
        print(f"| interrupt hook | {delay:g} | {hook_latency(model, x, delay):.2f} | | |", flush=True)


if __name__ == "__main__":
    main()
