"""Score RestoreX and the classical baselines on a paired dataset, in the paper's Table 1 format.

Protocol (see :mod:`training.metrics`): PSNR and SSIM on RGB at full resolution, outputs and targets
rounded to 8 bits, SSIM with an 11x11 Gaussian window (sigma 1.5) averaged over the channels, scores
averaged over the images.  The model runs ``model.correct(x, seed=0, tile=...)`` under
``torch.inference_mode()``.

Usage::

    python -m training.evaluate --weights weights/restorex-default.safetensors \\
        --dataset stacks --root /work/shared/data/stacks --scenes held_out.txt --out out/eval
    python -m training.evaluate --dataset sice --root SICE/Dataset_Part1 \\
        --scenes splits/sice_enc_test_scenes.txt --weights W --tile 512      # the paper's SICE protocol
    python -m training.evaluate --dataset msec --root MSEC --split test --weights W   # expert C

    python -m training.evaluate --suite heldout --data ../shared/data \\
        --weights v2=weights/restorex-default.safetensors --weights v1=v1.safetensors   # training.heldout

Without ``--weights`` only the baselines are scored.  The run prints two Markdown tables (overall,
and per exposure: under/over or per EV) and writes ``results.csv`` (per image), ``summary.csv`` and
``summary.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from restorex_core.files import atomic_write_text

from .baselines import BASELINES, Baseline, get_baseline
from .data import DATASETS, build_dataset
from .metrics import image_metrics, mean_or_nan

logger = logging.getLogger(__name__)

MODEL_LABEL = "RestoreX"


@dataclass(frozen=True)
class Record:
    method: str
    name: str
    exposure: str
    psnr: float
    ssim: float


def exposure_order(label: str) -> tuple:
    """Sort key: EV labels by value, then under, mixed, over, then the rest by name."""
    m = re.fullmatch(r"EV([+-]?\d+(?:\.\d+)?)", label)
    if m:
        return (0, float(m.group(1)), label)
    return (1, {"under": 0, "mixed": 1, "over": 2}.get(label, 3), label)


@dataclass
class EvalResult:
    """Per-image scores of every method, with the tables derived from them."""

    records: list[Record] = field(default_factory=list)
    dataset: str = ""

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.records))

    def exposures(self) -> list[str]:
        return sorted({r.exposure for r in self.records}, key=exposure_order)

    def _scores(self, method: str, exposure: str | None = None) -> tuple[float, float, int]:
        rs = [r for r in self.records if r.method == method and (exposure is None or r.exposure == exposure)]
        return mean_or_nan([r.psnr for r in rs]), mean_or_nan([r.ssim for r in rs]), len(rs)

    def summary(self) -> dict[str, tuple[float, float, int]]:
        """method -> (mean PSNR, mean SSIM, images)."""
        return {m: self._scores(m) for m in self.methods()}

    def by_exposure(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """method -> exposure label -> (mean PSNR, mean SSIM, images)."""
        return {m: {e: self._scores(m, e) for e in self.exposures()} for m in self.methods()}

    @property
    def psnr(self) -> float:
        """Mean PSNR of the first method scored (the model when there is one)."""
        return self._scores(self.methods()[0])[0]

    @property
    def ssim(self) -> float:
        return self._scores(self.methods()[0])[1]

    def table(self) -> str:
        """The paper's Table 1 layout: Method | <dataset> PSNR | <dataset> SSIM."""
        name = self.dataset or "dataset"
        lines = [f"| Method | {name} PSNR | {name} SSIM |", "| --- | ---: | ---: |"]
        lines += [f"| {m} | {p:.2f} | {s:.4f} |" for m, (p, s, _) in self.summary().items()]
        return "\n".join(lines)

    def exposure_table(self) -> str:
        """Per-exposure breakdown: Method | <label> (n=..) PSNR | SSIM | ... ."""
        exps = self.exposures()
        first = self.methods()[0]
        counts = {e: self._scores(first, e)[2] for e in exps}
        head = "| Method | " + " | ".join(f"{e} (n={counts[e]}) PSNR | {e} SSIM" for e in exps) + " |"
        lines = [head, "| --- |" + " ---: | ---: |" * len(exps)]
        for m, per in self.by_exposure().items():
            lines.append(f"| {m} | " + " | ".join(f"{per[e][0]:.2f} | {per[e][1]:.4f}" for e in exps) + " |")
        return "\n".join(lines)

    def markdown(self, command: str = "") -> str:
        parts = [f"# Evaluation: {self.dataset}", ""]
        if command:
            parts += [f"Command: `{command}`", ""]
        parts += ["PSNR (dB) / SSIM on RGB, 8-bit rounded, full resolution; SSIM 11x11 Gaussian (sigma 1.5), "
                  "channel mean. Methods marked (oracle) look at the ground truth.", "",
                  "## Overall", "", self.table(), "", "## Per exposure", "", self.exposure_table(), ""]
        return "\n".join(parts)

    def write(self, out_dir: str | Path, *, command: str = "") -> list[Path]:
        """Write results.csv, summary.csv and summary.md atomically under ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        per_image = io.StringIO()
        w = csv.writer(per_image)
        w.writerow(["method", "name", "exposure", "psnr", "ssim"])
        w.writerows([r.method, r.name, r.exposure, f"{r.psnr:.4f}", f"{r.ssim:.6f}"] for r in self.records)
        summary = io.StringIO()
        w = csv.writer(summary)
        w.writerow(["method", "dataset", "exposure", "images", "psnr", "ssim"])
        for m, (p, s, n) in self.summary().items():
            w.writerow([m, self.dataset, "all", n, f"{p:.4f}", f"{s:.6f}"])
        for m, per in self.by_exposure().items():
            w.writerows([m, self.dataset, e, n, f"{p:.4f}", f"{s:.6f}"] for e, (p, s, n) in per.items())
        files = {"results.csv": per_image.getvalue(), "summary.csv": summary.getvalue(),
                 "summary.md": self.markdown(command)}
        return [atomic_write_text(out / name, text) for name, text in files.items()]


def _resolve_baselines(baselines: Iterable[str | Baseline] | str | None) -> list[Baseline]:
    if baselines is None:
        return []
    if baselines == "all":
        return list(BASELINES.values())
    if isinstance(baselines, str):
        baselines = [baselines]
    return [b if isinstance(b, Baseline) else get_baseline(b) for b in baselines]


def evaluate(model: nn.Module | None, dataset: Dataset, *, baselines: Iterable[str | Baseline] | str | None = None,
             tile: int | None = None, overlap: int | None = None, seed: int = 0, limit: int | None = None,
             label: str = MODEL_LABEL, dataset_name: str = "") -> EvalResult:
    """Score ``model`` (a RestoreX, or None) and the named baselines on every item of ``dataset``.

    Args:
        model: anything with ``correct(x, seed=, tile=)``, ``device`` and ``dtype``; put in eval mode for
            the run and restored to its previous mode after (so the trainer can call this for validation).
        dataset: items ``dict(input, target, name, exposure)`` with (3, H, W) tensors in [0, 1].
        baselines: keys of :data:`training.baselines.BASELINES`, ``"all"``, or None.
        tile: tile size passed to ``model.correct`` (bounds memory on large images).
        overlap: tile overlap; None uses min(32, tile // 4).
        limit: score only the first ``limit`` items.
    Returns:
        an :class:`EvalResult`; ``result.psnr`` / ``result.ssim`` are the model's means.
    """
    methods = _resolve_baselines(baselines)
    if model is None and not methods:
        raise ValueError("nothing to evaluate: give a model or at least one baseline")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    kw = {} if tile is None else {"tile": tile, "overlap": min(32, tile // 4) if overlap is None else overlap}
    result = EvalResult(dataset=dataset_name)
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    t0 = time.monotonic()
    try:
        for i in range(n):
            item = dataset[i]
            x, y = item["input"], item["target"]
            if model is not None:
                with torch.inference_mode():
                    out = model.correct(x[None].to(model.device, model.dtype), seed=seed, **kw)
                result.records.append(Record(label, item["name"], item["exposure"],
                                             *image_metrics(out[0].float().cpu(), y)))
            for b in methods:
                result.records.append(Record(b.label, item["name"], item["exposure"],
                                             *image_metrics(b.fn(x, y), y)))
            if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
                logger.info("evaluated %d/%d images (%.1f s)", i + 1, n, time.monotonic() - t0)
    finally:
        if model is not None:
            model.train(was_training)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="RestoreX checkpoint (.safetensors); omit to score only the baselines")
    p.add_argument("--clip", help="CLIP file/tag for checkpoints with a frozen (unstored) CLIP encoder")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--split", default="test", help="train | valid | test (default test)")
    p.add_argument("--scenes", help="scene list file (SICE ids, or stack scene ids / prefixes)")
    p.add_argument("--exclude", help="stacks: scene list file to hold out")
    p.add_argument("--pairs", default="rule", choices=("rule", "all"), help="stacks: which frames (default rule)")
    p.add_argument("--expert", default="c", help="MSEC: expert whose retouch is the target (default c)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tile", type=int, help="tile size for the Restormer (memory bound)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default min(32, tile / 4))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/eval", help="folder for results.csv, summary.csv, summary.md")
    p.add_argument("--limit", type=int, help="score only the first N pairs")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also score identity, gamma oracle, auto-gamma, CLAHE and HE (default on)")
    return p.parse_args(argv)


def dataset_from_args(args: argparse.Namespace) -> tuple[Dataset, str]:
    spec = DATASETS[args.dataset]
    kw = {name: value for name in spec.options if (value := getattr(args, name, None)) is not None}
    title = spec.title + (f" ({kw['pairs']} pairs)" if "pairs" in kw else "")
    return build_dataset(args.dataset, args.root, args.split, **kw), title


def main(argv: Sequence[str] | None = None) -> EvalResult | list:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--suite"] or any(a.startswith("--suite") for a in argv):
        return _suite(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset, title = dataset_from_args(args)
    model = None
    if args.weights:
        from restorex_core import load_checkpoint

        model = load_checkpoint(args.weights, clip=args.clip, device=args.device)
    elif not args.baselines:
        raise SystemExit("nothing to evaluate: pass --weights or keep --baselines")
    result = evaluate(model, dataset, baselines="all" if args.baselines else None, tile=args.tile,
                      overlap=args.overlap, seed=args.seed, limit=args.limit, dataset_name=title)
    command = "python -m training.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    paths = result.write(args.out, command=command)
    print(result.markdown(command))
    print("wrote " + ", ".join(str(p) for p in paths))
    return result


def _suite(argv: list[str]) -> list:
    """``--suite heldout``: the default recipe's held-out look validation (:mod:`training.heldout`)."""
    from . import heldout

    p = argparse.ArgumentParser(prog="python -m training.evaluate --suite heldout",
                                description=heldout.__doc__.split("\n\n")[0])
    p.add_argument("--suite", required=True, choices=("heldout",))
    heldout.add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return heldout.run(p.parse_args(argv), argv)


if __name__ == "__main__":
    main()
