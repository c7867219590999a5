"""The project's exposure fusion against OpenCV's, on real bracketed stacks: how close, and how far from the rule frame.

    pip install opencv-python-headless          # only for this comparison; not a dependency of RestoreX
    python benchmarks/bench_fusion.py --stacks ../shared/data/stacks --scenes 24

``training.fusion.mertens_fuse`` is written from the Mertens et al. paper; OpenCV's ``createMergeMertens`` (default
weights) is the implementation issue 22 measured against expert references (25.1 dB / 0.951). For ``--scenes``
stack scenes drawn at random (``--seed``), both fuse every frame; printed per method, averaged over the scenes:
PSNR against OpenCV's fusion, PSNR against the scene's rule frame (the stacks GT rule's pick), and the luma
contrast (standard deviation of the mean of R, G, B), all on 8-bit rounded images clipped to [0, 1]. The rule frame
itself is a row too. ``--levels N`` fuses with an N-level pyramid instead of the full one, to see what depth costs.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.datasets import load_image  # noqa: E402
from training.fusion import mertens_fuse  # noqa: E402
from training.stacks import find_scenes, rule_roles  # noqa: E402


def _q(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((_q(a) - _q(b)) ** 2).mean().clamp_min(1e-12)))


def opencv_mertens(files: list[Path]) -> torch.Tensor:
    """OpenCV's fusion of the files, (3, H, W) RGB, not clipped."""
    import cv2

    out = cv2.createMergeMertens().process([cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files])
    return torch.from_numpy(np.ascontiguousarray(out[..., ::-1])).permute(2, 0, 1).float()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", required=True, help="the stacks folder (e.g. ../shared/data/stacks)")
    ap.add_argument("--scenes", type=int, default=24, help="how many scenes to draw (default 24; 0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, action="append", default=[],
                    help="also fuse with this many pyramid levels (repeatable)")
    args = ap.parse_args(argv)
    try:
        import cv2  # noqa: F401
    except ImportError:
        ap.error("this comparison needs OpenCV: pip install opencv-python-headless")
    scenes = find_scenes(Path(args.stacks))
    ids = sorted(scenes)
    if args.scenes:
        ids = random.Random(args.seed).sample(ids, min(args.scenes, len(ids)))
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for sid in ids:
        frames = [load_image(f) for f in scenes[sid]]
        order = sorted(range(len(frames)), key=lambda i: float(frames[i].mean()))
        frames = [frames[i] for i in order]
        rule = frames[rule_roles([255.0 * float(f.mean()) for f in frames]).gt]
        ref = opencv_mertens([scenes[sid][i] for i in order])
        cands = {"OpenCV createMergeMertens": ref, "training.fusion (full pyramid)": mertens_fuse(frames),
                 **{f"training.fusion, {n} levels": mertens_fuse(frames, levels=n) for n in args.levels},
                 "rule frame": rule}
        for name, img in cands.items():
            rows.setdefault(name, []).append((_psnr(img, ref), _psnr(img, rule), float(_q(img).mean(0).std())))
    print(f"| fusion ({len(ids)} scenes) | PSNR vs OpenCV | PSNR vs rule frame | luma contrast |")
    print("|---|---:|---:|---:|")
    for name, vals in rows.items():
        a = np.array(vals)
        vs_cv = "-" if name.startswith("OpenCV") else f"{a[:, 0].mean():.2f}"
        vs_rule = "-" if name == "rule frame" else f"{a[:, 1].mean():.2f}"
        print(f"| {name} | {vs_cv} | {vs_rule} | {a[:, 2].mean():.3f} |")


if __name__ == "__main__":
    main()
