"""RestoreX against the fastest released peer, CoTF (Li et al., CVPR 2024; 0.31 M parameters), side by side.

    git clone https://github.com/HUST-IAL/CoTF /path/to/CoTF     # its code and weights stay there
    pip install einops                                           # CoTF's only import RestoreX does not have
    python benchmarks/bench_peer.py --peer /path/to/CoTF                  # 1024x1024 and 4K, bundled, fp32 and bf16
    python benchmarks/bench_peer.py --peer /path/to/CoTF --sizes 1024 --weights v1.safetensors weights/*.safetensors

Both networks see the same random image; their runs alternate in one process (peer, then each RestoreX model,
repeated), so a busy machine slows them alike and the ratio stays fair; each time is the best of
``--repeats``. CoTF runs from the given checkout: its ``CoNet`` is built from ``archs/co_lut_arch.py`` with
its LCDP weights when ``experiments/lcdp_net.pth`` is there (random weights otherwise: the cost is the same).
Modules that file imports but CoNet never calls (BasicSR's registry and ops, kornia, matplotlib) are stood in
by empty modules here; nothing of CoTF is copied into this repository.

RestoreX runs ``correct`` as the command line does: priors, FFEDM and the Restormer with ``tile="auto"``
(untiled when the image fits in half the available memory, else the largest tile that does), in each of
``--dtypes`` (the command line's ``--dtype auto`` is bf16 on a CPU with native bf16, fp32 elsewhere), with
malloc tuned as the command line tunes it (``restorex_core.allocator.reuse_freed_memory``, entered for each
RestoreX call only, so CoTF runs with glibc's settings as before). ``--malloc library`` times RestoreX as the
library and the ComfyUI nodes run it, with glibc's own settings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT / "weights" / "restorex-default.safetensors"


def load_cotf(checkout: Path) -> torch.nn.Module:
    """CoTF's CoNet from a checkout, in eval mode."""
    arch = checkout / "archs" / "co_lut_arch.py"
    if not arch.is_file():
        raise SystemExit(f"{arch} not found: --peer must be a checkout of github.com/HUST-IAL/CoTF")
    registry = types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))
    stand_ins = {  # imported by co_lut_arch.py / utils.py, never called by CoNet
        "basicsr": {}, "basicsr.utils": {}, "basicsr.utils.registry": {"ARCH_REGISTRY": registry},
        "kornia": {}, "matplotlib": {}, "matplotlib.pyplot": {}, "archs.arch_util": {"LayerNorm2d": None},
    }
    for name, attrs in stand_ins.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
    package = types.ModuleType("archs")
    package.__path__ = [str(arch.parent)]  # `from .utils import ...` resolves inside the checkout
    sys.modules["archs"] = package
    spec = importlib.util.spec_from_file_location("archs.co_lut_arch", arch)
    module = importlib.util.module_from_spec(spec)
    sys.modules["archs.co_lut_arch"] = module
    spec.loader.exec_module(module)
    net = module.CoNet()
    weights = checkout / "experiments" / "lcdp_net.pth"
    if weights.is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("params_ema", state), strict=True)
    return net.eval()


def restorex(weights: Path, dtype: str) -> torch.nn.Module:
    from restorex_core import load_checkpoint

    return load_checkpoint(weights, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]).eval()


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(h or w), int(w)  # (height, width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", type=Path, required=True, help="a checkout of github.com/HUST-IAL/CoTF")
    ap.add_argument("--sizes", nargs="+", default=["1024", "3840x2160"], help="N (square) or WxH")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="RestoreX precisions to time (bf16: what dtype='auto' picks on a CPU with native bf16)")
    ap.add_argument("--weights", nargs="+", type=Path, default=[DEFAULT], metavar="FILE",
                    help="RestoreX checkpoints (default: the bundled default)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the raw times here")
    ap.add_argument("--malloc", choices=["cli", "library"], default="cli",
                    help="cli: RestoreX inside reuse_freed_memory, as the command line (default); library: glibc's own")
    args = ap.parse_args()
    from restorex_core.allocator import reuse_freed_memory

    tuned = reuse_freed_memory if args.malloc == "cli" else contextlib.nullcontext

    cotf = load_cotf(args.peer)
    models = {f"{w.stem.removeprefix('restorex-')} {d}": restorex(w, d) for w in args.weights for d in args.dtypes}
    params = sum(p.numel() for p in cotf.parameters())
    print(f"CoTF ({params / 1e6:.2f} M parameters, fp32) vs RestoreX {', '.join(models)} on "
          f"{torch.get_num_threads()} threads, CPU, best of {args.repeats} alternated runs\n")
    print("| size | MP | CoTF s | CoTF s/MP | " + " | ".join(f"RestoreX {n} s | {n} s/MP | {n} / CoTF"
                                                       for n in models) + " |")
    print("|---|---|---|---|" + "---|---|---|" * len(models))
    raw = {}
    for size in args.sizes:
        h, w = parse_size(size)
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        best = {name: float("inf") for name in ["CoTF", *models]}
        with torch.inference_mode():
            cotf(x[..., :64, :64])  # first-call set-up (oneDNN primitives)
            for model in models.values():
                model.correct(x[..., :64, :64], tile="auto")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                cotf(x)
                best["CoTF"] = min(best["CoTF"], time.perf_counter() - t0)
                for name, model in models.items():
                    t0 = time.perf_counter()
                    with tuned():
                        model.correct(x, seed=0, tile="auto")
                    best[name] = min(best[name], time.perf_counter() - t0)
        mp = h * w / 1e6
        raw[f"{w}x{h}"] = best
        cells = " | ".join(f"{best[n]:.2f} | {best[n] / mp:.2f} | {best[n] / best['CoTF']:.1f}x" for n in models)
        print(f"| {w}x{h} | {mp:.2f} | {best['CoTF']:.2f} | {best['CoTF'] / mp:.2f} | {cells} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
