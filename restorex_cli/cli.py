"""Command line: ``python -m restorex_cli correct|info`` (``python -m restorex_core`` is an alias).

    python -m restorex_cli correct photo.jpg shots/ --out corrected/ [--weights FILE] [--tile 512]
    python -m restorex_cli info weights/restorex-default.safetensors

Exit codes: 0 ok, 1 some images failed (each one reported, the others still written), 2 usage error,
missing weights or a bad checkpoint, 130 interrupted (Ctrl-C; no half-written file is left behind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from restorex_core.checkpoint import FORMAT, load_checkpoint, read_header
from restorex_core.config import RestoreXConfig
from restorex_core.errors import CheckpointError, MissingWeightsError, RestoreXError
from restorex_core.model import RestoreX

from .imageio import ACCEPTED, is_supported, read_image, write_image

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "restorex-default.safetensors"
TRAIN_COMMAND = (
    "RESTOREX_DATA=DATA python -m training.train --config training/configs/default_stage1.toml, then the same "
    "with default_stage2.toml, then copy runs/default_stage2/restorex-default.safetensors to weights/"
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SUBMODULES = ("clip", "pem_reference", "pem_input", "ffedm", "restormer")
_HEADER_KEYS = {"format", "format_version", "config", "clip_stored"}


class UsageError(RestoreXError):
    """A command line that cannot be carried out as given (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m restorex_cli", description="CLIP-RestoreX exposure correction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks of failures)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    correct = commands.add_parser("correct", help="correct the exposure of image files",
                                  description=f"Correct image files; reads and writes {ACCEPTED}. Output files "
                                  "keep their name, format, bit depth, alpha and colour profile.")
    correct.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    correct.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the corrected images")
    correct.add_argument("--weights", type=Path, metavar="FILE",
                         help=f"RestoreX checkpoint (default: {DEFAULT_WEIGHTS})")
    correct.add_argument("--clip", metavar="FILE", help="CLIP ViT-B/32 file, for checkpoints that do not store "
                         "their image encoder")
    correct.add_argument("--tile", type=int, metavar="N", help="run the restorer on N x N tiles to bound memory")
    correct.add_argument("--overlap", type=int, default=32, metavar="N", help="tile overlap in pixels (default 32)")
    correct.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    correct.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute precision (default fp32)")
    correct.add_argument("--seed", type=int, default=0, help="seed of the prior diffusion (default 0)")
    correct.add_argument("--steps", type=int, metavar="N", help="reverse diffusion steps (default: all)")
    correct.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG quality of outputs (default 95)")
    correct.add_argument("--recursive", action="store_true", help="also take images in sub-folders (the folder "
                         "structure is kept under --out)")
    existing = correct.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace files that already exist in --out")
    existing.add_argument("--skip-existing", action="store_true", help="leave files that exist in --out alone")
    correct.set_defaults(run=run_correct)

    info = commands.add_parser("info", help="describe a RestoreX checkpoint",
                               description="Print a checkpoint's config, parameter counts, metadata and sha256.")
    info.add_argument("file", type=Path, metavar="FILE")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(run=run_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): return the code instead of exiting
        return e.code if isinstance(e.code, int) else 2
    if args.command == "correct":
        problem = _check_numbers(args)
        if problem:
            print(f"{parser.prog} correct: error: {problem}", file=sys.stderr)
            return 2
    if not logging.getLogger().handlers:
        level = logging.DEBUG if args.verbose else logging.WARNING
        logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except RestoreXError as e:
        logger.debug("details", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _check_numbers(args: argparse.Namespace) -> str | None:
    if args.tile is not None and args.tile < 8:
        return f"--tile must be at least 8 pixels, got {args.tile}"
    if args.tile is not None and not 0 <= args.overlap < args.tile // 2:
        return f"--overlap must be in [0, tile / 2) = [0, {args.tile // 2}), got {args.overlap}"
    if args.steps is not None and args.steps < 1:
        return f"--steps must be at least 1, got {args.steps}"
    if not 1 <= args.quality <= 100:
        return f"--quality must be in 1..100, got {args.quality}"
    return None


# -- correct ---------------------------------------------------------------------------------------------
def collect_inputs(inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False) -> list[tuple[Path, Path]]:
    """(source file, output path relative to --out) for every input; folders give their supported images."""
    jobs: dict[Path, tuple[Path, Path]] = {}
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(f for f in (path.rglob("*") if recursive else path.iterdir())
                           if f.is_file() and is_supported(f) and not f.name.startswith("."))
            if not found:
                logger.warning("%s holds no %s%s", path, ACCEPTED,
                               "" if recursive else " (--recursive looks in sub-folders too)")
            for f in found:
                jobs.setdefault(f.resolve(), (f, f.relative_to(path)))
        elif path.is_file():
            jobs.setdefault(path.resolve(), (path, Path(path.name)))
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not jobs:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}; accepted: {ACCEPTED}")
    return list(jobs.values())


def plan_outputs(
    jobs: list[tuple[Path, Path]], out: Path, *, overwrite: bool, skip_existing: bool
) -> list[tuple[Path, Path]]:
    """(source, output file) pairs; refuses two sources on one output, an input as an output, and (unless
    ``overwrite`` or ``skip_existing``) outputs that already exist."""
    sources = {src.resolve() for src, _ in jobs}
    inodes = {(s.st_dev, s.st_ino) for s in (src.stat() for src, _ in jobs)}  # hard links, case-insensitive disks
    planned: dict[Path, Path] = {}
    existing: list[Path] = []
    for src, rel in jobs:
        dst = out / rel
        key = dst.resolve()
        if key in sources or (dst.exists() and (dst.stat().st_dev, dst.stat().st_ino) in inodes):
            raise UsageError(f"writing {dst} would overwrite the input {src}; choose another --out folder")
        if key in planned:
            raise UsageError(f"{planned[key]} and {src} would both be written to {dst}; correct them into "
                             "separate --out folders")
        planned[key] = src
        if dst.exists() and not overwrite:
            existing.append(dst)
    if existing and not skip_existing:
        listed = ", ".join(map(str, existing[:5])) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise UsageError(f"{len(existing)} output file(s) already exist: {listed}; pass --overwrite to replace "
                         "them or --skip-existing to leave them")
    skip = set(existing)
    if skip:
        logger.warning("skipping %d image(s) whose output already exists", len(skip))
    return [(src, out / rel) for src, rel in jobs if out / rel not in skip]


def resolve_weights(weights: Path | None) -> Path:
    path = (weights.expanduser() if weights is not None else DEFAULT_WEIGHTS)
    if path.is_file():
        return path
    what = f"weights file {path} (given with --weights)" if weights is not None else f"default weights {path}"
    raise MissingWeightsError(f"{what} not found. The default checkpoint is made by training: `{TRAIN_COMMAND}` "
                              "(see weights/README.md); or pass an existing checkpoint with --weights FILE")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def correct_file(model: RestoreX, src: Path, dst: Path, args: argparse.Namespace) -> None:
    """Read, correct and write one image; the alpha channel is copied from the input unchanged."""
    loaded = read_image(src)
    with torch.inference_mode():
        out = model.correct(loaded.tensor, seed=args.seed, steps=args.steps, tile=args.tile, overlap=args.overlap)
        out = out.float().cpu()
        if out.shape[1] == 4:
            out = torch.cat([out[:, :3], loaded.tensor[:, 3:]], dim=1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_image(dst, out, bit_depth=loaded.bit_depth, quality=args.quality, icc_profile=loaded.icc_profile)


def run_correct(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    jobs = plan_outputs(collect_inputs(args.inputs, recursive=args.recursive), args.out,
                        overwrite=args.overwrite, skip_existing=args.skip_existing)
    weights = resolve_weights(args.weights)
    if not jobs:
        print(f"nothing to do: every output already exists in {args.out}", file=sys.stderr)
        return 0
    device = pick_device(args.device)
    model = load_checkpoint(weights, clip=args.clip, device=device, dtype=DTYPES[args.dtype])
    logger.info("loaded %s on %s (%s)", weights, device, args.dtype)
    failures: list[Path] = []
    start, done = time.perf_counter(), 0
    with tqdm(total=len(jobs), unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            for src, dst in jobs:
                bar.set_postfix_str(src.name, refresh=False)
                try:
                    correct_file(model, src, dst, args)
                except (RestoreXError, OSError, ValueError, RuntimeError, MemoryError) as e:
                    logger.debug("failure on %s", src, exc_info=True)
                    failures.append(src)
                    hint = ""
                    if isinstance(e, torch.OutOfMemoryError):
                        hint = " (out of memory: try --tile 512, or --dtype bf16)"
                        torch.cuda.empty_cache()
                    where = "" if str(src) in str(e) else f"{src}: "  # image errors already name the file
                    bar.write(f"failed: {where}{e}{hint}", file=sys.stderr)
                done += 1
                bar.update(1)
        except KeyboardInterrupt:
            bar.write(f"interrupted after {done} of {len(jobs)} images; no partial file was written", file=sys.stderr)
            return 130
    seconds = time.perf_counter() - start
    print(f"corrected {done - len(failures)} of {len(jobs)} images into {args.out} in {seconds:.1f} s"
          + (f"; {len(failures)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


# -- info ------------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Everything ``info`` prints, as plain data."""
    header = read_header(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a RestoreX checkpoint (its header has no format={FORMAT}); "
                              "RestoreX checkpoints are written by restorex_core.save_checkpoint")
    try:
        config = RestoreXConfig.from_dict(json.loads(header["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has a missing or invalid config in its header ({e}); export it again") from e
    # Built on the CPU for its parameter counts (under a second for the paper's model); torch.device("meta")
    # would be free, but DDPMScheduler reads its timestep tensors with int(), which meta tensors refuse.
    model = RestoreX(config)
    with safe_open(str(path), framework="pt") as f:
        stored = {k: f.get_slice(k).get_shape() for k in f.keys()}
    counts: dict[str, dict[str, int]] = {}
    for name in SUBMODULES:
        values = [torch.Size(s).numel() for k, s in stored.items() if k.startswith(f"{name}.")]
        params = sum(p.numel() for p in getattr(model, name).parameters())
        counts[name] = {"parameters": params, "stored_values": sum(values), "stored_tensors": len(values)}
    counts["total"] = {key: sum(c[key] for c in counts.values()) for key in counts["clip"]}
    return {
        "file": str(path.resolve()),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "format": header["format"],
        "format_version": int(header.get("format_version", "0")),
        "clip_trunk": "stored" if counts["clip"]["stored_tensors"] else "external",
        "parameters": counts,
        "config": config.to_dict(),
        "metadata": {k: v for k, v in sorted(header.items()) if k not in _HEADER_KEYS},
    }


def _human_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _print_nested(data: dict[str, Any], indent: int = 2) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{' ' * indent}{key}:")
            _print_nested(value, indent + 2)
        else:
            print(f"{' ' * indent}{key}: {list(value) if isinstance(value, tuple) else value}")


def run_info(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    clip = ("stored in the file" if info["clip_trunk"] == "stored"
            else "external (frozen CLIP ViT-B/32, not stored: give it with --clip FILE)")
    print(f"RestoreX checkpoint {info['file']}")
    print(f"  format: {info['format']} version {info['format_version']}")
    print(f"  size: {_human_size(info['size_bytes'])} ({info['size_bytes']} bytes)")
    print(f"  sha256: {info['sha256']}")
    print(f"  CLIP trunk: {clip}")
    print("parameters:")
    print(f"  {'submodule':<14} {'parameters':>12} {'stored values':>14}")
    for name, c in info["parameters"].items():
        print(f"  {name:<14} {c['parameters']:>12,} {c['stored_values']:>14,}")
    print("config:")
    _print_nested(info["config"])
    print("metadata:" + ("" if info["metadata"] else " (none)"))
    _print_nested(info["metadata"])
    return 0
