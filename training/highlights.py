"""Give trained weights the clipped-highlight step (``restorex_core.arch.highlights``), or change or remove it:

    python -m training.highlights --weights IN.safetensors --out OUT.safetensors --level 0.92

Nothing is trained: the step has no tensors, only its config (level, mask ramp, radius), which the checkpoint's
header carries. The tensors are written back as they are stored (fp16 stays fp16), the other header fields are
kept, and the file is written atomically. ``--level 0`` removes the step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from restorex_core import RestoreX, load_checkpoint, save_checkpoint
from restorex_core.arch.highlights import HighlightConfig
from restorex_core.checkpoint import read_header

from .gate import stored_dtype


def with_highlights(weights: str | Path, out: str | Path, config: HighlightConfig) -> Path:
    """``weights`` with ``config`` as their highlight step, written to ``out``."""
    model = load_checkpoint(weights).eval()
    new = RestoreX(model.config.replace(highlights=vars(config)),
                   clip=None if model.config.clip.trainable else model.clip)
    new.load_state_dict(model.state_dict())
    keep = {k: v for k, v in read_header(weights).items() if k not in ("config", "clip_stored")}
    return save_checkpoint(new.eval(), out, metadata=keep, dtype=stored_dtype(weights))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    d = HighlightConfig()
    p = argparse.ArgumentParser(prog="python -m training.highlights", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="the weights to give the step (a RestoreX checkpoint)")
    p.add_argument("--out", required=True, help="where to write them (may not be --weights)")
    p.add_argument("--level", type=float, required=True, help="a clipped pixel's brightness after the step (0: off)")
    p.add_argument("--low", type=float, default=d.low, help=f"where the mask starts, darkest channel (default {d.low})")
    p.add_argument("--high", type=float, default=d.high, help=f"where it is full (default {d.high})")
    p.add_argument("--radius", type=float, default=d.radius,
                   help=f"the mask's erosion and blur, share of the long side (default {d.radius})")
    args = p.parse_args(argv)
    if Path(args.out).resolve() == Path(args.weights).resolve():
        p.error("--out must be a new file, not --weights itself")
    try:
        config = HighlightConfig(level=args.level, low=args.low, high=args.high, radius=args.radius)
    except ValueError as e:
        p.error(str(e))
    print(f"wrote {with_highlights(args.weights, args.out, config)}")


if __name__ == "__main__":
    main()
