"""Command line: ``python -m restorex_cli correct|info`` (installed as ``restorex``).

    python -m restorex_cli correct photo.jpg shots/ --out corrected/ [--weights FILE] [--tile auto|N|none]
                                [--max-memory 4G]
    python -m restorex_cli correct --sequence frames/ --out corrected/ [--window 9]   # one clip, no flicker
    python -m restorex_cli info weights/restorex-default.safetensors

Exit codes: 0 ok, 1 some images failed (each one reported, the others still written), 2 usage error,
missing weights or a bad checkpoint (all found before any image is processed), 130 interrupted by Ctrl-C
(SIGINT), 143 terminated (SIGTERM). An interrupted or terminated run leaves no half-written file behind.

The arguments are parsed and checked (files, folders, numbers, the checkpoint's header) before torch is
imported, which takes seconds: ``--help`` and a mistyped path answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import restorex_io
from restorex_core.allocator import give_back_freed_memory, reuse_freed_memory
from restorex_core.errors import MissingWeightsError, RestoreXError
from restorex_core.files import safetensors_metadata
from restorex_io import ACCEPTED, ImageFileError, OutputExistsError, is_supported

if TYPE_CHECKING:
    import torch

    from restorex_core.model import RestoreX

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "restorex-default.safetensors"
WEIGHTS_HELP = ("weights/README.md says what the bundled checkpoint is, how to get it back and how to train "
                "your own with `python -m training.train`")
DTYPES = ("auto", "bf16", "fp16", "fp32")  # torch dtypes: restorex_core.precision.resolve_dtype
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0..2**64 - 1 (and negatives, aliases of large seeds)


class UsageError(RestoreXError):
    """A command line that cannot be carried out as given (exit code 2)."""


STOPPED = (130, 143)  # exit codes of a run stopped by Ctrl-C (SIGINT) and by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every cleanup (temporary files) runs."""


# -- arguments -------------------------------------------------------------------------------------------
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
    correct.add_argument("--tile", type=tile_arg, default="auto", metavar="N|auto|none",
                         help="run the restorer on N x N tiles to bound memory; auto (the default): the largest tile "
                         "that fits in --max-memory (untiled when the whole image fits); none: one pass")
    correct.add_argument("--max-memory", type=memory_arg, metavar="SIZE", help="memory a --tile auto run plans for, "
                         "e.g. 4G or 1500M (default: half the free memory of the device, at most 3G on a CPU)")
    correct.add_argument("--overlap", type=int, default=32, metavar="N", help="tile overlap in pixels (default 32)")
    correct.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    correct.add_argument("--dtype", choices=DTYPES, default="auto",
                         help="compute precision; auto (default): bf16 on a CPU with native bf16 (AVX512-BF16, AMX), "
                              "2x faster, within 2/255 of fp32; fp32 elsewhere")
    correct.add_argument("--seed", type=int, default=0, help=f"seed of the prior diffusion, 0..{SEED_MAX} (default 0)")
    correct.add_argument("--steps", type=int, metavar="N", help="reverse diffusion steps, 1..T of the checkpoint "
                         "(default: all T)")
    correct.add_argument("--full-strength", action="store_true",
                         help="correct every image in full, also those the weights' correction gate would leave "
                              "(or partly leave) as they are because they look well exposed")
    correct.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG quality of outputs (default 95)")
    correct.add_argument("--recursive", action="store_true", help="also take images in sub-folders (the folder "
                         "structure is kept under --out)")
    correct.add_argument("--sequence", action="store_true", help="treat the inputs, sorted by name, as the frames "
                         "of one clip: corrected without flicker (one size for every frame; outputs keep the names)")
    correct.add_argument("--window", type=int, default=9, metavar="N", help="with --sequence: frames (odd) the "
                         "priors are smoothed over; 1 = each frame on its own (default 9)")
    correct.add_argument("--hold", type=int, default=0, metavar="N", help="with --sequence: frames (odd) the "
                         "brightness at the same scene points is held over; 0 = the whole shot, between cuts and "
                         "changes of light (default); 1 = not held")
    correct.add_argument("--max-pixels", type=int, metavar="N", help="read images of up to N pixels (default: "
                         "Pillow's guard against decompression bombs, 178,956,970); only for files you trust")
    existing = correct.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace files that already exist in --out")
    existing.add_argument("--skip-existing", action="store_true", help="leave files that exist in --out alone")
    correct.set_defaults(run=run_correct, check=check_correct, tune_malloc=True)

    info = commands.add_parser("info", help="describe a RestoreX checkpoint",
                               description="Print a checkpoint's config, parameter counts, metadata and sha256.")
    info.add_argument("file", type=Path, metavar="FILE")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(run=run_info, check=None, tune_malloc=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): return the code instead of exiting
        return e.code if isinstance(e.code, int) else 2
    if not logging.getLogger().handlers:
        level = logging.DEBUG if args.verbose else logging.WARNING
        logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    # A CPU pass reuses freed memory instead of faulting fresh pages in (restorex_core/allocator.py: 2x faster at
    # 1024x1024). Opt-in, for this process only: the library and the ComfyUI nodes never touch malloc's settings.
    tuning = reuse_freed_memory() if args.tune_malloc else nullcontext()
    try:
        with _sigterm_raises(), tuning:
            if args.check is not None:
                args.check(args)  # everything that can be checked before torch and the model load
            code = args.run(args)
            sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
            return code
    except PermissionError as e:  # a file or folder the checks could not foresee (e.g. made unreadable meanwhile)
        logger.debug("details", exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}permission denied ({e.strerror}); check the permissions", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`restorex info FILE | head -3`): stop quietly, as Unix tools do
        _silence_stdout()
        return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1
    except (RestoreXError, ImageFileError) as e:
        logger.debug("details", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail on the closed pipe again
    (the recipe of Python's signal documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured): nothing left to flush
        pass


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the command runs (only the main thread can set handlers)."""
    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding program): leave its signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_correct(args: argparse.Namespace) -> None:
    """Every check of ``correct``'s arguments, before torch is imported and the model is loaded.

    Sets ``args.jobs`` (source, output) pairs and ``args.weights_path``.
    """
    if not 1 <= args.quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {args.quality}")
    if not 0 <= args.seed <= SEED_MAX:
        raise UsageError(f"--seed must be in 0..{SEED_MAX} (what torch.Generator accepts), got {args.seed}")
    if args.overlap < 0:
        raise UsageError(f"--overlap must be 0 or more pixels, got {args.overlap}")
    if args.sequence and args.skip_existing:
        raise UsageError("--sequence corrects a clip as a whole: use --overwrite, or a new --out folder, not "
                         "--skip-existing")
    if args.window < 1 or args.window % 2 == 0:
        raise UsageError(f"--window must be an odd number of frames (1, 3, 5, ...), got {args.window}")
    if args.hold < 0 or (args.hold % 2 == 0 and args.hold != 0):
        raise UsageError(f"--hold must be 0 (the whole shot) or an odd number of frames (1, 3, 5, ...), "
                         f"got {args.hold}")
    if args.max_pixels is not None:
        if args.max_pixels < 1:
            raise UsageError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
        restorex_io.set_pixel_limit(args.max_pixels)
    args.jobs = plan_outputs(collect_inputs(args.inputs, recursive=args.recursive), args.out,
                             overwrite=args.overwrite, skip_existing=args.skip_existing)
    check_readable([src for src, _ in args.jobs])
    if args.sequence:
        args.jobs = sorted(args.jobs, key=lambda job: str(job[1]))
        check_frame_sizes([src for src, _ in args.jobs])
    check_output_folder(args.out)
    args.weights_path = resolve_weights(args.weights)
    timesteps = _header_timesteps(args.weights_path)
    if args.steps is not None and not 1 <= args.steps <= (timesteps or args.steps):
        top = f"1..{timesteps}: the checkpoint's FFEDM has T = {timesteps}" if timesteps else "1 or more"
        raise UsageError(f"--steps must be in {top}, got {args.steps}")
    if args.tile is not None:  # the library's own rule and error (imports torch: after the cheaper checks)
        from restorex_core.tiling import check_tiling

        check_tiling(args.tile, args.overlap, names=("--tile", "--overlap"))


def check_readable(files: Sequence[Path]) -> None:
    """Refuse inputs this user may not read, all named at once, before the model loads."""
    denied = [f for f in files if not os.access(f, os.R_OK)]
    if denied:
        listed = ", ".join(map(str, denied[:5])) + (f" and {len(denied) - 5} more" if len(denied) > 5 else "")
        raise UsageError(f"permission denied: this user cannot read {len(denied)} input file(s): {listed}; give "
                         "read permission (e.g. chmod u+r FILE) or leave them out")


def check_frame_sizes(files: Sequence[Path]) -> None:
    """Refuse a clip whose frames differ in size or channels, from the file headers (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    first: tuple[Path, tuple[int, int], int] | None = None
    for path in files:
        try:
            with Image.open(path) as im:
                size, bands = im.size, len(im.getbands())
        except Image.DecompressionBombError as e:
            raise UsageError(restorex_io.too_large_message(path, e)) from e
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"{path}: not a readable image ({e}); use {ACCEPTED}") from e
        if first is None:
            first = (path, size, bands)
        elif (size, bands) != first[1:]:
            raise UsageError(f"--sequence needs frames of one size and channel count: {path.name} is "
                             f"{size[0]}x{size[1]} with {bands} channel(s) but {first[0].name} is {first[1][0]}x"
                             f"{first[1][1]} with {first[2]}; resize the frames, or correct them without --sequence")


def tile_arg(text: str) -> int | str | None:
    """``--tile``: "auto", "none" (one pass) or a size in pixels."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in pixels, auto or none, got {text!r}") from None


def memory_arg(text: str) -> int:
    """``--max-memory``: bytes from 4G, 4GB, 1500M, 1.5GiB or a plain number of bytes."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = number[-1:] if number[-1:] in units else ""
    try:
        value = float(number[: len(number) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G or 1500M, got {text!r}") from None
    if value < 64 << 20:
        raise argparse.ArgumentTypeError(f"{text} is less than the 64M the smallest tiles need")
    return int(value)


def _header_timesteps(weights: Path) -> int | None:
    """T of the checkpoint's FFEDM from its header (no tensor read); None where the header does not say."""
    meta = safetensors_metadata(weights, what="weights file")
    try:
        return int(json.loads(meta["config"])["ffedm"]["timesteps"])
    except (KeyError, TypeError, ValueError):  # not a RestoreX header: load_checkpoint says what the file is
        return None


# -- correct ---------------------------------------------------------------------------------------------
def collect_inputs(inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False) -> list[tuple[Path, Path]]:
    """(source file, output path relative to --out) for every input; folders give their supported images."""
    jobs: dict[Path, tuple[Path, Path]] = {}
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            try:
                found = sorted(f for f in (path.rglob("*") if recursive else path.iterdir())
                               if f.is_file() and is_supported(f) and not f.name.startswith("."))
            except PermissionError as e:
                raise UsageError(f"{e.filename or path}: permission denied: this user cannot list the folder; give "
                                 "it read and execute permission (chmod u+rx) or leave it out") from e
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


def check_output_folder(out: Path) -> None:
    """``--out`` must be a folder, or a path where one can be made, that this user can write in."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; give a folder for the corrected images")
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {out} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: no permission to write in {existing}; choose another folder or change "
                         "its permissions")


def resolve_weights(weights: Path | None) -> Path:
    """The checkpoint to load: ``--weights``, or the one bundled in the repository's weights/ folder."""
    path = (weights.expanduser() if weights is not None else DEFAULT_WEIGHTS)
    what = f"weights file {path} (given with --weights)" if weights is not None else f"default weights {path}"
    if path.is_dir():
        raise MissingWeightsError(f"{what} is a folder; give the checkpoint file (.safetensors) inside it")
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise UsageError(f"{what}: permission denied, this user cannot read it; give read permission "
                             "(e.g. chmod u+r FILE)")
        return path
    if weights is not None:
        raise MissingWeightsError(f"{what} not found: check the path. Without --weights RestoreX uses the checkpoint "
                                  f"bundled with it, {DEFAULT_WEIGHTS}; {WEIGHTS_HELP}")
    raise MissingWeightsError(f"{what} not found: this copy of RestoreX lacks the checkpoint bundled with it. Get "
                              "it back with `git checkout -- weights/restorex-default.safetensors` in the repository "
                              f"(or a fresh download of it), or pass a checkpoint with --weights FILE; {WEIGHTS_HELP}")


def correct_file(model: RestoreX, src: Path, dst: Path, args: argparse.Namespace,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Read, correct and write one image; an alpha channel is copied from the input unchanged, and a gray
    image (with or without alpha) comes back gray. ``progress`` is called as (done, total) per Restormer tile."""
    import torch

    loaded = restorex_io.read_image(src)
    colour, alpha = restorex_io.split_alpha(loaded.tensor)
    with torch.inference_mode():
        out = model.correct(colour, seed=args.seed, steps=args.steps, tile=args.tile, overlap=args.overlap,
                            max_memory=args.max_memory, auto_strength=not args.full_strength, progress=progress)
        out = out.float().cpu()
        if alpha is not None:
            out = torch.cat([out, alpha], dim=1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_like(dst, out, loaded, args)
    del out, colour, alpha, loaded
    give_back_freed_memory()  # the next image plans its tiles with the memory this one held


def write_like(dst: Path, image: torch.Tensor, loaded: restorex_io.LoadedImage, args: argparse.Namespace) -> None:
    """Write ``image`` as its input file was stored (bit depth, colour profile, alpha association). An output
    that appeared during the run is replaced only with ``--overwrite``: with ``--skip-existing`` it is left
    and said so; otherwise writing it fails (:class:`restorex_io.OutputExistsError`)."""
    try:
        restorex_io.write_image(dst, image, bit_depth=loaded.bit_depth, quality=args.quality,
                                icc_profile=loaded.icc_profile, associated_alpha=loaded.associated_alpha,
                                overwrite=args.overwrite)
    except OutputExistsError:
        if not args.skip_existing:
            raise
        logger.warning("skipped %s: it appeared during the run (--skip-existing leaves it)", dst)


def run_correct(args: argparse.Namespace) -> int:
    """Correct ``args.jobs`` (set by :func:`check_correct`)."""
    import torch
    from tqdm import tqdm

    from restorex_core.checkpoint import load_checkpoint

    jobs = args.jobs
    if not jobs:
        print(f"nothing to do: every output already exists in {args.out}", file=sys.stderr)
        return 0
    from restorex_core.memory import check_budget
    from restorex_core.precision import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.max_memory is not None:
        check_budget(args.max_memory, device, name="--max-memory")
    model = load_checkpoint(args.weights_path, clip=args.clip, device=device, dtype=dtype)
    logger.info("loaded %s on %s (%s)", args.weights_path, device, str(dtype).removeprefix("torch."))
    if args.sequence:
        return correct_sequence_files(model, jobs, args)
    failures: list[Path] = []
    start, done = time.perf_counter(), 0
    fractional = "{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]"  # tiles move the bar
    with tqdm(total=len(jobs), unit="img", file=sys.stderr, dynamic_ncols=True, bar_format=fractional) as bar:
        try:
            for src, dst in jobs:
                bar.set_postfix_str(src.name, refresh=False)

                def tiles(part: int, parts: int, _done: int = done) -> None:  # a big photo moves the bar per tile
                    bar.n = _done + part / parts
                    bar.refresh()

                try:
                    correct_file(model, src, dst, args, progress=tiles)
                except (RestoreXError, OSError, ValueError, RuntimeError, MemoryError) as e:
                    logger.debug("failure on %s", src, exc_info=True)
                    failures.append(src)
                    hint = ""
                    if isinstance(e, torch.OutOfMemoryError):
                        hint = " (out of memory: try --max-memory with less, --tile 256, or --dtype bf16)"
                        torch.cuda.empty_cache()
                    where = "" if str(src) in str(e) else f"{src}: "  # image errors already name the file
                    bar.write(f"failed: {where}{e}{hint}", file=sys.stderr)
                done += 1
                bar.n = done
                bar.refresh()
        except KeyboardInterrupt as e:
            how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            bar.write(f"{how} after {done} of {len(jobs)} images; no partial file was written", file=sys.stderr)
            return 143 if isinstance(e, Terminated) else 130
    seconds = time.perf_counter() - start
    print(f"corrected {done - len(failures)} of {len(jobs)} images into {args.out} in {seconds:.1f} s"
          + (f"; {len(failures)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


class FileFrames:
    """The frames of a clip read from files on access, (C, H, W) without alpha; the last one read is kept with
    its file's details (bit depth, alpha, colour profile) to write its output like it."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files, self.last = list(files), None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, t: int) -> torch.Tensor:  # (C, H, W)
        loaded = restorex_io.read_image(self.files[t])
        colour, alpha = restorex_io.split_alpha(loaded.tensor)
        self.last = (t, loaded, alpha)
        return colour[0]


def correct_sequence_files(model: RestoreX, jobs: list[tuple[Path, Path]], args: argparse.Namespace) -> int:
    """``correct --sequence``: the jobs as one clip (restorex_core.sequence's two passes, frame by frame)."""
    import torch
    from tqdm import tqdm

    from restorex_core.sequence import iter_corrected

    frames = FileFrames([src for src, _ in jobs])
    start, done = time.perf_counter(), 0
    with tqdm(total=len(jobs), unit="frame", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            with torch.inference_mode():
                for t, out in iter_corrected(model, frames, window=args.window, hold=args.hold, seed=args.seed,
                                             steps=args.steps, tile=args.tile, overlap=args.overlap,
                                             auto_strength=not args.full_strength):
                    _, loaded, alpha = frames.last  # batch 1: the frame just read is frame t
                    out = out.float().cpu() if alpha is None else torch.cat([out.float().cpu(), alpha], dim=1)
                    jobs[t][1].parent.mkdir(parents=True, exist_ok=True)
                    write_like(jobs[t][1], out, loaded, args)
                    give_back_freed_memory()
                    done += 1
                    bar.update(1)
        except KeyboardInterrupt as e:
            how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            bar.write(f"{how} after {done} of {len(jobs)} frames; no partial file was written", file=sys.stderr)
            return 143 if isinstance(e, Terminated) else 130
        except ImageFileError as e:  # a frame unreadable, or its output made by another program meanwhile
            bar.write(f"failed: {e}; the clip stopped after {done} of {len(jobs)} frames, each written whole",
                      file=sys.stderr)
            return 1
    print(f"corrected a clip of {len(jobs)} frames into {args.out} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return 0


# -- info ------------------------------------------------------------------------------------------------
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
    from restorex_core.describe import describe_checkpoint

    info = describe_checkpoint(args.file)
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
